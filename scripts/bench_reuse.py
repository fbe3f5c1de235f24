"""Benchmark weight reuse across wavelength (crrxr.core.reuse) against exact per-channel solves.

For each window of output channels the exact solve (``reconstruct_block``) and the reuse solve
(``reconstruct_block_reuse``) and Shepard's method run back to back, chunk by chunk (``--chunk``,
default 256 channels: the engine's default chunk of a reuse build), in ONE process with one BLAS
thread, so machine load hits both alike; times are CPU seconds (``process_time``).
Accuracy is measured against the exact solve over spaxel-channels unmasked in both (mask without
DONOTUSE, ivar > 0): |flux - exact| / sigma (max, 99.9 %, share > 0.01), max |ivar / exact - 1|,
whether each channel's actual error stays within its stored bound, and mask differences, with those
not explained by a borderline LOWCOV pixel (other bits, exact channels, or more differing pixels
than the channel's ``borderline`` count) counted apart.

    python scripts/bench_reuse.py --bundle 127 --dar 1.0 --bad-pixels 0.001 --windows 500 3500 \\
        --window 128 --truncation 6 --json out.jsonl

Prints one JSON line per (configuration, window) and a markdown summary row.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
import types

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from crrxr.core import CoreConfig, Grid, masks, reconstruct_block  # noqa: E402
from crrxr.core import reuse as _reuse  # noqa: E402
from crrxr.core.reuse import BLOCK, read_range, reconstruct_block_reuse  # noqa: E402
from crrxr.engine.chunk import sample_seeing  # noqa: E402
from crrxr.engine.reuse import CHUNK_BLOCKS  # noqa: E402
from crrxr.io.names import ATTR_FIBER_RADIUS  # noqa: E402
from crrxr.io.rss import open_rss  # noqa: E402
from crrxr.simulate import simulate_rss  # noqa: E402
from crrxr.simulate.scenes import Galaxy, PointSource  # noqa: E402


@contextlib.contextmanager
def recorded_plans():
    """The reuse plans (``crrxr.core.reuse._BlockPlan``) that run inside the ``with`` block, in
    order, to read their solves, moves and bounds: ``_BlockPlan.run`` is wrapped in this process
    only and restored on exit."""
    plans = []
    orig = _reuse._BlockPlan.run

    def run(self, lo, hi):
        plans.append(self)
        return orig(self, lo, hi)

    _reuse._BlockPlan.run = run
    try:
        yield plans
    finally:
        _reuse._BlockPlan.run = orig


def simulate(args, path: str):
    scene = [Galaxy(), PointSource(x=4.0, y=-3.0, flux=50.0)]
    return simulate_rss(
        path,
        bundle=None if args.lenslets else args.bundle,
        lenslets=args.lenslets,
        scene=scene,
        noise=args.snr,
        seeing=args.seeing,
        dar=args.dar > 0,
        dar_amplitude=max(args.dar, 1e-9),
        bad_pixel_fraction=args.bad_pixels,
        nwave=args.nwave,
        seed=args.seed,
    )


def sample_arrays(part) -> tuple[np.ndarray, ...]:
    """(xpos, ypos, fwhm, flux, ivar, mask) of a loaded RSS slice, (n_samples, n_chan) each; the
    seeing per sample and channel as the engine computes it, at the default reference (5400 A,
    exponent -0.2)."""
    arrays = (part["xpos"].values, part["ypos"].values, sample_seeing(part, 5400.0, -0.2))
    return arrays + tuple(part[v].values for v in ("flux", "ivar", "mask"))


def manga_sim_args(dar: float, seed: int) -> types.SimpleNamespace:
    """:func:`simulate` arguments of the issue's MaNGA case: 127 x 9 galaxy + star, S/N 30, DAR on."""
    return types.SimpleNamespace(
        lenslets=None,
        bundle=127,
        snr=30.0,
        seeing=1.19,
        dar=dar,
        bad_pixels=0.0,
        nwave=None,
        seed=seed,
    )


