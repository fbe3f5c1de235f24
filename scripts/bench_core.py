"""Per-channel timings of the core solvers (one run, one machine); prints a Markdown table.

Cases: MaNGA 127 fibers x 3 and x 9 exposures (0.05" dither jitter, 5% seeing jitter, 0.75" pixels,
36" grid) and a 2000-lenslet single exposure (0.75" lenslets in a contiguous hex array, 0.75" pixels).
Columns (median CPU time of this process over the repeats, milliseconds; wall-clock medians and
minima are listed below the table): literal SVD route, lean SVD (the same SVD without the
pixel x pixel products), fast route (solver="auto", route used in brackets), forced gram route, Shepard weights, a bare numpy.linalg.eigh of the same Gram size (the
floor), and whole channels (kernel matrix + weights + image + ivar + masks) for CRR and Shepard.

BLAS threads are fixed before numpy is imported (``--threads``, default 1).

    .venv/bin/python scripts/bench_core.py [--threads 1] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":
    _threads = "1"
    for _i, _a in enumerate(sys.argv):
        if _a == "--threads" and _i + 1 < len(sys.argv):
            _threads = sys.argv[_i + 1]
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads

import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402

from crrxr.core import CoreConfig, Grid, reconstruct_block  # noqa: E402
from crrxr.core.crr import _svd_fast, solve_crr  # noqa: E402
from crrxr.core.shepard import shepard_weights_sparse  # noqa: E402
from crrxr.core.slice import ChannelSolver, validate_samples  # noqa: E402
from crrxr.simulate.geometry import dither_offsets, hex_bundle, hex_positions  # noqa: E402

CLOCK = time.process_time  # CPU time of this process: robust to other processes sharing the cores


def interleaved(fns: dict, repeats: int, skip_after: dict | None = None) -> dict:
    """Time every function once per round, ``repeats`` rounds (after a warm-up round); interleaving
    keeps the ratios fair when other processes load the machine.

    Returns {name: (median CPU time, median wall time, min wall time)} in ms. With one BLAS thread
    the process CPU time is the compute time, without the waits for a core that other processes
    hold (cache and memory-bandwidth contention still count).

    ``skip_after`` = {name: k}: run that function in the first k rounds only (slow references).
    """
    skip_after = skip_after or {}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        if name not in skip_after:
            fn()  # warm-up (the slow references are not warmed up)
    for k in range(repeats):
        for name, fn in fns.items():
            if k >= skip_after.get(name, repeats):
                continue
            c0, t0 = CLOCK(), time.perf_counter()
            fn()
            cpu[name].append(CLOCK() - c0)
            wall[name].append(time.perf_counter() - t0)
    return {
        name: (
            1e3 * float(np.median(cpu[name])),
            1e3 * float(np.median(wall[name])),
            1e3 * float(np.min(wall[name])),
        )
        for name in fns
    }


def manga_case(n_exp: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    fx, fy = hex_bundle(127)
    dx, dy = dither_offsets(n_exp, jitter=0.05, rng=rng)
    x = (fx[None, :] + dx[:, None]).ravel()
    y = (fy[None, :] + dy[:, None]).ravel()
    fw = np.repeat(1.5 * (1 + 0.05 * rng.standard_normal(n_exp)), fx.size)
    return x, y, fw, Grid.for_extent(0.75, 36.0), 1.0


def lenslet_case(n: int = 2000):
    x, y = hex_positions(26, 0.75)
    order = np.argsort(np.hypot(x, y), kind="stable")[:n]
    x, y = x[order], y[order]
    fw = np.full(n, 1.0)
    # a 0.75" hexagonal lenslet has the area of a circle of radius 0.394"
    return x, y, fw, Grid.covering(x, y, 0.75, margin=2.0), 0.394


def run_case(
    name: str, x, y, fw, grid: Grid, fiber_radius: float, repeats: int, svd_repeats: int
) -> dict:
    n = x.size
    rng = np.random.default_rng(1)
    flux = rng.normal(1.0, 0.1, n)
    ivar = np.ones(n)
    mask = np.zeros(n, np.uint32)
    cfg = CoreConfig(fiber_radius=fiber_radius)
    xs, ys, fws, f, iv, usable, dead = validate_samples(x, y, fw, flux, ivar, mask, cfg, ndim=1)
    solver = ChannelSolver(grid, cfg)
    geom = solver._geometry(xs, ys, dead)
    Ag, _, _ = solver.kernel_matrix(xs, ys, fws, usable, geom)  # exactly as a channel builds it
    ng, m = Ag.shape
    side = min(ng, m)
    G = (Ag @ Ag.T).toarray() if ng <= m else (Ag.T @ Ag).toarray()
    auto = solve_crr(Ag, solver="auto")
    s, p, d = geom[0], geom[1], geom[2]
    # the gram route's unavoidable kernels on this matrix: Gram product, eigh, syrk M = B B^T, W product
    AgT = Ag.T.tocsr()
    w, E = np.linalg.eigh(G)
    B = E / np.sqrt(np.sqrt(np.clip(w, w[-1] * 1e-300, None)))
    M = B @ B.T

    def whole(method):
        counter = {"k": 0}
        cfg_m = CoreConfig(method=method, fiber_radius=fiber_radius)

        def go():
            # fresh solver and a new seeing value each time: nothing cached from a previous channel
            counter["k"] += 1
            ChannelSolver(grid, cfg_m).solve(
                xs, ys, fws * (1 + 1e-4 * counter["k"]), f, iv, usable, dead
            )

        return go

    fns = {
        "svd": lambda: solve_crr(Ag, solver="svd"),
        "svd_lean": lambda: _svd_fast(Ag, 1e-3, 1e-6, "code"),
        "fast": lambda: solve_crr(Ag, solver="auto"),
        "gram": lambda: solve_crr(Ag, solver="gram"),
        "eigh": lambda: np.linalg.eigh(G),
        "k_gram": (lambda: (Ag @ AgT).toarray()) if ng <= m else (lambda: (AgT @ Ag).toarray()),
        "k_syrk": lambda: B @ B.T,
        "k_wprod": (lambda: AgT @ M) if ng <= m else (lambda: Ag @ M),
        "shepard": lambda: shepard_weights_sparse(s, p, d, usable, grid.size),
        "channel_crr": whole("crr"),
        "channel_shepard": whole("shepard"),
        "block_crr": lambda: block_per_channel(x, y, fw, grid, fiber_radius, "crr", n_block),
        "block_shepard": lambda: block_per_channel(
            x, y, fw, grid, fiber_radius, "shepard", n_block
        ),
    }
    n_block = 16 if ng <= 1500 else 2  # channels per reconstruct_block call
    slow = {"svd": svd_repeats, "svd_lean": svd_repeats, "block_crr": max(1, repeats // 2)}
    if ng > 1500:  # the literal and fallback SVDs take seconds here
        slow.update(fast=svd_repeats, channel_crr=svd_repeats, block_crr=1)
    timed = interleaved(fns, repeats, slow)
    row = {
        "case": name,
        "samples": ng,
        "pixels": m,
        "gram_side": side,
        "route": auto.solver,
        "cond": auto.condition,
        "est": auto.error_estimate,
        "timed": timed,
    }
    row.update({k: v[0] for k, v in timed.items()})
    for k in ("block_crr", "block_shepard"):  # per channel
        row[k] /= n_block
        timed[k] = tuple(v / n_block for v in timed[k])
    return row


def block_per_channel(
    x, y, fw, grid: Grid, fiber_radius: float, method: str, n_chan: int = 8
) -> None:
    """Per-channel time of reconstruct_block over consecutive MaNGA channels (dlog10 lambda = 1e-4):
    seeing drifting as lambda^-0.2 and positions drifting 0.002"/channel (DAR), so neither the
    weights nor the neighbour lists can be reused; kernel-table rows can."""
    wave = 5400.0 * 10 ** (1e-4 * np.arange(n_chan))
    X = x[:, None] + 0.002 * np.arange(n_chan)[None, :]
    Y = np.repeat(y[:, None], n_chan, axis=1)
    FW = fw[:, None] * (wave / 5400.0)[None, :] ** -0.2
    F = np.random.default_rng(2).normal(1.0, 0.1, X.shape)
    IV, M = np.ones(X.shape), np.zeros(X.shape, np.uint32)
    cfg = CoreConfig(method=method, fiber_radius=fiber_radius)
    reconstruct_block(X, Y, FW, F, IV, M, grid, cfg)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"{cpu}; {os.cpu_count()} logical CPUs ({ncpu} usable by this process); load average "
        f"{', '.join(f'{v:.2f}' for v in load)}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}; BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--threads", default="1", help="BLAS/OpenMP threads (set before numpy is imported)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--svd-repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="only the 127 x 3 case")
    args = ap.parse_args(argv)
    print(f"machine: {machine()}")
    cases = [("MaNGA 127 x 3", *manga_case(3))]
    if not args.quick:
        cases += [("MaNGA 127 x 9", *manga_case(9)), ("lenslet 2000 x 1", *lenslet_case())]
    rows = [run_case(name, *rest, args.repeats, args.svd_repeats) for name, *rest in cases]
    print()
    print(
        "| case | samples x pixels (Gram side) | SVD route | lean SVD | fast route | gram | bare eigh | "
        "fast/eigh | SVD/fast | Shepard W | channel CRR | channel Shepard | block CRR | block Shepard | "
        "block CRR/eigh | CRR/Shepard (block) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['samples']} x {r['pixels']} ({r['gram_side']}) | {r['svd']:.1f} | {r['svd_lean']:.1f} | "
            f"{r['fast']:.1f} [{r['route']}] | {r['gram']:.1f} | {r['eigh']:.1f} | {r['fast'] / r['eigh']:.2f} | "
            f"{r['svd'] / r['fast']:.1f} | {r['shepard']:.2f} | {r['channel_crr']:.1f} | "
            f"{r['channel_shepard']:.2f} | {r['block_crr']:.1f} | {r['block_shepard']:.2f} | "
            f"{r['block_crr'] / r['eigh']:.2f} | {r['block_crr'] / r['block_shepard']:.1f} |"
        )
    print()
    print(
        "Kernels of the gram route (median CPU ms per channel): the Gram product A_g A_g^T (sparse), "
        "numpy eigh, the syrk M = B B^T and the sparse W product; their sum is the floor of any "
        "channel on this route."
    )
    print()
    print(
        "| case | Gram product | eigh | syrk M | W product | sum (floor) | fast route | fast / sum | block CRR / sum |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ksum = r["k_gram"] + r["eigh"] + r["k_syrk"] + r["k_wprod"]
        print(
            f"| {r['case']} | {r['k_gram']:.1f} | {r['eigh']:.1f} | {r['k_syrk']:.1f} | {r['k_wprod']:.1f} | "
            f"{ksum:.1f} | {r['fast']:.1f} | {r['fast'] / ksum:.2f} | {r['block_crr'] / ksum:.2f} |"
        )
    print()
    print(
        "block columns: reconstruct_block over 16 channels (2 for the lenslet case), per channel."
    )
    print("Wall-clock times, median / minimum (ms):")
    for r in rows:
        walls = ", ".join(f"{k} {v[1]:.1f}/{v[2]:.1f}" for k, v in r["timed"].items())
        print(f"- {r['case']}: {walls}")
    print()
    for r in rows:
        print(
            f"{r['case']}: condition {r['cond']:.3g}, auto route {r['route']}, error estimate of that route {r['est']:.2g}"
        )
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
