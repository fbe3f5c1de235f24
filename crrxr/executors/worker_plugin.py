"""Dask distributed worker plugin running :func:`crrxr.executors.base.worker_start` once per worker
(imported only when a distributed executor starts: ``distributed`` is slow to import)."""

from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin

from crrxr.executors.base import worker_start


class WorkerStart(WorkerPlugin):
    """Run the crrxr worker start-up (die with the parent, BLAS threads) on each worker."""

    def __init__(self, with_parent: bool = True):
        self.with_parent = with_parent

    def setup(self, worker) -> None:
        worker_start(self.with_parent)
        if self.with_parent:  # a cluster crrxr started for this build (not the user's own)
            from crrxr.executors.distributed import quiet_own_worker

            quiet_own_worker()
