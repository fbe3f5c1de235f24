"""Executors: where the per-chunk tasks run (dask's local schedulers, Dask distributed, Ray, SLURM).

An executor is built from an :class:`ExecutorSettings` (data: a scheduler name or address plus the
Ray/SLURM site settings) and the plan's sizes, through the table :data:`FACTORIES`;
:func:`make_executor` keeps accepting a plain ``--scheduler`` string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from crrxr.executors.base import Executor, ProgressLog, available_cores
from crrxr.executors.distributed import DistributedExecutor
from crrxr.executors.errors import ClusterStartError, WorkerLostError
from crrxr.executors.local import LocalExecutor
from crrxr.executors.slurm import SlurmSettings

__all__ = [
    "Executor",
    "LocalExecutor",
    "DistributedExecutor",
    "ExecutorSettings",
    "SlurmSettings",
    "ProgressLog",
    "ClusterStartError",
    "WorkerLostError",
    "available_cores",
    "make_executor",
    "SCHEDULER_NAMES",
]

SCHEDULER_NAMES = ("synchronous", "threads", "processes", "distributed", "ray", "slurm")


@dataclass(frozen=True)
class ExecutorSettings:
    """Where a build runs, as data.

    ``scheduler``: a name in :data:`SCHEDULER_NAMES` or a Dask scheduler address
    (``tcp://host:8786``). ``ray_address``: an existing Ray cluster to join (``ray``; default
    ``RAY_ADDRESS``, else a local Ray for the run). ``slurm``: the site settings (``slurm``).
    """

    scheduler: str = "threads"
    ray_address: str | None = None
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def __str__(self) -> str:
        return self.scheduler


def _local(s: ExecutorSettings, workers: int, memory_limit, task_memory) -> Executor:
    return LocalExecutor(s.scheduler, workers)


def _distributed(s: ExecutorSettings, workers: int, memory_limit, task_memory) -> Executor:
    return DistributedExecutor(workers, memory_limit=memory_limit)


def _ray(s: ExecutorSettings, workers: int, memory_limit, task_memory) -> Executor:
    from crrxr.executors.ray import RayExecutor  # ray is an optional extra; import on use

    return RayExecutor(workers, address=s.ray_address, task_memory=task_memory)


def _slurm(s: ExecutorSettings, workers: int, memory_limit, task_memory) -> Executor:
    from crrxr.executors.slurm import SlurmExecutor

    return SlurmExecutor(workers, memory_limit=memory_limit, settings=s.slurm)


#: scheduler name -> factory(settings, workers, memory_limit, task_memory)
FACTORIES: dict[str, Callable[..., Executor]] = {
    "synchronous": _local,
    "threads": _local,
    "processes": _local,
    "distributed": _distributed,
    "ray": _ray,
    "slurm": _slurm,
}


def is_address(scheduler: str) -> bool:
    """Whether ``scheduler`` is a Dask scheduler address (``tcp://host:8786``, ``host:8786``)."""
    return "://" in scheduler or (":" in scheduler and scheduler.rsplit(":", 1)[1].isdigit())


def make_executor(
    scheduler: str | ExecutorSettings = "threads",
    workers: int | None = None,
    memory_limit: int | None = None,
    task_memory: int | None = None,
) -> Executor:
    """The executor for a ``--scheduler`` value or an :class:`ExecutorSettings`, sized for
    ``workers`` parallel tasks, ``memory_limit`` bytes per worker (Dask/SLURM workers) and
    ``task_memory`` bytes per task (what Ray reserves for each)."""
    s = scheduler if isinstance(scheduler, ExecutorSettings) else ExecutorSettings(str(scheduler))
    n = workers or available_cores()
    factory = FACTORIES.get(s.scheduler)
    if factory is not None:
        return factory(s, n, memory_limit, task_memory)
    if is_address(s.scheduler):
        return DistributedExecutor(n, memory_limit=memory_limit, address=s.scheduler)
    raise ValueError(
        f"unknown scheduler {s.scheduler!r}; use {', '.join(SCHEDULER_NAMES)} or a scheduler "
        "address like tcp://127.0.0.1:8786"
    )
