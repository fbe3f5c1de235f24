"""Experiment for issue #14: what limits interpolation of lenslet weights in wavelength?

For a window of a lenslet RSS (lenslet-0.75 geometry: paper variant, floor 1e-6, 6" cut; one
block of ``--width`` channels), node weights are taken every 8, 16 and 32 channels, each moved to
the selection of the channel it is compared at (``crrxr.core.pixel_update``). Each interpolant
(linear, quadratic and cubic through nodes 0, h, 2h, ...) is compared with the exact weights at
the channel halfway between its two middle nodes, with the Lagrange coefficients taken in the
channel index (what ``crrxr.core.reuse`` does) and in the DAR offset along its direction (the
positions' own displacement): largest flux error / sigma, and the relative variance error over
the pixels the exact solve keeps, split exactly into

    var(sum_n L_n W_n) = sum_n L_n var(W_n) - 1/2 sum_a sum_b L_a L_b var(W_a - W_b)  (sum L = 1):

the "remainder" (the variances themselves interpolated, sum_n L_n var(W_n) - var(W)) and the
"mixing" term (the second sum, >= 0 for linear interpolation: mixing two weight sets averages
their noise). "var model / actual": the same polynomial extrapolated to the next node (a
leave-one-out check, where it lies in the window), its relative variance error there scaled to the
compared channel by a constant next derivative, over the actual error.

    python scripts/experiment_lenslet_variance.py RSS.zarr 256 [--width 128]

It reads the block's plan (solves and moves) through ``bench_reuse.recorded_plans``.
"""

import argparse
import os
import sys

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_reuse as bench  # noqa: E402

from crrxr.core import reuse as R  # noqa: E402
from crrxr.io.rss import open_rss  # noqa: E402

#: node spacings (channels) and polynomial degrees tried
SPACINGS = (8, 16, 32)
DEGREES = (1, 2, 3)


def lagrange(xs: np.ndarray, x: float) -> np.ndarray:
    out = np.ones(xs.size)
    for a in range(xs.size):
        for b in range(xs.size):
            if a != b:
                out[a] *= (x - xs[b]) / (xs[a] - xs[b])
    return out


def block_plan(rss, grid, cfg, b0: int, width: int):
    """The reuse plan of a block of ``width`` channels from ``b0`` after its run (offsets
    0..width are channels b0..b0 + width)."""
    n_chan = rss.sizes["wavelength"]
    lo, hi = R.read_range(b0, b0 + width, n_chan, width)
    arrays = bench.sample_arrays(rss.isel(wavelength=slice(lo, hi)).load())
    with bench.recorded_plans() as plans:
        R.reconstruct_block_reuse(
            *arrays,
            grid,
            cfg,
            first=lo,
            out=(b0, b0 + width),
            n_chan=n_chan,
            tolerance=0.01,
            block=width,
        )
    return plans[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rss")
    p.add_argument("block", type=int, help="first channel of the window")
    p.add_argument("--width", type=int, default=128, help="window width (channels)")
    args = p.parse_args()
    rss = open_rss(args.rss)
    grid, cfg = bench.grid_and_config(
        rss, pixel=0.75, margin=1.5, truncation=6.0, variant="paper", select_radius=0.75
    )
    plan = block_plan(rss, grid, cfg, args.block, args.width)
    d = np.array([plan.x[0, args.width] - plan.x[0, 0], plan.y[0, args.width] - plan.y[0, 0]])
    u = d / np.hypot(*d)

    def dar(c: int) -> float:
        return float((plan.x[0, c] - plan.x[0, 0]) * u[0] + (plan.y[0, c] - plan.y[0, 0]) * u[1])

    print(
        f"window {args.block}+{args.width}: DAR shift {np.hypot(*d):.4f} arcsec; "
        f"selections {len(set(plan.sel_key.values()))}; plan: {plan.n_solves} solves"
    )
    print(
        "| degree | spacing | at | coordinate | flux err / sigma max | var err max (median) "
        "| remainder max (median) | mixing max (median) | check at | var model / actual |"
    )
    print("|---:|---:|---:|---|---:|---|---|---|---:|---:|")
    for h in SPACINGS:
        for deg in DEGREES:
            nodes = tuple(i * h for i in range(deg + 1))
            at = (deg // 2) * h + h // 2
            check = (deg + 1) * h
            if nodes[-1] > args.width:
                continue
            key = plan.sel_key[at]
            used = (*nodes, at) + ((check,) if check <= args.width else ())
            for c in used:
                if c not in plan.nodes:
                    plan.nodes[c] = plan._key(plan._col(plan.usable, c))
            W = {c: plan._w(c, key) for c in used}
            if any(v is None for v in W.values()):
                print(f"| {deg} | {h} | {at} | a node could not be moved |")
                continue
            Wm = W[at][2]
            var_m = plan._variance(at, Wm)
            cover = np.square(Wm).sum(axis=1)
            keep = ~R._certain_lowcov(cfg.lowcov_threshold, cover[:, None], np.zeros(1))[:, 0]
            keep &= var_m > 0
            f = plan.f[W[at][1], at]
            for name, coord in (("channel", float), ("DAR offset", dar)):
                L = lagrange(np.array([coord(n) for n in nodes]), coord(at))
                Wi = sum(w * W[n][2] for w, n in zip(L, nodes))
                total = plan._variance(at, Wi) / var_m - 1
                parts = [plan._variance(at, W[n][2]) for n in nodes]
                remainder = sum(w * v for w, v in zip(L, parts)) / var_m - 1
                mixing = remainder - total
                flux = np.abs((Wi - Wm) @ f) / np.sqrt(var_m)
                model = "-"
                if check in W:
                    # leave-one-out: the same polynomial extrapolated to the next node, scaled
                    # to ``at`` by a constant next derivative (what a check would certify)
                    Lc = lagrange(np.array([coord(n) for n in nodes]), coord(check))
                    Dc = sum(w * W[n][2] for w, n in zip(Lc, nodes)) - W[check][2]
                    var_c = plan._variance(check, W[check][2])
                    rel_c = np.abs(plan._variance(check, W[check][2] + Dc) / var_c - 1)
                    omega = np.prod([coord(at) - coord(n) for n in nodes])
                    omega_c = np.prod([coord(check) - coord(n) for n in nodes])
                    pred = abs(omega / omega_c) * rel_c[keep & (var_c > 0)].max()
                    model = f"{pred / np.abs(total[keep]).max():.2f}"

                def stat(a, keep=keep):
                    a = np.abs(a[keep])
                    return f"{a.max():.2e} ({np.median(a):.1e})"

                print(
                    f"| {deg} | {h} | {at} | {name} | {flux[keep].max():.2e} | {stat(total)} "
                    f"| {stat(remainder)} | {stat(mixing)} | {check if check in W else '-'} "
                    f"| {model} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
