"""The store lock: a live holder refuses a second build, a dead holder's lock is taken over."""

import json
import socket
import subprocess
import sys

import psutil
import pytest

from crrxr.engine.lock import LOCK_NAME, StoreLock, StoreLockedError


def test_lock_is_exclusive_and_released(tmp_path):
    with StoreLock(tmp_path / "c.zarr") as lock:
        info = json.loads(lock.path.read_text())
        assert info["pid"] > 0 and info["host"] == socket.gethostname()
        with pytest.raises(StoreLockedError, match="being built by pid"):
            StoreLock(tmp_path / "c.zarr").acquire()
    assert not (tmp_path / "c.zarr" / LOCK_NAME).exists()
    with StoreLock(tmp_path / "c.zarr"):
        pass


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    born = psutil.Process(proc.pid).create_time()
    proc.wait()
    store = tmp_path / "c.zarr"
    store.mkdir()
    (store / LOCK_NAME).write_text(
        json.dumps(
            {"pid": proc.pid, "host": socket.gethostname(), "start_time": 0.0, "acquired": "x"}
        )
    )
    # the recorded process is gone: its pid is free or belongs to a newer process
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).create_time() != born
    with StoreLock(store) as lock:
        assert lock.took_over["pid"] == proc.pid


def test_lock_held_by_live_other_process_refuses(tmp_path):
    store = tmp_path / "c.zarr"
    code = (
        "import sys, time; from crrxr.engine.lock import StoreLock; "
        f"l = StoreLock({str(store)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match=str(proc.pid)):
            StoreLock(store).acquire()
    finally:
        proc.kill()
        proc.wait()
    with StoreLock(store) as lock:  # the killed holder's lock is now stale
        assert lock.took_over["pid"] == proc.pid
