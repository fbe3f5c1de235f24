"""Engine benchmarks (numbers recorded in docs/benchmarks.md, "Engine benchmarks"; no timed assertions anywhere).

Parts (run one, several, or ``all``; each prints one JSON line per measurement and appends it to
``--results`` so that long runs can be polled):

- ``scaling``: the same 19-fiber x 9-exposure CRR observation with 1000, 2000 and 4563 channels under
  a 1GB budget per worker: wall time and peak memory (should stay flat, within 1.3x).
- ``workers``: throughput of a 127-fiber x 9-exposure CRR build with 1 and 2 workers.
- ``full``: a full-size MaNGA cube, 127 fibers x 9 exposures x 4563 channels, CRR, 2 workers.
- ``budget``: a lenslet IFU whose cube is larger than the memory budget given to the distributed
  workers (LocalCluster, memory_limit per worker), built with bounded memory.

    python scripts/bench_engine.py scaling workers budget --dir /tmp/crrxr-bench
    nohup python scripts/bench_engine.py full --dir /tmp/crrxr-bench &
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from crrxr.engine.build import run_build
from crrxr.io.cube import FLUX
from crrxr.simulate import PointSource, simulate_rss


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "load_average_1m": os.getloadavg()[0],
    }


def record(results: Path, **fields) -> dict:
    fields.setdefault("time_utc", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    fields.setdefault("load_average_1m", round(os.getloadavg()[0], 2))
    line = json.dumps(fields)
    print(line, flush=True)
    with open(results, "a") as fh:
        fh.write(line + "\n")
    return fields


def simulate(path: Path, **kwargs) -> Path:
    if not path.exists():
        t0 = time.perf_counter()
        simulate_rss(path, **kwargs)
        print(f"simulated {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return path


def build(rss: Path, store: Path, **kwargs):
    if store.exists():
        shutil.rmtree(store)
    return run_build(rss, store, progress="log", **kwargs)


def _fields(rep) -> dict:
    return {
        "channels": rep.plan.n_channels,
        "wave_chunk": rep.plan.wave_chunk,
        "chunks": rep.plan.n_chunks,
        "pixels": rep.plan.n_pixels,
        "samples": rep.plan.n_samples,
        "workers": rep.plan.workers,
        "task_estimate_mb": round(rep.plan.task_bytes / 2**20, 1),
        "budget_mb": round(rep.plan.budget_bytes / 2**20, 1) if rep.plan.budget_bytes else None,
        "output_mb": round(rep.plan.output_bytes / 2**20, 1),
        "wall_s": round(rep.wall_seconds, 2),
        "channels_per_s": round(rep.channels_per_second, 3),
        "solve_s": round(rep.solve_seconds, 2),
        "solve_channels_per_s": round(rep.channels_solved / rep.solve_seconds, 3)
        if rep.solve_seconds
        else None,
        "peak_total_mb": round(rep.peak_memory / 2**20, 1),
        "peak_process_mb": round(rep.peak_process_memory / 2**20, 1),
        "failed_channels": len(rep.failed_channels),
        "executor": rep.executor,
    }


def part_scaling(d: Path, results: Path, workers: int) -> None:
    for n in (1000, 2000, 4563):
        rss = simulate(
            d / f"rss19-{n}.zarr",
            bundle=19,
            exposures=9,
            nwave=n,
            scene="point",
            noise=20.0,
            seed=5,
        )
        rep = build(
            rss,
            d / f"cube19-{n}.zarr",
            method="crr",
            scheduler="threads",
            workers=workers,
            max_memory="1GB",
        )
        record(results, part="scaling", **_fields(rep))


def part_workers(d: Path, results: Path, channels: int = 160) -> None:
    """1 worker pinned to one core vs 2 workers on two cores (``taskset``), threads and processes.

    Each build runs in its own ``taskset`` subprocess so that the engine sees the cores it may use
    (BLAS threads = cores // workers): the 1-worker run really is one core.
    """
    wave = np.geomspace(6000.0, 6300.0, channels)
    rss = simulate(
        d / f"rss127-{channels}.zarr",
        bundle=127,
        exposures=9,
        wavelength=wave,
        scene="point",
        noise=20.0,
        seed=6,
    )
    for scheduler, w, cores in (
        ("threads", 1, "0"),
        ("threads", 2, "0,1"),
        ("processes", 2, "0,1"),
    ):
        store = d / f"cube127-{scheduler}-w{w}.zarr"
        here = str(Path(__file__).parent)
        code = (
            f"import json, sys; sys.path.insert(0, {here!r}); import bench_engine as b; "
            f"rep = b.build(b.Path({str(rss)!r}), b.Path({str(store)!r}), method='crr', "
            f"scheduler={scheduler!r}, workers={w}, wave_chunk=10); "
            "print('RESULT ' + json.dumps(b._fields(rep)))"
        )
        out = subprocess.run(
            ["taskset", "-c", cores, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
        )
        line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
        record(results, part="workers", cores=cores, **json.loads(line[len("RESULT ") :]))


def part_full(d: Path, results: Path, workers: int, scheduler: str = "threads") -> None:
    rss = simulate(
        d / "rss127-full.zarr",
        bundle=127,
        exposures=9,
        nwave=None,
        scene=[PointSource(flux=100.0)],
        noise=20.0,
        seed=7,
    )
    store = d / f"cube127-full-{scheduler}.zarr"
    resume = (
        store.exists()
    )  # a previous run was interrupted: finish it (the ledger says what is left)
    rep = run_build(
        rss,
        store,
        method="crr",
        scheduler=scheduler,
        workers=workers,
        resume=resume,
        progress="log",
    )
    record(results, part="full", resumed=resume, chunks_solved=rep.chunks_solved, **_fields(rep))


def part_budget(
    d: Path, results: Path, workers: int, lenslets: int, channels: int, budget: str
) -> None:
    rss = simulate(
        d / f"rss-lenslet{lenslets}-{channels}.zarr",
        lenslets=lenslets,
        nwave=channels,
        wave_range=(4800.0, 9000.0),
        scene="point",
        noise=20.0,
        seed=8,
    )
    rep = build(
        rss,
        d / f"cube-lenslet{lenslets}.zarr",
        method="shepard",
        scheduler="distributed",
        workers=workers,
        max_memory=budget,
        overrides=["grid.pixel_scale_arcsec=0.25", "output.correlation_max_sep_arcsec=1.0"],
    )
    import xarray as xr

    cube = xr.open_zarr(d / f"cube-lenslet{lenslets}.zarr")
    record(
        results,
        part="budget",
        memory_limit_per_worker=budget,
        cube_flux_mb=round(cube[FLUX].nbytes / 2**20, 1),
        **_fields(rep),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("parts", nargs="+", choices=("scaling", "workers", "full", "budget", "all"))
    ap.add_argument("--dir", default="/tmp/crrxr-bench", help="work folder (RSS and cubes)")
    ap.add_argument("--results", default=None, help="JSON-lines file (default DIR/results.jsonl)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lenslets", type=int, default=1000)
    ap.add_argument("--lenslet-channels", type=int, default=16000)
    ap.add_argument("--budget", default="600MB", help="memory limit per worker for the budget part")
    ap.add_argument("--worker-channels", type=int, default=160, help="channels of the workers part")
    ap.add_argument(
        "--full-scheduler",
        default="threads",
        choices=("threads", "processes", "distributed"),
        help="executor of the full part (default threads, the engine's default)",
    )
    args = ap.parse_args(argv)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    results = Path(args.results) if args.results else d / "results.jsonl"
    record(results, part="machine", **machine())
    parts = ("scaling", "workers", "budget", "full") if "all" in args.parts else args.parts
    for part in parts:
        if part == "scaling":
            part_scaling(d, results, args.workers)
        elif part == "workers":
            part_workers(d, results, args.worker_channels)
        elif part == "full":
            part_full(d, results, args.workers, args.full_scheduler)
        elif part == "budget":
            part_budget(d, results, args.workers, args.lenslets, args.lenslet_channels, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