def run_fast_only(
    rss, grid: Grid, cfg: CoreConfig, start: int, stop: int, tol: float, chunk: int = BLOCK
) -> dict:
    """Reuse solve alone over ``start:stop`` in calls of ``chunk`` channels (whole-cube solve
    counts; no exact reference)."""
    n_chan = rss.sizes["wavelength"]
    cpu = 0.0
    exact = solves = moves = 0
    bounds = []
    for b0 in range(start, stop, chunk):
        b1 = min(b0 - b0 % BLOCK + chunk, stop)
        blo, bhi = read_range(b0, b1, n_chan)
        arrays = sample_arrays(rss.isel(wavelength=slice(blo, bhi)).load())
        t0 = time.process_time()
        rr = reconstruct_block_reuse(
            *arrays, grid, cfg, first=blo, out=(b0, b1), n_chan=n_chan, tolerance=tol
        )
        cpu += time.process_time() - t0
        exact += int(rr.exact.sum())
        solves += rr.n_solves
        moves += rr.n_moves
        bounds.append(rr.bound)
    return {
        "window": [start, stop],
        "cpu_fast_s": round(cpu, 2),
        "exact_channels": exact,
        "solves": solves,
        "moves": moves,
        "bound_max": float(np.concatenate(bounds).max()),
    }


