"""The build lease of a cube store: one build per store at a time, from any host.

The lease is a small JSON file next to the store (``.<store name>.crrxr-lease`` in the same folder,
so the store itself can be written under a temporary name and renamed into place). It records the
holder (host, pid, process start time, the pids of its worker processes, and the SLURM job id when
it runs inside one), a random token, and a heartbeat time that a thread of the holder refreshes every
``ttl / 4`` seconds. A lease is *stale*, and taken over, when

- its holder runs on this host and neither it nor any recorded worker process is alive, or
- it records a SLURM job that ``squeue`` no longer lists as pending/running (``sacct`` as a fallback),
- or, on another host, its heartbeat is older than its TTL (the holder died or lost the filesystem).

Otherwise the second build is refused with a message naming the holder. Take-over renames the stale
file aside atomically, so of several contenders exactly one wins.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

LEASE_SUFFIX = ".crrxr-lease"
#: Seconds after the last heartbeat at which a lease on another host is stale (env CRRXR_LEASE_TTL).
DEFAULT_TTL = 120.0
#: SLURM job states in which the job may still be writing.
SLURM_LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"}


class StoreLockedError(FileExistsError):
    """Another live build holds the store."""


def lease_path(store: str | os.PathLike) -> Path:
    """Where the lease of ``store`` lives: ``<parent>/.<name>.crrxr-lease``."""
    p = Path(os.path.abspath(store))
    return p.with_name(f".{p.name}{LEASE_SUFFIX}")


def read_lease(store: str | os.PathLike) -> dict | None:
    """The lease record of ``store`` (pid, host, slurm_job_id, heartbeat, ttl, ...) or None."""
    return _read(lease_path(store)) or None


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _proc_alive(pid: int, start_time: float) -> bool:
    if pid <= 0 or not psutil.pid_exists(pid):
        return False
    try:  # a recycled pid started after the lease was written is not the holder
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and p.create_time() <= start_time + 1.0
    except psutil.Error:
        return False


def slurm_job_live(job_id: str) -> bool | None:
    """True/False from ``squeue`` (then ``sacct``) for a SLURM job id; None when neither answers."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", str(job_id), "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode == 0:
            states = {s.strip() for s in out.stdout.split()}
            if states:
                return bool(states & SLURM_LIVE_STATES)
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode == 0 and out.stdout.strip():
            states = {s.split()[0] for s in out.stdout.split("\n") if s.strip()}
            return bool(states & SLURM_LIVE_STATES)
    except (OSError, subprocess.TimeoutExpired):
        pass
    return None


def holder_alive(info: dict, now: float | None = None) -> bool:
    """Whether the lease ``info`` belongs to a build that may still be writing (see module doc)."""
    now = time.time() if now is None else now
    if info.get("host") == socket.gethostname():
        procs = [(info.get("pid", -1), info.get("start_time", 0))] + list(info.get("workers", []))
        return any(_proc_alive(int(p), float(t)) for p, t in procs)
    job = info.get("slurm_job_id")
    if job:
        live = slurm_job_live(str(job))
        if live is not None:
            return live
    return now - float(info.get("heartbeat", 0)) <= float(info.get("ttl", DEFAULT_TTL))


def _ttl() -> float:
    try:
        return float(os.environ.get("CRRXR_LEASE_TTL", DEFAULT_TTL))
    except ValueError:
        return DEFAULT_TTL


def _slurm_job_id() -> str | None:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


class StoreLock:
    """``with StoreLock(store): ...`` holds the lease of ``store`` for the block, refreshing it."""

    def __init__(self, store: str | os.PathLike, ttl: float | None = None):
        self.store = Path(store)
        self.path = lease_path(store)
        self.ttl = _ttl() if ttl is None else float(ttl)
        self.held = False
        self.took_over: dict | None = None
        self.token = uuid.uuid4().hex
        self._started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    def _info(self) -> dict:
        me = psutil.Process()
        workers = []
        with contextlib.suppress(psutil.Error):
            for c in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    workers.append([c.pid, c.create_time()])
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_time": me.create_time(),
            "acquired": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._started)),
            "heartbeat": time.time(),
            "ttl": self.ttl,
            "slurm_job_id": _slurm_job_id(),
            "workers": workers,
            "token": self.token,
        }

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(self._info(), fh)
        return True

    def refresh(self) -> None:
        """Rewrite the heartbeat (and the worker pids) if this lease is still ours."""
        with self._write_lock:
            if not self.held or _read(self.path).get("token") != self.token:
                return
            tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
            tmp.write_text(json.dumps(self._info()))
            os.replace(tmp, self.path)

    def _beat(self) -> None:
        while not self._stop.wait(max(0.5, self.ttl / 4)):
            try:
                self.refresh()
            except OSError as exc:  # a flaky filesystem must not kill the build
                log.warning("could not refresh the lease %s: %s", self.path, exc)

    def acquire(self) -> StoreLock:
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"output folder {self.path.parent} does not exist; create it first"
            )
        for _ in range(3):
            if self._try_create():
                self.held = True
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, name="crrxr-lease", daemon=True)
                self._thread.start()
                return self
            info = _read(self.path)
            if not info:  # being written right now, or unreadable: look again shortly
                time.sleep(0.2)
                info = _read(self.path)
            if info and holder_alive(info):
                job = f", SLURM job {info['slurm_job_id']}" if info.get("slurm_job_id") else ""
                raise StoreLockedError(
                    f"{self.store} is being built by pid {info.get('pid')} on {info.get('host')}"
                    f"{job} (since {info.get('acquired')}); wait for it to finish, or if that "
                    f"process is gone for good remove {self.path}"
                )
            stale = self.path.with_name(f"{self.path.name}.stale.{self.token}")
            try:
                os.rename(self.path, stale)
            except FileNotFoundError:
                continue
            stale.unlink(missing_ok=True)
            self.took_over = info
        raise StoreLockedError(
            f"could not take the lease {self.path}; another build is contending for it"
        )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        with self._write_lock:
            if self.held:
                if _read(self.path).get("token") == self.token:
                    self.path.unlink(missing_ok=True)
                self.held = False

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


#: Kept for readers of older stores: the in-store lock file name of crrxr before the lease.
LOCK_NAME = ".crrxr-build.lock"

__all__ = [
    "StoreLock",
    "StoreLockedError",
    "lease_path",
    "read_lease",
    "holder_alive",
    "slurm_job_live",
    "LEASE_SUFFIX",
]
