"""Executors inside this machine with dask's local schedulers: synchronous, threads, processes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import dask
from dask.callbacks import Callback
from dask.diagnostics import ProgressBar

from crrxr.executors.base import Executor, ProgressLog
from crrxr.executors.blas import blas_threads_for_pool, set_worker_blas_threads


class _CountTasks(Callback):
    """Advance a :class:`ProgressLog` each time one of the chunk tasks finishes."""

    def __init__(self, keys: set, log: ProgressLog | None):
        super().__init__()
        self.keys = keys
        self.log = log

    def _posttask(self, key, result, dsk, state, worker_id):
        if key in self.keys and self.log is not None:
            self.log.advance()


class LocalExecutor(Executor):
    """dask's ``synchronous`` (one task at a time, for debugging), ``threads`` (the default: no cluster
    to start) or ``processes`` scheduler, with ``workers`` parallel tasks."""

    SCHEDULERS = ("synchronous", "threads", "processes")

    def __init__(self, scheduler: str = "threads", workers: int = 1):
        if scheduler not in self.SCHEDULERS:
            raise ValueError(f"unknown local scheduler {scheduler!r}; use one of {self.SCHEDULERS}")
        super().__init__(1 if scheduler == "synchronous" else workers)
        self.name = scheduler

    def compute(
        self,
        tasks: Sequence[Any],
        *,
        progress: str = "off",
        on_result: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        if not tasks:
            return []
        kwargs: dict[str, Any] = {"scheduler": self.name}
        if self.name != "synchronous":
            kwargs["num_workers"] = self.workers
        if self.name == "processes":
            kwargs["initializer"] = set_worker_blas_threads  # once per worker process
        callbacks: list[Callback] = []
        if progress == "bar":
            callbacks.append(ProgressBar(minimum=0.5, dt=0.5, out=sys.stderr))
        elif progress == "log":
            callbacks.append(_CountTasks({t.key for t in tasks}, ProgressLog(len(tasks))))
        # in-process pools: BLAS threads set once for the pool's lifetime, never per task
        with _Stack(callbacks), blas_threads_for_pool():
            results = list(dask.compute(*tasks, **kwargs))
        if on_result is not None:
            for r in results:
                on_result(r)
        return results


class _Stack:
    """Enter several dask callbacks at once."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks

    def __enter__(self):
        for cb in self.callbacks:
            cb.__enter__()
        return self

    def __exit__(self, *exc):
        for cb in reversed(self.callbacks):
            cb.__exit__(*exc)
