"""Dask distributed: a ``LocalCluster`` started for the run (127.0.0.1, a memory limit per worker,
one thread per worker) or an existing scheduler given by address."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import dask

from crrxr.executors.base import Executor, ProgressLog
from crrxr.executors.blas import blas_worker_plugin

log = logging.getLogger(__name__)


class DistributedExecutor(Executor):
    """Run the chunk tasks on a Dask distributed cluster.

    ``address=None`` starts a ``LocalCluster`` with ``workers`` single-threaded worker processes,
    each limited to ``memory_limit`` bytes (None: dask's default share of the machine), and shuts it
    down on exit; an address (``tcp://host:8786``) connects to an existing scheduler instead.
    """

    name = "distributed"

    def __init__(
        self, workers: int = 1, memory_limit: int | None = None, address: str | None = None
    ):
        super().__init__(workers)
        self.memory_limit = memory_limit
        self.address = address
        self.client = None
        self.cluster = None
        self._scratch: str | None = None
        self._undo = ExitStack()  # what __enter__ changed outside the cluster, undone on close

    def __enter__(self) -> DistributedExecutor:
        from distributed import Client, LocalCluster

        if self.address:
            self.client = Client(self.address)
            self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        else:
            # worker spill/scratch space of this run only, removed on close (dask's default
            # dask-scratch-space under the temp folder would be left behind)
            self._scratch = tempfile.mkdtemp(prefix="crrxr-dask-")
            self._undo.callback(shutil.rmtree, self._scratch, ignore_errors=True)
            self._undo.enter_context(dask.config.set({"temporary-directory": self._scratch}))
            # the in-process scheduler and nannies log every connection at INFO while the cluster
            # closes (LocalCluster's silence_logs covers only its start): keep warnings, drop chatter
            dlog = logging.getLogger("distributed")
            self._undo.callback(dlog.setLevel, dlog.level)
            dlog.setLevel(max(dlog.getEffectiveLevel(), logging.WARNING))
            try:
                self.cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=":0",  # a free port: never clash with a running cluster
                    memory_limit=self.memory_limit if self.memory_limit else "auto",
                    silence_logs=logging.WARNING,  # keep memory warnings and worker restarts visible
                )
                self.client = Client(self.cluster)
            except BaseException:
                self.close()  # no `with` exit follows a failed enter: undo the above here
                raise
        # BLAS threads set once in every worker process (also workers that join or restart later)
        self.client.register_plugin(blas_worker_plugin())
        return self

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        self._undo.close()  # log level, dask config, then the scratch folder

    def worker_pids(self) -> list[int]:
        if self.client is None:
            return []
        info = self.client.scheduler_info().get("workers", {})
        return [int(w["pid"]) for w in info.values() if "pid" in w]

    def compute(
        self,
        tasks: Sequence[Any],
        *,
        progress: str = "off",
        on_result: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        from distributed import as_completed
        from distributed import progress as dist_progress

        if self.client is None:
            raise RuntimeError("DistributedExecutor.compute outside its `with` block")
        if not tasks:
            return []
        futures = self.client.compute(list(tasks))
        position = {fut.key: i for i, fut in enumerate(futures)}
        if progress == "bar":
            dist_progress(futures)
        plog = ProgressLog(len(futures)) if progress == "log" else None
        results: list[Any] = [None] * len(futures)
        pending = as_completed(futures)
        futures.clear()  # hold each result only until it is collected: a restarted worker then
        for fut in pending:  # never makes the scheduler recompute chunks already written
            result = fut.result()  # raises the task's error here
            results[position[fut.key]] = result
            fut.release()
            if plog is not None:
                plog.advance()
            if on_result is not None:
                on_result(result)
        return results

    def describe(self) -> str:
        where = self.address or "LocalCluster on 127.0.0.1"
        return f"distributed ({self.workers} workers, {where})"
