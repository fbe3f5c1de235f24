"""A lock file inside the cube store: one build per store at a time.

The file holds the holder's pid, hostname and start time (JSON). A lock whose holder is a dead
process on this host is stale and taken over; a live holder (or one on another host, which cannot
be checked) makes the second build fail with a message naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import psutil

LOCK_NAME = ".crrxr-build.lock"


class StoreLockedError(FileExistsError):
    """Another build holds the store."""


def _holder_alive(info: dict) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # cannot check a process on another host: assume it runs
    pid = int(info.get("pid", -1))
    if pid <= 0 or not psutil.pid_exists(pid):
        return False
    try:  # a recycled pid started after the lock was written is not the holder
        return psutil.Process(pid).create_time() <= float(info.get("start_time", 0)) + 1.0
    except psutil.Error:
        return False


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class StoreLock:
    """``with StoreLock(store): ...`` holds ``store/.crrxr-build.lock`` for the block."""

    def __init__(self, store: str | os.PathLike):
        self.store = Path(store)
        self.path = self.store / LOCK_NAME
        self.held = False
        self.took_over: dict | None = None

    def _try_create(self) -> bool:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_time": psutil.Process().create_time(),
            "acquired": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        return True

    def acquire(self) -> StoreLock:
        self.store.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                self.held = True
                return self
            info = _read(self.path)
            if not info:  # being written right now, or unreadable: look again shortly
                time.sleep(0.2)
                info = _read(self.path)
            if info and _holder_alive(info):
                raise StoreLockedError(
                    f"{self.store} is being built by pid {info.get('pid')} on {info.get('host')} "
                    f"(since {info.get('acquired')}); wait for it to finish, or if that process is gone "
                    f"for good remove {self.path}"
                )
            # Stale: move it aside atomically so that only one contender takes it over.
            stale = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
            try:
                os.rename(self.path, stale)
            except FileNotFoundError:
                continue
            stale.unlink(missing_ok=True)
            self.took_over = info
        raise StoreLockedError(
            f"could not take the lock {self.path}; another build is contending for it"
        )

    def release(self) -> None:
        if self.held:
            info = _read(self.path)
            if info.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
