"""Peak memory of a build: resident memory of this process and its children, sampled in a thread."""

from __future__ import annotations

import resource
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import psutil


def tree_rss(pids: Callable[[], list[int]] | None = None) -> tuple[int, int]:
    """(total, largest single process) resident bytes of this process, its children (local workers,
    cluster processes) and ``pids()``."""
    me = psutil.Process()
    procs = {me.pid: me}
    try:
        for child in me.children(recursive=True):
            procs[child.pid] = child
    except psutil.Error:
        pass
    if pids is not None:
        for pid in pids():
            if pid not in procs:
                try:
                    procs[pid] = psutil.Process(pid)
                except psutil.Error:
                    pass
    total = largest = 0
    for p in procs.values():
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


class PeakMemory:
    """``with PeakMemory() as pm: ...``; ``pm.peak`` is the largest sampled total of :func:`tree_rss`
    (bytes), ``pm.peak_process`` the largest single process seen."""

    def __init__(self, interval: float = 0.1, pids: Callable[[], list[int]] | None = None):
        self.interval = interval
        self.pids = pids
        self.peak = 0
        self.peak_process = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        total, largest = tree_rss(self.pids)
        self.peak = max(self.peak, total)
        self.peak_process = max(self.peak_process, largest)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="crrxr-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def worker_peak_rss() -> int:
    """Peak resident memory (bytes) of the calling process so far: measured inside a worker."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def blas_threads_in_effect() -> int:
    """Threads the BLAS/OpenMP pools of the calling process use right now (max over libraries)."""
    from threadpoolctl import threadpool_info

    return max((int(i.get("num_threads", 0)) for i in threadpool_info()), default=0)


def worker_metrics(results: Sequence[Any]) -> dict[str, int]:
    """``peak_rss`` (largest worker peak, bytes) and ``blas_threads`` (max) over chunk results that
    carry them (measured where the tasks ran, see :func:`worker_peak_rss`)."""
    return {
        "peak_rss": max((int(getattr(r, "peak_rss", 0)) for r in results), default=0),
        "blas_threads": max((int(getattr(r, "blas_threads", 0)) for r in results), default=0),
    }
