"""Peak memory of a build: resident memory of this process and its children, sampled in a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

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