def run_window(
    rss, grid: Grid, cfg: CoreConfig, start: int, stop: int, tol: float, chunk: int = BLOCK
) -> dict:
    """Exact, reuse and Shepard over ``start:stop`` back to back, in calls of ``chunk`` channels
    (a multiple of BLOCK: the engine's chunks, whose blocks share their boundary solves)."""
    n_chan = rss.sizes["wavelength"]
    lo, hi = read_range(start, stop, n_chan)
    arrays = sample_arrays(rss.isel(wavelength=slice(lo, hi)).load())
    t_exact = t_fast = t_shepard = 0.0
    shepard = dataclasses.replace(cfg, method="shepard")
    stats = {"exact_channels": 0, "solves": 0, "moves": 0}
    errs, ivrel, mask_diff, violations, bounds = [], [], 0, 0, []
    unexplained = borderline = 0
    exact_err = ratio_max = var_ratio_max = 0.0
    by_nodes: dict[int, float] = {}  # largest error / bound by interpolation degree (nodes used)
    var_by_nodes: dict[int, float] = {}  # the same for the variance
    masked_interp, masked_ratio = 0, 0.0  # channels with more samples masked than the window's best
    n_bad = (arrays[5] != 0).sum(axis=0)
    for b0 in range(start, stop, chunk):
        b1 = min(b0 - b0 % BLOCK + chunk, stop)
        sl = slice(b0 - lo, b1 - lo)
        t0 = time.process_time()
        ex = reconstruct_block(*(a[:, sl] for a in arrays), grid, cfg)
        t1 = time.process_time()
        blo, bhi = read_range(b0, b1, n_chan)
        bsl = slice(blo - lo, bhi - lo)
        rr = reconstruct_block_reuse(
            *(a[:, bsl] for a in arrays),
            grid,
            cfg,
            first=blo,
            out=(b0, b1),
            n_chan=n_chan,
            tolerance=tol,
        )
        t2 = time.process_time()
        reconstruct_block(*(a[:, sl] for a in arrays), grid, shepard)
        t3 = time.process_time()
        t_exact += t1 - t0
        t_fast += t2 - t1
        t_shepard += t3 - t2
        fa = rr.block
        # spaxel-channels usable in both (a LOWCOV bit may differ at a borderline pixel: counted below)
        ok = (ex.ivar > 0) & ((ex.mask & masks.DONOTUSE) == 0)
        ok &= (fa.ivar > 0) & ((fa.mask & masks.DONOTUSE) == 0)
        sig = np.where(ok, 1 / np.sqrt(np.where(ok, ex.ivar, 1.0)), 1.0)
        e = np.where(ok, np.abs(fa.flux - ex.flux) / sig, 0.0)
        errs.append(e[ok])
        ivrel.append(np.abs(fa.ivar[ok] / ex.ivar[ok] - 1))
        diff = fa.mask != ex.mask
        mask_diff += int(diff.sum())
        # explained: only LOWCOV/DONOTUSE bits, in interpolated channels, no more pixels than the
        # channel's borderline count (coverage within the certified margin of the threshold)
        other_bits = (fa.mask ^ ex.mask) & ~np.uint32(masks.LOWCOV | masks.DONOTUSE)
        n_diff = diff.reshape(diff.shape[0], -1).sum(axis=1)
        unexplained += int(np.sum(other_bits != 0))
        unexplained += int(np.sum(np.maximum(n_diff - rr.borderline, 0)))
        borderline += int(rr.borderline.sum())
        per_chan = e.reshape(e.shape[0], -1).max(axis=1)
        interp = ~rr.exact
        over = interp & (per_chan > rr.bound * (1 + 1e-6))
        violations += int(over.sum())
        for o in np.flatnonzero(over):
            print(
                f"over its bound: channel {b0 + o} error {per_chan[o]:.3g} bound "
                f"{rr.bound[o]:.3g} masked samples {n_bad[b0 - lo + o]}",
                file=sys.stderr,
            )
        if interp.any():
            ratio_max = max(ratio_max, float(np.max(per_chan[interp] / rr.bound[interp])))
            for k in np.unique(rr.nodes[interp]):
                sel = interp & (rr.nodes == k)
                r = float(np.max(per_chan[sel] / rr.bound[sel]))
                by_nodes[int(k)] = max(by_nodes.get(int(k), 0.0), r)
            # the variance: largest |ivar / exact - 1| of each channel over its variance bound
            rel_iv = np.where(ok, np.abs(fa.ivar / np.where(ok, ex.ivar, 1.0) - 1), 0.0)
            per_iv = rel_iv.reshape(rel_iv.shape[0], -1).max(axis=1)
            vb = rr.var_bound
            for k in np.unique(rr.nodes[interp & (vb > 0)]):
                sel = interp & (vb > 0) & (rr.nodes == k)
                r = float(np.max(per_iv[sel] / vb[sel]))
                var_by_nodes[int(k)] = max(var_by_nodes.get(int(k), 0.0), r)
                var_ratio_max = max(var_ratio_max, r)
        masked = interp & (n_bad[b0 - lo : b1 - lo] > n_bad.min())
        masked_interp += int(masked.sum())
        if masked.any():
            masked_ratio = max(masked_ratio, float(np.max(per_chan[masked] / rr.bound[masked])))
        exact_err = max(exact_err, float(per_chan[rr.exact].max()) if rr.exact.any() else 0.0)
        bounds.append(rr.bound)
        stats["exact_channels"] += int(rr.exact.sum())
        stats["solves"] += rr.n_solves
        stats["moves"] += rr.n_moves
    err = np.concatenate(errs)
    iv = np.concatenate(ivrel)
    bnd = np.concatenate(bounds)
    return {
        "window": [start, stop],
        "cpu_exact_s": round(t_exact, 2),
        "cpu_fast_s": round(t_fast, 2),
        "speedup": round(t_exact / t_fast, 2),
        "cpu_shepard_s": round(t_shepard, 2),
        **stats,
        "err_max_sigma": float(err.max()),
        "err_999_sigma": float(np.quantile(err, 0.999)),
        "share_err_gt_001": float(np.mean(err > 0.01)),
        "ivar_rel_max": float(iv.max()),
        "mask_differences": mask_diff,
        "mask_differences_unexplained": unexplained,
        "borderline_pixels": borderline,
        "bound_violations": violations,  # interpolated channels whose error exceeds the bound
        "exact_channels_err_max": exact_err,  # exact channels: route/rounding differences only
        "bound_max": float(bnd.max()),
        "error_to_bound_max": ratio_max,  # largest actual error / bound over interpolated channels
        "error_to_bound_by_nodes": by_nodes,  # the same by nodes used (2 linear ... 4 cubic)
        # largest |ivar / exact - 1| / variance bound over interpolated channels (ivar ~ 1/var:
        # the same to first order)
        "ivar_to_bound_max": var_ratio_max,
        "ivar_to_bound_by_nodes": var_by_nodes,
        # interpolated channels with samples masked beyond the least-masked channel of the window
        # (crrxr.core.sample_removal), and their largest error / bound
        "masked_interpolated": masked_interp,
        "masked_error_to_bound_max": masked_ratio,
    }


