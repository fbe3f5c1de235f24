"""Experiment for issue #14 (not a product feature): the solved-pixel set held fixed per 64-channel
block -- the union of the block's per-channel ``select_radius`` selections -- in BOTH the exact and
the reuse solve. Reports the reuse speed-up and accuracy under that rule (``bench_reuse.run_window``)
and how far the exact cube under the block rule is from today's per-channel rule.

It swaps ``ChannelSolver._geometry`` for a wrapper that ORs the block's union into the selection,
for this process only; nothing in crrxr changes.

    python scripts/experiment_block_selection.py --dar 1.0 --blocks 512 576 3520
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_reuse as bench  # noqa: E402

from crrxr.core import CoreConfig, Grid, masks, reconstruct_block  # noqa: E402
from crrxr.core import slice as core_slice  # noqa: E402
from crrxr.io.rss import open_rss  # noqa: E402

BLOCK = 64
_FIXED: dict[str, np.ndarray | None] = {"sel": None}
_geometry = core_slice.ChannelSolver._geometry


def _block_geometry(self, x, y, dead):
    s, p, d, selected, deadpix = _geometry(self, x, y, dead)
    if _FIXED["sel"] is None:
        return s, p, d, selected, deadpix
    return s, p, d, selected | _FIXED["sel"], deadpix


def block_union(part, grid: Grid, cfg: CoreConfig) -> np.ndarray:
    """(grid.size,) bool: pixels selected at any channel of ``part``."""
    solver = core_slice.ChannelSolver(grid, cfg)
    union = np.zeros(grid.size, dtype=bool)
    for c in range(part.sizes["wavelength"]):
        x = np.ascontiguousarray(part["xpos"].values[:, c])
        y = np.ascontiguousarray(part["ypos"].values[:, c])
        union |= solver._geometry(x, y, np.zeros(x.size, dtype=bool))[3]
    return union


def run_block(rss, grid: Grid, cfg: CoreConfig, b0: int, tol: float) -> dict:
    b1 = min(b0 + BLOCK, rss.sizes["wavelength"])
    part = rss.isel(wavelength=slice(b0, min(b1 + 1, rss.sizes["wavelength"]))).load()
    _FIXED["sel"] = None
    union = block_union(part, grid, cfg)
    arrays = tuple(a[:, : b1 - b0] for a in bench.sample_arrays(part))
    with threadpool_limits(1):
        per_channel = reconstruct_block(*arrays, grid, cfg)
        _FIXED["sel"] = union
        try:
            res = bench.run_window(rss, grid, cfg, b0, b1, tol)
            per_block = reconstruct_block(*arrays, grid, cfg)
        finally:
            _FIXED["sel"] = None
    ok = (per_channel.ivar > 0) & ((per_channel.mask & masks.DONOTUSE) == 0)
    ok &= (per_block.ivar > 0) & ((per_block.mask & masks.DONOTUSE) == 0)
    sig = 1 / np.sqrt(np.where(ok, per_channel.ivar, 1.0))
    diff = np.where(ok, np.abs(per_block.flux - per_channel.flux) / sig, 0.0)
    res["rule_change_max_sigma"] = float(diff.max())
    res["rule_change_999_sigma"] = float(np.quantile(diff[ok], 0.999))
    res["rule_change_mask_diffs"] = int((per_block.mask != per_channel.mask).sum())
    res["union_pixels"] = int(union.sum())
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dar", type=float, default=1.0, help="DAR amplitude arcsec")
    p.add_argument("--blocks", type=int, nargs="+", default=[512, 576], help="block starts (x64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--json", default=None, help="append results here")
    args = p.parse_args(argv)
    core_slice.ChannelSolver._geometry = _block_geometry
    sim = bench.manga_sim_args(args.dar, args.seed)
    with tempfile.TemporaryDirectory(prefix="block_sel_") as tmp:
        path = os.path.join(tmp, "rss.zarr")
        bench.simulate(sim, path)
        rss = open_rss(path)
        grid, cfg = bench.grid_and_config(rss, pixel=0.75, margin=1.0, truncation=6.0)
        for b0 in args.blocks:
            res = run_block(rss, grid, cfg, b0, args.tolerance)
            bench.emit({"dar": args.dar, "seed": args.seed, **res}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
