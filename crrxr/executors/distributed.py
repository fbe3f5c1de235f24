"""Dask distributed: a ``LocalCluster`` started for the run (127.0.0.1, a memory limit per worker,
one thread per worker) or an existing scheduler given by address."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import dask

from crrxr.executors.base import Executor, Interrupted, ProgressLog

log = logging.getLogger(__name__)

#: Seconds between checks for finished tasks and for a stop request.
POLL_SECONDS = 0.1

#: Worker log records that only repeat what the driver reports in one line (a task's error with
#: its traceback; tasks cancelled by a stop), or that only a closing cluster produces: dropped in
#: the workers of a cluster crrxr started. A heartbeat that finds the scheduler gone races with the
#: cluster's close (the scheduler lives in the driver process, so it is gone only when the driver
#: closes the cluster or dies, and the worker then dies with its parent); it printed a traceback
#: after a clean Ctrl-C.
_WORKER_CHATTER = {
    "distributed.worker": (
        "Compute Failed",
        "Failed to communicate with scheduler during heartbeat",
    ),
    "distributed.worker.state_machine": ("Async instruction for",),
}


class _DropChatter(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_own_worker() -> None:
    """In a worker process of a cluster crrxr started: ignore SIGINT (a terminal's Ctrl-C reaches
    the whole process group; the driver stops the build and closes the cluster) and drop the
    worker log records that duplicate the driver's one-line error (tracebacks, cancellations)."""
    import signal

    for name, prefixes in _WORKER_CHATTER.items():
        logging.getLogger(name).addFilter(_DropChatter(prefixes))
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread of the worker process: leave it
        log.debug("worker SIGINT handler not changed (not the main thread)")


def _executing_keys(dask_worker) -> list:
    """Keys of the tasks a worker is executing now (run on each worker by ``Client.run``)."""
    state = dask_worker.state
    return [ts.key for ts in (*state.executing, *state.long_running)]


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

    def _start(self) -> None:
        from distributed import Client, LocalCluster

        from crrxr.executors.worker_plugin import WorkerStart

        if self.address:
            self.client = Client(self.address)
            self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
            # the user's own workers outlive this build: BLAS threads only, no parent-death signal
            self.client.register_plugin(WorkerStart(with_parent=False), name="crrxr-worker-start")
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
                    dashboard_address="127.0.0.1:0",  # loopback only, a free port
                    memory_limit=self.memory_limit if self.memory_limit else "auto",
                    silence_logs=logging.WARNING,  # keep memory warnings and worker restarts visible
                )
                self.client = Client(self.cluster)
                self.client.register_plugin(WorkerStart(), name="crrxr-worker-start")
            except BaseException:
                self._close()  # no `with` exit follows a failed start: undo the above here
                raise

    def _close(self) -> None:
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
        stop: threading.Event | None = None,
    ) -> list[Any]:
        from distributed import as_completed
        from distributed import progress as dist_progress

        if self.client is None:
            raise RuntimeError("DistributedExecutor.compute before start() / its `with` block")
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
        while True:  # never makes the scheduler recompute chunks already written
            if stop is not None and stop.is_set():  # abandon the rest: unmarked chunks rerun
                raise Interrupted(self._stop_pending(pending))
            batch = pending.next_batch(block=False)  # poll: a stop is seen within POLL_SECONDS
            if not batch:
                if pending.is_empty():
                    return results
                time.sleep(POLL_SECONDS)
                continue
            for fut in batch:
                result = fut.result()  # raises the task's error here
                results[position[fut.key]] = result
                fut.release()
                if plog is not None:
                    plog.advance()
                if on_result is not None:
                    on_result(result)

    def _stop_pending(self, pending) -> list:
        """Cancel the tasks not yet collected; the keys of those already running (their chunks
        get the grace time to write their ledger marks: a worker thread cannot be stopped)."""
        try:
            running = [k for keys in self.client.run(_executing_keys).values() for k in keys]
        except Exception:  # noqa: BLE001 - scheduler gone: nothing is known to be running
            running = []
        self.client.cancel(list(pending.futures))
        return running

    def describe(self) -> str:
        where = self.address or "LocalCluster on 127.0.0.1"
        return f"distributed ({self.workers} workers, {where})"
