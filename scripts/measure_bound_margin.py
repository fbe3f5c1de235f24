"""Experiment for issue #14: how close do the reuse certificate's curvature models come to the real
errors? For every interpolated channel of 128-channel windows: the largest actual relative ivar
error (usable pixels, against an exact build) over the variance model WITHOUT the factor
``crrxr.core.reuse.SAFETY`` (ratio x the midpoint's relative variance error), and the largest
actual flux error / sigma over the flux model without it (the stored bound / SAFETY). A ratio above
SAFETY would be a broken certificate; the margin is SAFETY / the largest ratio.

    python scripts/measure_bound_margin.py RSS.zarr code 512 1024     # MaNGA, code variant
    python scripts/measure_bound_margin.py RSS.zarr lens 256 1024     # lenslet-0.75 geometry

It wraps ``_BlockPlan._half`` in this process only (and restores it) to read the model per channel.
"""

import argparse
import os
import sys

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_reuse as bench  # noqa: E402

from crrxr.core import masks, reconstruct_block  # noqa: E402
from crrxr.core import reuse as R  # noqa: E402
from crrxr.io.rss import open_rss  # noqa: E402


def window_margin(rss, grid, cfg, start: int, width: int = 128) -> dict:
    """Largest actual / model error ratios (variance, flux) over the interpolated channels of the
    windows' 64-channel blocks."""
    model: dict[int, tuple[float, float]] = {}
    first = {"value": 0}
    orig_half = R._BlockPlan._half

    def half(self, reg, i, j, D, var_rel, cover_rel, scale, *rest):
        ok = orig_half(self, reg, i, j, D, var_rel, cover_rel, scale, *rest)
        if ok and j - i > 1:
            chans = np.array(reg[i + 1 : j])
            ratio = (chans - reg[i]) * (reg[j] - chans) / scale
            for c, r in zip(chans, ratio):
                model[first["value"] + int(c)] = (float(r * var_rel), self.bound[int(c)] / R.SAFETY)
        return ok

    n_chan = rss.sizes["wavelength"]
    worst_v = worst_f = 0.0
    n_interp = 0
    R._BlockPlan._half = half
    try:
        for b0 in range(start, start + width, R.BLOCK):
            b1 = b0 + R.BLOCK
            lo, hi = R.read_range(b0, b1, n_chan)
            arrays = bench.sample_arrays(rss.isel(wavelength=slice(lo, hi)).load())
            ex = reconstruct_block(*(a[:, : b1 - b0] for a in arrays), grid, cfg)
            model.clear()
            first["value"] = lo
            rr = R.reconstruct_block_reuse(
                *arrays, grid, cfg, first=lo, out=(b0, b1), n_chan=n_chan, tolerance=0.01
            )
            fa = rr.block
            for o in np.flatnonzero(~rr.exact):
                ok = (ex.ivar[o] > 0) & (fa.ivar[o] > 0)
                ok &= ((ex.mask[o] | fa.mask[o]) & masks.DONOTUSE) == 0
                v = np.max(np.abs(fa.ivar[o][ok] / ex.ivar[o][ok] - 1))
                f = np.max(np.abs(fa.flux[o][ok] - ex.flux[o][ok]) * np.sqrt(ex.ivar[o][ok]))
                mv, mf = model[b0 + o]
                worst_v, worst_f = max(worst_v, v / mv), max(worst_f, f / mf)
                n_interp += 1
    finally:
        R._BlockPlan._half = orig_half
    return {
        "start": start,
        "interpolated": n_interp,
        "var_actual_over_model_max": round(worst_v, 3),
        "flux_actual_over_model_max": round(worst_f, 3),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rss", help="RSS store (bench_reuse.py simulations)")
    p.add_argument("kind", choices=("code", "paper", "lens"), help="MaNGA variant, or lenslet")
    p.add_argument("starts", type=int, nargs="+", help="window starts (multiples of 64)")
    p.add_argument("--truncation", type=float, default=6.0, help="kernel cut (arcsec)")
    p.add_argument(
        "--safety", type=float, default=None, help="reuse.SAFETY in this process (plans change)"
    )
    args = p.parse_args(argv)
    if args.safety is not None:
        R.SAFETY = args.safety
    rss = open_rss(args.rss)
    if args.kind == "lens":
        grid, cfg = bench.grid_and_config(
            rss,
            pixel=0.75,
            margin=1.5,
            truncation=args.truncation,
            variant="paper",
            select_radius=0.75,
        )
    else:
        grid, cfg = bench.grid_and_config(
            rss, pixel=0.75, margin=1.0, truncation=args.truncation, variant=args.kind
        )
    for s in args.starts:
        row = {"rss": args.rss, "kind": args.kind, "safety": R.SAFETY, "cut": args.truncation}
        bench.emit({**row, **window_margin(rss, grid, cfg, s)}, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
