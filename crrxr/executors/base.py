"""The executor interface: run a list of dask tasks (one per wavelength chunk) somewhere.

An executor is a context manager (it may start a cluster on enter and stops it on exit) with one
method, :meth:`Executor.compute`, that runs the tasks and returns their results in order. The plan
and the per-chunk function are the same under every executor; later executors (Ray, SLURM) add a
subclass, nothing else.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TextIO


def available_cores() -> int:
    """Cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Functions run once in every worker process when it starts (before any task), in order; each is a
#: module-level function (picklable by reference) taking no arguments. Executors that start worker
#: processes call :func:`worker_start`; in-process executors (threads) run nothing.
WORKER_START_HOOKS: list[Callable[[], None]] = []


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG), so a
    worker never outlives the build that started it (a killed driver leaves no orphan writing)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl: do not run orphaned
        os._exit(1)


def worker_start() -> None:
    """Start-up of a worker process: die with the parent, then :data:`WORKER_START_HOOKS`."""
    die_with_parent()
    for hook in WORKER_START_HOOKS:
        hook()


#: Seconds a stopped build gives the chunks already running to finish before abandoning them.
GRACE_SECONDS = 30.0


class Interrupted(Exception):
    """``compute`` stopped because its ``stop`` event was set: no new task was started after it.
    ``running``: keys of tasks that had started and may still be finishing (local threads/processes)."""

    def __init__(self, running: Sequence[Any] = ()):
        super().__init__("stopped on request")
        self.running = list(running)


class ProgressLog:
    """Plain progress lines for a non-terminal: at most one every ``interval`` seconds, and the last."""

    def __init__(
        self,
        total: int,
        label: str = "chunks",
        interval: float = 10.0,
        stream: TextIO | None = None,
    ):
        self.total = total
        self.label = label
        self.interval = interval
        self.stream = stream or sys.stderr
        self.done = 0
        self.t0 = time.monotonic()
        self._last = self.t0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.interval or self.done == self.total:
            self._last = now
            pct = 100.0 * self.done / max(self.total, 1)
            print(
                f"crrxr: {self.done}/{self.total} {self.label} done ({pct:.0f}%, "
                f"{now - self.t0:.1f} s)",
                file=self.stream,
                flush=True,
            )


class Executor(ABC):
    """Runs dask delayed tasks; ``with executor: executor.compute(tasks, progress=...)``."""

    #: short name shown in the plan and the summary
    name: str = "executor"

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self.started = False

    def start(self) -> Executor:
        """Start what the executor needs (a cluster, a connection); idempotent. Whoever calls
        ``start`` (or enters ``with``) owns the executor and closes it."""
        if not self.started:
            self._start()
            self.started = True
        return self

    def _start(self) -> None:
        """Subclasses start their cluster here; nothing by default."""
        return None

    def __enter__(self) -> Executor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release whatever was started (clusters, pools); idempotent."""
        if self.started:
            self._close()
            self.started = False

    def _close(self) -> None:
        return None

    def worker_pids(self) -> list[int]:
        """Pids of worker processes on this host that the executor knows of (none by default)."""
        return []

    @abstractmethod
    def compute(
        self,
        tasks: Sequence[Any],
        *,
        progress: str = "off",
        on_result: Callable[[Any], None] | None = None,
        stop: threading.Event | None = None,
    ) -> list[Any]:
        """Run ``tasks`` (dask Delayed) and return their results in order.

        ``progress``: ``"bar"`` (a progress bar, for a terminal), ``"log"`` (periodic lines) or
        ``"off"``. ``stop``: once set, no further task starts and :class:`Interrupted` is raised.
        """

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"
