"""Executors: where the per-chunk tasks run (local schedulers, Dask distributed; Ray/SLURM later)."""

from __future__ import annotations

from crrxr.executors.base import Executor, ProgressLog, available_cores
from crrxr.executors.distributed import DistributedExecutor
from crrxr.executors.local import LocalExecutor

__all__ = [
    "Executor",
    "LocalExecutor",
    "DistributedExecutor",
    "ProgressLog",
    "available_cores",
    "make_executor",
    "SCHEDULER_NAMES",
]

SCHEDULER_NAMES = ("synchronous", "threads", "processes", "distributed")


def make_executor(
    scheduler: str = "threads", workers: int | None = None, memory_limit: int | None = None
) -> Executor:
    """The executor for a ``--scheduler`` value: a local scheduler name, ``distributed`` (a
    LocalCluster started for the run) or a scheduler address such as ``tcp://10.0.0.1:8786``."""
    n = workers or available_cores()
    if scheduler in LocalExecutor.SCHEDULERS:
        return LocalExecutor(scheduler, n)
    if scheduler == "distributed":
        return DistributedExecutor(n, memory_limit=memory_limit)
    if "://" in scheduler or (":" in scheduler and scheduler.rsplit(":", 1)[1].isdigit()):
        return DistributedExecutor(n, memory_limit=memory_limit, address=scheduler)
    raise ValueError(
        f"unknown scheduler {scheduler!r}; use synchronous, threads, processes, distributed or a "
        "scheduler address like tcp://127.0.0.1:8786"
    )
