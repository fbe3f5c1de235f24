"""Issue #10, "Clear errors, not tracebacks": the error paths of a running build, reproduced with
real ``crrxr build`` subprocesses (the input store moved away mid-build, a task error under
``--scheduler distributed``, Ctrl-C under distributed). Each ends in a short message, the right
exit status, no leftover lease/worker/scratch folder, and a store that ``--resume`` finishes into
the same cube, bit for bit, as an uninterrupted build."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import xarray as xr
import zarr
from rss_fixtures import write_rss
from test_engine_safety import CRRXR, assert_same_cube, crrxr

from crrxr.engine.lock import lease_path
from crrxr.io import cube as C

N_WAVE = 16  # the RSS is stored in wavelength chunks of 8 channels (rss_fixtures.write_rss)


@pytest.fixture(scope="module")
def rss(tmp_path_factory) -> Path:
    return Path(write_rss(tmp_path_factory.mktemp("rss") / "rss.zarr", n_wave=N_WAVE, n_exp=3))


@pytest.fixture(scope="module")
def reference(rss, tmp_path_factory) -> xr.Dataset:
    """The uninterrupted build (one channel per chunk, threads), in this process."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    r = crrxr("build", rss, out, "--wave-chunk", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    return xr.open_zarr(out).load()


def copy_rss(rss: Path, tmp_path: Path) -> Path:
    src = tmp_path / "in.zarr"
    shutil.copytree(rss, src)
    return src


def ledger(store: Path) -> np.ndarray | None:
    try:
        return zarr.open_array(str(store), path=C.CHUNK_DONE, mode="r")[:]
    except Exception:  # noqa: BLE001 - the template is not there yet
        return None


def start_build(src: Path, store: Path, scheduler: str, tmp: Path) -> subprocess.Popen:
    """``crrxr build`` as its own process group (a terminal's foreground job), TMPDIR=tmp."""
    cmd = [CRRXR, "build", src, store, "--wave-chunk", "1", "--workers", "1", "--no-progress"]
    cmd += ["--scheduler", scheduler]
    tmp.mkdir(exist_ok=True)
    return subprocess.Popen(
        list(map(str, cmd)),
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
        start_new_session=True,
    )


