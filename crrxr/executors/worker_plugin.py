"""Dask distributed worker plugin running :func:`crrxr.executors.base.worker_start` once per worker
(imported only when a distributed executor starts: ``distributed`` is slow to import)."""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin

from crrxr.executors.base import worker_start


class WorkerStart(WorkerPlugin):
    """Run the crrxr worker start-up (die with the parent, then the start hooks) on each worker."""

    def setup(self, worker) -> None:
        worker_start()
