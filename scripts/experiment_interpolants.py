"""Experiment for issue #14 (not a product feature): how well do other interpolants of the CRR
weights in wavelength do than the linear one that ``crr.reuse_tolerance`` uses?

For each 64-channel block of a simulated 127 x 9 MaNGA cube (galaxy + star, S/N 30, DAR on) every
channel is solved exactly under the block selection rule (the union of the block's per-channel
selections, ``experiment_block_selection``: one pixel set, so W is comparable across the block).
Nodes every ``s`` channels (s = 8, 16, 32); each other channel is predicted from them by

- ``linear``: the two bracketing nodes (what reuse does);
- ``cubic``: Lagrange through the four nearest nodes (three where the block has only three);
- ``nlerp``: linear, each pixel's row rescaled to the linear interpolation of the node rows' norms;
- ``gram``: linear interpolation of G^-1/2 and of G^-3/2 (G + lambda^2) (sample x sample) instead
  of W, with the channel's own kernel matrix A: W = D A^T G~^-1/2 (the code variant's algebra).

Reported per block and spacing: the largest relative variance error over usable pixels (coverage
<= the LOWCOV edge) and the largest |flux error| / sigma, against the exact solve, over the
interpolated channels; and for ``cubic`` the difference of the two quadratics through its first and
last three nodes (an a-posteriori estimate one could certify with), as its ratio to the actual error.

    python scripts/experiment_interpolants.py --dar 1.0 --blocks 1024
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
import experiment_block_selection as ebs  # noqa: E402

from crrxr.core import reuse as core_reuse  # noqa: E402
from crrxr.core import slice as core_slice  # noqa: E402
from crrxr.core.slice import validate_samples  # noqa: E402
from crrxr.io.rss import open_rss  # noqa: E402

BLOCK = 64


def lagrange(W: dict, nodes: list[int], k: int) -> np.ndarray:
    out = 0.0
    for a in nodes:
        coef = np.prod([(k - b) / (a - b) for b in nodes if b != a])
        out = out + coef * W[a]
    return out


def gram_parts(plan, c: int, lam: float):
    """(A_g, G^-1/2, G^-3/2 (G + lam^2)) of channel c (sample-side gram, code variant)."""
    x, y, fw = (plan._col(a, c) for a in (plan.x, plan.y, plan.fw))
    Ag = plan.solver.kernel_matrix(x, y, fw, plan._col(plan.usable, c), plan._geometry(c))[0]
    G = (Ag @ Ag.T).toarray() if hasattr(Ag, "toarray") else Ag @ Ag.T
    w, E = np.linalg.eigh(G)
    S = np.sqrt(w)
    return Ag, (E / S) @ E.T, (E * ((S * S + lam * lam) / S**3)) @ E.T


def from_gram(Ag, M, P) -> np.ndarray:
    s = Ag.T @ (P @ (Ag @ np.ones(Ag.shape[1])))
    return np.asarray(Ag.T @ M) / s[:, None]


def run_block(rss, grid, cfg, b0: int) -> list[dict]:
    n_chan = rss.sizes["wavelength"]
    lo, hi = core_reuse.read_range(b0, b0 + BLOCK, n_chan)
    part = rss.isel(wavelength=slice(lo, hi)).load()
    ebs._FIXED["sel"] = None
    ebs._FIXED["sel"] = ebs.block_union(part, grid, cfg)
    arrays = bench.sample_arrays(part)
    plan = core_reuse._BlockPlan(
        validate_samples(*arrays, cfg, ndim=2), grid, cfg, 0.01, cache_bytes=2**40
    )
    nb = hi - lo - 1
    W = {c: plan.exact(c)[2] for c in range(nb + 1)}
    plan.nodes.update(plan.weights)  # every channel its own node (for _variance)
    sel = plan.exact(0)[0]
    assert all(np.array_equal(plan.exact(c)[0], sel) for c in W), "selection changed"
    rows = []
    for s in (8, 16, 32):
        nodes = list(range(0, nb + 1, s))
        parts = {n: gram_parts(plan, n, cfg.lam) for n in nodes}
        worst = {k: [0.0, 0.0] for k in ("linear", "cubic", "nlerp", "gram")}
        est_ratio = np.inf
        for k in range(nb + 1):
            if k in nodes:
                continue
            r = min(k // s, len(nodes) - 2)
            a, b = nodes[r], nodes[r + 1]
            t = (k - a) / (b - a)
            four = nodes[max(0, min(r - 1, len(nodes) - 4)) :][:4]
            na, nb_ = (np.sqrt(np.square(W[n]).sum(axis=1)) for n in (a, b))
            lin = (1 - t) * W[a] + t * W[b]
            nl = np.sqrt(np.square(lin).sum(axis=1))
            cands = {
                "linear": lin,
                "cubic": lagrange(W, four, k),
                "nlerp": lin * (((1 - t) * na + t * nb_) / np.where(nl > 0, nl, 1))[:, None],
                "gram": from_gram(
                    gram_parts(plan, k, cfg.lam)[0],
                    (1 - t) * parts[a][1] + t * parts[b][1],
                    (1 - t) * parts[a][2] + t * parts[b][2],
                ),
            }
            var = plan._variance(k, W[k])
            ok = np.square(W[k]).sum(axis=1) <= 2 * np.median(np.square(W[k]).sum(axis=1))
            f = plan.f[plan.exact(k)[1], k]
            sigma = np.sqrt(var)
            for name, Wt in cands.items():
                v = np.max(np.abs(plan._variance(k, Wt) / var - 1)[ok])
                e = np.max((np.abs((Wt - W[k]) @ f) / sigma)[ok])
                worst[name] = [max(worst[name][0], v), max(worst[name][1], e)]
            if len(four) == 4:
                est = lagrange(W, four[:3], k) - lagrange(W, four[1:], k)
                actual = np.max((np.abs((cands["cubic"] - W[k]) @ f) / sigma)[ok])
                est_ratio = min(est_ratio, np.max((np.abs(est @ f) / sigma)[ok]) / actual)
        row = {"block": b0, "spacing": s}
        for name, (v, e) in worst.items():
            row[f"{name}_var_rel_max"] = float(f"{v:.3g}")
            row[f"{name}_flux_err_max_sigma"] = float(f"{e:.3g}")
        # None where the block has too few nodes for two quadratics
        row["cubic_estimate_over_actual_min"] = (
            float(f"{est_ratio:.3g}") if np.isfinite(est_ratio) else None
        )
        rows.append(row)
    ebs._FIXED["sel"] = None
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dar", type=float, default=1.0, help="DAR amplitude arcsec")
    p.add_argument("--blocks", type=int, nargs="+", default=[1024], help="block starts (x64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rss", default=None, help="existing RSS store (else simulated)")
    p.add_argument("--json", default=None, help="append results here")
    args = p.parse_args(argv)
    core_slice.ChannelSolver._geometry = ebs._block_geometry
    sim = bench.manga_sim_args(args.dar, args.seed)
    with tempfile.TemporaryDirectory(prefix="interpolants_") as tmp:
        path = args.rss or os.path.join(tmp, "rss.zarr")
        if args.rss is None:
            bench.simulate(sim, path)
        rss = open_rss(path)
        grid, cfg = bench.grid_and_config(rss, pixel=0.75, margin=1.0, truncation=6.0)
        with threadpool_limits(1):
            for b0 in args.blocks:
                for row in run_block(rss, grid, cfg, b0):
                    bench.emit({"dar": args.dar, "seed": args.seed, **row}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