def wait_for_chunks(store: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        led = ledger(store)
        if led is not None and led.sum() >= n:
            return
        assert proc.poll() is None, "the build ended before the fault: " + proc.stderr.read()
        time.sleep(0.02)
    pytest.fail("no chunk finished in time")


def after_plan(err: str) -> list[str]:
    """stderr lines after the plan (which ends with the executor line)."""
    lines = err.splitlines()
    cut = max((i for i, s in enumerate(lines) if s.startswith("executor:")), default=-1)
    return lines[cut + 1 :]


def assert_clean_end(proc: subprocess.Popen, err: str, store: Path, tmp: Path, workers) -> None:
    """No traceback or worker chatter, lease released, no scratch folder, no worker left."""
    for text in ("Traceback", "Compute Failed", "KeyboardInterrupt", "Async instruction"):
        assert text not in err, err
    assert not lease_path(store).exists()
    assert list(tmp.iterdir()) == [], list(tmp.iterdir())  # crrxr-dask-*, dask-scratch-space
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"left running: {[p.pid for p in alive]}"


def resume_equals_reference(src: Path, store: Path, reference: xr.Dataset) -> None:
    r = crrxr("build", src, store, "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "already done" in r.stderr
    assert crrxr("verify", store).returncode == 0
    assert_same_cube(store, reference)


# ------------------------------------------------------------------ 1. input store moved away


def test_input_store_moved_away_mid_build_is_named_and_resumes(rss, reference, tmp_path):
    src, store, tmp = copy_rss(rss, tmp_path), tmp_path / "cube.zarr", tmp_path / "tmp"
    proc = start_build(src, store, "threads", tmp)
    wait_for_chunks(store, 2, proc)
    moved = tmp_path / "elsewhere.zarr"
    os.rename(src, moved)  # `mv in.zarr elsewhere.zarr` while the build runs
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    tail = after_plan(err)
    assert len(tail) == 1, err  # one line
    assert f"input RSS store {src} is gone" in tail[0] and "--resume" in tail[0], err
    assert "must be finite" not in err and "NaN" not in err
    assert_clean_end(proc, err, store, tmp, [])
    led = ledger(store)
    assert 2 <= led.sum() < N_WAVE  # what was done is kept, nothing after the move is marked
    # every chunk marked done holds real numbers (none was solved from NaN fill values)
    flux = zarr.open_array(str(store), path=C.FLUX, mode="r")[:]
    assert np.isfinite(flux[led.astype(bool)]).any(axis=(1, 2)).all()
    os.rename(moved, src)  # the input is back
    resume_equals_reference(src, store, reference)


def test_input_store_check_names_a_gone_or_unreadable_store(tmp_path):
    """The check a task runs before and after reading its slice: a path that is gone, and a
    folder that is there but holds no readable store root (as root, permissions never refuse)."""
    from crrxr.engine.integrity import InputChunkError, require_input_store

    with pytest.raises(InputChunkError, match=r"input RSS store /nonexistent/x\.zarr is gone"):
        require_input_store("/nonexistent/x.zarr")
    (tmp_path / "half.zarr").mkdir()
    with pytest.raises(InputChunkError, match=r"half\.zarr is unreadable"):
        require_input_store(str(tmp_path / "half.zarr"))


# ------------------------------------------------------------------ 2. task errors, distributed


def _damage_undone_input(src: Path, store: Path, how: str) -> tuple[Path, bytes, int]:
    """Damage the RSS chunk (8 channels) with the most chunks still to solve; returns the file,
    its good bytes and the number of undone cube chunks it feeds."""
    led = ledger(store)
    undone = [int((led[8 * w : 8 * w + 8] == 0).sum()) for w in (0, 1)]
    w = int(np.argmax(undone))
    f = src / ("ivar" if how == "corrupt" else "flux") / "c" / "0" / str(w)
    good = f.read_bytes()
    if how == "corrupt":
        f.write_bytes(good[:-7] + b"garbage")  # undecodable (Zstd)
    else:
        f.unlink()  # deleted after the driver checked every chunk
    return f, good, undone[w]


@pytest.mark.parametrize(
    "how, cause",
    [
        ("corrupt", "Data corruption detected"),
        pytest.param("delete", "'flux' has no stored chunk", marks=pytest.mark.slow),
    ],
)
def test_distributed_task_error_is_one_line_naming_the_chunk(rss, reference, tmp_path, how, cause):
    src, store, tmp = copy_rss(rss, tmp_path), tmp_path / "cube.zarr", tmp_path / "tmp"
    proc = start_build(src, store, "distributed", tmp)
    wait_for_chunks(store, 2, proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    f, good, n_undone = _damage_undone_input(src, store, how)
    assert n_undone > 0
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    tail = after_plan(err)
    assert len(tail) == 1, err
    line = tail[0]
    assert line.startswith("crrxr build: error: chunk "), err
    k = int(line.split("chunk ")[1].split(" ")[0])
    assert f"(channels {k}:{k + 1}) failed" in line and cause in line and str(src) in line, err
    assert ledger(store)[k] == 0  # the failed chunk is not marked done
    assert "--resume" in line
    assert_clean_end(proc, err, store, tmp, workers)
    f.write_bytes(good)  # the input repaired
    resume_equals_reference(src, store, reference)


def test_own_workers_drop_closing_cluster_chatter_and_keep_other_errors():
    """In a worker of a cluster crrxr started, the heartbeat error that races with the cluster's
    close (seen once after a clean Ctrl-C, a traceback in the CLI output) is dropped; any other
    worker error still reaches stderr. Run in a fresh interpreter: the filter is process-wide."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "from crrxr.executors.distributed import quiet_own_worker\n"
        "quiet_own_worker()\n"
        "log = logging.getLogger('distributed.worker')\n"
        "try:\n"
        "    raise OSError('Stream is closed')\n"
        "except OSError:\n"
        "    log.exception('Failed to communicate with scheduler during heartbeat.')\n"
        "log.error('a worker error that matters')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "a worker error that matters" in r.stderr
    assert "heartbeat" not in r.stderr and "Traceback" not in r.stderr, r.stderr


# ------------------------------------------------------------------ 3. Ctrl-C, distributed


@pytest.mark.parametrize(
    "target",
    ["group", pytest.param("driver", marks=pytest.mark.slow)],
)
def test_ctrl_c_under_distributed_is_short_clean_and_resumable(rss, reference, tmp_path, target):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does: the workers get it too)
    or to the driver alone: exit 75 within seconds (not after the 30 s grace), a few lines,
    lease released, no scratch folder, no worker left."""
    src, store, tmp = copy_rss(rss, tmp_path), tmp_path / "cube.zarr", tmp_path / "tmp"
    proc = start_build(src, store, "distributed", tmp)
    wait_for_chunks(store, 2, proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers
    t0 = time.monotonic()
    if target == "group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    seconds = time.monotonic() - t0
    assert proc.returncode == 75, err
    tail = after_plan(err)
    assert len(tail) <= 4 and len(err.splitlines()) <= 15, err  # plan (10 lines) + the message
    assert tail[0].startswith("crrxr build: SIGINT received"), err
    assert "interrupted" in tail[-1] and "--resume" in tail[-1], err
    assert "stopped at once" not in err  # the running chunk ended; no forced stop after grace
    assert seconds < 25, (seconds, err)  # the 30 s grace was not waited out
    assert_clean_end(proc, err, store, tmp, workers)
    assert 2 <= ledger(store).sum() < N_WAVE
    resume_equals_reference(src, store, reference)
