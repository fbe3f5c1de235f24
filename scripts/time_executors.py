"""Start-up and per-chunk overhead of each executor on the same small cube (docs/benchmarks.md).

For every executor (and worker count) the same synthetic RSS is built from scratch ``--repeat``
times with one channel per chunk; reported (medians):

- ``first chunk``: seconds from the start of the build (plan, template, executor start) until the
  first chunk's ledger mark appears in the store (polled every 10 ms);
- ``start``: seconds to start the executor (cluster, Ray, SLURM jobs; 0 for local schedulers);
- ``solve``: wall seconds of the task phase (executor already started);
- ``worker time/chunk``: solve x workers / chunks; its excess over the ``threads`` row is the
  executor's per-chunk overhead (scheduling, serialisation, result collection, worker start).
  (The tasks' own timings are not used: on a loaded machine they measured more than solve x workers
  under ``distributed``, so they cannot be trusted for a difference.)

    python scripts/time_executors.py                   # threads processes distributed ray (+slurm)
    SLURM_CONF=... python scripts/time_executors.py --executors slurm --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from rss_fixtures import write_rss  # noqa: E402

from crrxr.engine import store as S  # noqa: E402
from crrxr.engine.build import prepare_build, run_chunks  # noqa: E402
from crrxr.executors import ExecutorSettings, SlurmSettings, make_executor  # noqa: E402


def first_mark(store: str, t0: float, box: dict, done: threading.Event) -> None:
    while not done.is_set():
        try:
            if S.store_exists(store) and S.read_ledger(store).any():
                box["first"] = time.perf_counter() - t0
                return
        except Exception:  # noqa: BLE001 - the template may be mid-rename
            pass
        time.sleep(0.01)


def one_run(rss: str, folder: str, name: str, workers: int, logs: str) -> dict:
    store = os.path.join(folder, f"{name}-{workers}.zarr")
    shutil.rmtree(store, ignore_errors=True)
    settings = ExecutorSettings(
        name, slurm=SlurmSettings(interface="lo", log_directory=logs, walltime="00:20:00")
    )
    box: dict = {}
    done = threading.Event()
    t0 = time.perf_counter()
    watcher = threading.Thread(target=first_mark, args=(store, t0, box, done), daemon=True)
    watcher.start()
    with prepare_build(rss, store, wave_chunk=1, workers=workers, progress="off") as build:
        ex = make_executor(
            settings, workers, build.plan.budget_bytes, task_memory=build.plan.task_bytes
        )
        ts = time.perf_counter()
        ex.start()
        start = time.perf_counter() - ts
        try:
            results, solve, _ = run_chunks([build], ex, "off")
        finally:
            ex.close()
        build.finish(results[0], executor=ex.describe(), solve_seconds=solve)
    done.set()
    watcher.join()
    n = len(results[0])
    return {
        "first": box.get("first", float("nan")),
        "start": start,
        "solve": solve,
        "per_chunk": solve * workers / n,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--executors", nargs="+", default=["threads", "processes", "distributed", "ray", "slurm"]
    )
    p.add_argument("--workers", nargs="+", type=int, default=[2])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--channels", type=int, default=24)
    args = p.parse_args()
    if "slurm" in args.executors and not os.environ.get("SLURM_CONF"):
        print("# slurm skipped: set SLURM_CONF (scripts/slurm.sh up DIR)", file=sys.stderr)
        args.executors.remove("slurm")
    folder = tempfile.mkdtemp(prefix="crrxr-time-")
    try:
        rss = write_rss(Path(folder) / "rss.zarr", n_wave=args.channels, n_exp=3, n_fibers=37)
        print(
            f"# {args.channels} channels, 37 fibers x 3 exposures, 1 channel per chunk; "
            f"medians of {args.repeat}; machine: {os.cpu_count()} cores (shared)"
        )
        print(
            "| executor | workers | first chunk (s) | start (s) | solve (s) | "
            "worker time/chunk (ms) |"
        )
        print("|---|---|---|---|---|---|")
        for name in args.executors:
            for w in args.workers:
                runs = [
                    one_run(rss, folder, name, w, os.path.join(folder, "logs"))
                    for _ in range(args.repeat)
                ]
                m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(
                    f"| {name} | {w} | {m['first']:.2f} | {m['start']:.2f} | {m['solve']:.2f} | "
                    f"{1e3 * m['per_chunk']:.0f} |",
                    flush=True,
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
