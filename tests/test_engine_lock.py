"""The store lease: a live holder refuses a second build from any host; a dead holder (this host),
an expired heartbeat (another host) or a finished SLURM job makes it stale and it is taken over."""

import json
import os
import socket
import stat
import subprocess
import sys
import time

import psutil
import pytest

from crrxr.engine.lock import StoreLock, StoreLockedError, lease_path, read_lease


def _write_lease(store, **info):
    base = {"pid": 1, "host": socket.gethostname(), "start_time": 0.0, "acquired": "x"}
    lease_path(store).write_text(json.dumps({**base, **info}))


def test_lease_is_exclusive_refreshed_and_released(tmp_path):
    store = tmp_path / "c.zarr"
    with StoreLock(store, ttl=2.0) as lock:
        assert lock.held and lease_path(store).exists() and not store.exists()
        first = read_lease(store)["heartbeat"]
        with pytest.raises(StoreLockedError, match="being built by pid"):
            StoreLock(store).acquire()
        time.sleep(1.3)  # the heartbeat thread refreshes every ttl / 4
        assert read_lease(store)["heartbeat"] > first
    assert not lease_path(store).exists()
    with StoreLock(store):
        pass


def test_stale_lease_of_dead_process_is_taken_over(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    store = tmp_path / "c.zarr"
    _write_lease(store, pid=proc.pid, heartbeat=time.time(), ttl=1e9)
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).create_time() > 1.0
    with StoreLock(store) as lock:
        assert lock.took_over["pid"] == proc.pid
        assert read_lease(store)["pid"] == os.getpid()


def test_lease_of_live_worker_of_a_dead_holder_stays_live(tmp_path):
    """A recorded worker process that still runs keeps the lease live (it may still write)."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store = tmp_path / "c.zarr"
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        ct = psutil.Process(worker.pid).create_time()
        _write_lease(store, pid=dead.pid, workers=[[worker.pid, ct]], heartbeat=0.0)
        with pytest.raises(StoreLockedError, match=str(dead.pid)):
            StoreLock(store).acquire()
    finally:
        worker.kill()
        worker.wait()
    with StoreLock(store) as lock:  # the worker is gone: now stale
        assert lock.took_over["pid"] == dead.pid


def test_other_host_lease_live_until_its_ttl_expires(tmp_path):
    store = tmp_path / "c.zarr"
    _write_lease(store, host="node-b.invalid", pid=4242, heartbeat=time.time(), ttl=60.0)
    with pytest.raises(StoreLockedError, match="node-b.invalid"):
        StoreLock(store).acquire()
    _write_lease(store, host="node-b.invalid", pid=4242, heartbeat=time.time() - 61.0, ttl=60.0)
    with StoreLock(store) as lock:  # a requeued job on this node takes the expired lease over
        assert lock.took_over["host"] == "node-b.invalid"


def test_lease_held_by_live_other_process_refuses_then_is_taken_over(tmp_path):
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
    with StoreLock(store) as lock:  # the killed holder's lease is now stale
        assert lock.took_over["pid"] == proc.pid


def _fake_slurm(tmp_path, state: str) -> dict:
    """``squeue`` answering ``state`` for every job (the SLURM lookups of the lease are plain
    commands on PATH; the real single-node SLURM tests live in tests/test_slurm*.py)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    squeue = bin_dir / "squeue"
    squeue.write_text(f"#!/bin/sh\necho {state}\n")
    squeue.chmod(squeue.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("state, live", [("RUNNING", True), ("TIMEOUT", False)])
def test_slurm_job_state_decides_other_host_lease(tmp_path, monkeypatch, state, live):
    """A lease whose SLURM job is no longer running is stale even with a fresh heartbeat; a
    running job's lease is live even with an old heartbeat."""
    for k, v in _fake_slurm(tmp_path, state).items():
        monkeypatch.setenv(k, v)
    store = tmp_path / "c.zarr"
    beat = time.time() - 1e6 if live else time.time()
    _write_lease(store, host="node-a.invalid", slurm_job_id="777", heartbeat=beat, ttl=60.0)
    if live:
        with pytest.raises(StoreLockedError, match="SLURM job 777"):
            StoreLock(store).acquire()
    else:
        with StoreLock(store) as lock:
            assert lock.took_over["slurm_job_id"] == "777"


def test_lease_records_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    with StoreLock(tmp_path / "c.zarr"):
        assert read_lease(tmp_path / "c.zarr")["slurm_job_id"] == "123"
