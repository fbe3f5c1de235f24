"""Experiment for issue #14: how close do the reuse certificate's curvature models come to the real
errors? For every interpolated channel of 128-channel windows: the largest actual relative ivar
error (usable pixels, against an exact build) over the variance model WITHOUT the factor
``crrxr.core.reuse.SAFETY`` (``SAFETY_QUADRATIC``, ``SAFETY_CUBIC`` for quadratic and cubic
channels: ratio x the check's relative variance error), and the largest actual flux error / sigma over the flux model without
it (the stored bound / the factor). A ratio above the factor would be a broken certificate; the
margin is the factor / the largest ratio.

    python scripts/measure_bound_margin.py RSS.zarr code 512 1024     # MaNGA, code variant
    python scripts/measure_bound_margin.py RSS.zarr lens 256 1024     # lenslet-0.75 geometry

It reads each block's plan through ``bench_reuse.recorded_plans``: the models are its ``bound``
and ``var_bound`` over the factor, reported for linear, quadratic and cubic channels.
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

KINDS = {2: "linear", 3: "quadratic", 4: "cubic"}


def window_margin(rss, grid, cfg, start: int, width: int = 128) -> dict:
    """Largest actual / model error ratios (variance, flux) over the interpolated channels of the
    window's 64-channel blocks, for the linear (2 nodes), quadratic (3) and cubic (4) model."""
    n_chan = rss.sizes["wavelength"]
    worst = {k: [0.0, 0.0, 0] for k in KINDS}  # nodes -> [variance, flux, channels]
    with bench.recorded_plans() as plans:
        for b0 in range(start, start + width, R.BLOCK):
            b1 = b0 + R.BLOCK
            lo, hi = R.read_range(b0, b1, n_chan)
            arrays = bench.sample_arrays(rss.isel(wavelength=slice(lo, hi)).load())
            ex = reconstruct_block(*(a[:, : b1 - b0] for a in arrays), grid, cfg)
            plans.clear()
            rr = R.reconstruct_block_reuse(
                *arrays, grid, cfg, first=lo, out=(b0, b1), n_chan=n_chan, tolerance=0.01
            )
            (plan,) = plans
            fa = rr.block
            for o in np.flatnonzero(~rr.exact):
                nodes = plan.interpolated[o][0]
                if len(nodes) == 1:  # a node's own weights with samples removed: no model
                    continue
                ok = (ex.ivar[o] > 0) & (fa.ivar[o] > 0)
                ok &= ((ex.mask[o] | fa.mask[o]) & masks.DONOTUSE) == 0
                v = np.max(np.abs(fa.ivar[o][ok] / ex.ivar[o][ok] - 1))
                f = np.max(np.abs(fa.flux[o][ok] - ex.flux[o][ok]) * np.sqrt(ex.ivar[o][ok]))
                safety = R.safety_factor(len(nodes))
                mv, mf = plan.var_bound[o] / safety, plan.bound[o] / safety
                w = worst[len(nodes)]
                w[0] = max(w[0], v / mv if mv > 0 else 0.0)
                w[1] = max(w[1], f / mf if mf > 0 else 0.0)
                w[2] += 1
    row = {"start": start}
    for k, name in KINDS.items():
        row[f"{name}_interpolated"] = worst[k][2]
        row[f"{name}_var_actual_over_model_max"] = round(worst[k][0], 3)
        row[f"{name}_flux_actual_over_model_max"] = round(worst[k][1], 3)
    return row


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