def grid_and_config(
    rss,
    *,
    pixel: float,
    margin: float,
    truncation: float,
    sv_floor: float = 1e-6,
    variant: str = "code",
    select_radius: float = 1.6,
) -> tuple[Grid, CoreConfig]:
    """The output grid covering every sample position (pixel and margin in arcsec) and the core
    configuration of a benchmark run (fiber radius from the RSS attrs)."""
    x, y = rss["xpos"].values, rss["ypos"].values
    grid = Grid.covering(
        np.array([np.nanmin(x), np.nanmax(x)]),
        np.array([np.nanmin(y), np.nanmax(y)]),
        pixel,
        margin,
    )
    cfg = CoreConfig(
        pixel_scale=pixel,
        truncation_radius=truncation,
        sv_floor=sv_floor,
        variant=variant,
        select_radius=select_radius,
        fiber_radius=float(rss.attrs.get(ATTR_FIBER_RADIUS, 1.0)),
    )
    return grid, cfg


def emit(line: dict, path: str | None) -> None:
    """Print one JSON result line; append it to ``path`` too when given."""
    print(json.dumps(line), flush=True)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(line) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=int, default=127)
    p.add_argument("--lenslets", type=int, default=None)
    p.add_argument("--snr", type=float, default=30.0)
    p.add_argument("--seeing", type=float, default=1.19, help="seeing FWHM arcsec at 5400 A")
    p.add_argument("--dar", type=float, default=1.0, help="DAR amplitude arcsec (0 = off)")
    p.add_argument("--bad-pixels", type=float, default=0.0)
    p.add_argument("--nwave", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--windows", type=int, nargs="+", default=[500, 3500], help="window starts")
    p.add_argument("--window", type=int, default=128, help="channels per window")
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--truncation", type=float, default=4.0, help="kernel truncation radius")
    p.add_argument("--sv-floor", type=float, default=1e-6)
    p.add_argument("--variant", choices=("code", "paper"), default="code", help="CRR variant")
    p.add_argument("--pixel", type=float, default=0.75)
    p.add_argument("--select-radius", type=float, default=1.6)
    p.add_argument("--margin", type=float, default=1.0, help="grid margin arcsec")
    p.add_argument("--rss", default=None, help="existing RSS store (else simulated)")
    p.add_argument("--json", default=None, help="append results here")
    p.add_argument(
        "--chunk",
        type=int,
        default=CHUNK_BLOCKS * BLOCK,
        help="channels per reuse call (multiple of 64; default: the engine's default reuse chunk)",
    )
    p.add_argument(
        "--fast-only",
        action="store_true",
        help="reuse solve only (no exact reference, no accuracy)",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_reuse_") as tmp:
        path = args.rss or os.path.join(tmp, "rss.zarr")
        if args.rss is None:
            simulate(args, path)
        rss = open_rss(path)
        grid, cfg = grid_and_config(
            rss,
            pixel=args.pixel,
            margin=args.margin,
            truncation=args.truncation,
            sv_floor=args.sv_floor,
            variant=args.variant,
            select_radius=args.select_radius,
        )
        config = {k: v for k, v in vars(args).items() if k not in ("json", "rss", "windows")}
        for w in args.windows:
            with threadpool_limits(1):
                run = run_fast_only if args.fast_only else run_window
                stop = min(w + args.window, rss.sizes["wavelength"])
                res = run(rss, grid, cfg, w, stop, args.tolerance, chunk=args.chunk)
            # peak resident memory of this process so far (exact and reuse alike), MiB
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            emit({"config": config, **res, "peak_rss_mib": round(peak)}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
