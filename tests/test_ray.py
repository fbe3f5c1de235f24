"""Ray (dask-on-ray): the Ray cube equals the threads cube bitwise, a build joins a Ray head started
here (``ray start --head`` on 127.0.0.1, stopped by PID), and a Ray worker killed mid-build is
retried by Ray so the build completes with the same cube."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from cube_checks import assert_same_cube
from rss_fixtures import FAST_PARAMS, write_reuse_rss, write_rss

from crrxr.engine import store as S
from crrxr.engine.build import run_build
from crrxr.executors import ExecutorSettings, make_executor

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

WORKERS = 2  # the same worker count (and so BLAS threads per task) in every build compared


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    """A short RSS (3 chunks) and a long one (24 one-channel chunks), with their threads cubes."""
    d = tmp_path_factory.mktemp("ray")
    short = write_rss(d / "short.zarr", n_wave=11, n_exp=3, dead=[(3, 2), (10, 7)])
    long = write_rss(d / "long.zarr", n_wave=24, n_exp=3, n_fibers=37)
    run_build(short, d / "short-threads.zarr", wave_chunk=4, workers=WORKERS, progress=False)
    run_build(long, d / "long-threads.zarr", wave_chunk=1, workers=WORKERS, progress=False)
    fast = write_reuse_rss(d / "fast.zarr", 130)
    run_build(
        fast, d / "fast-threads.zarr", FAST_PARAMS, wave_chunk=64, workers=WORKERS, progress=False
    )
    return d


def _ray_processes(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _listening(procs: list[psutil.Process]) -> list[tuple[str, int]]:
    """(ip, port) of the TCP sockets these processes listen on."""
    out = []
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except psutil.Error:
            continue
        out += [c.laddr[:2] for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def test_local_ray_cube_equals_threads_and_leaves_nothing(cubes, tmp_path, capfd):
    """A local Ray for the run: same bits as threads; afterwards its temp folder and processes are
    gone and nothing was written under $HOME/.ray (token auth on, token in the environment only)."""
    home_ray = Path.home() / ".ray"
    had_home_ray = home_ray.exists()
    env_before = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    ex = make_executor(ExecutorSettings("ray"), WORKERS, task_memory=50 * 2**20)
    store = tmp_path / "ray.zarr"
    with ex:
        temp_dir = ex.temp_dir
        assert temp_dir and os.path.isdir(temp_dir)
        assert _ray_processes(temp_dir), "the local Ray runs from its private temp folder"
        rep = run_build(
            cubes / "short.zarr", store, wave_chunk=4, executor=ex, workers=WORKERS, progress="log"
        )
        # a fast (weight-reuse) build too: moves, removals and LSF sums inside Ray tasks
        run_build(
            cubes / "fast.zarr",
            tmp_path / "ray-fast.zarr",
            FAST_PARAMS,
            wave_chunk=64,
            executor=ex,
            workers=WORKERS,
            progress=False,
        )
        # the executor belongs to this test: run_build did not shut Ray down
        import ray

        assert ray.is_initialized()
        # every server of the local Ray (GCS, raylet, workers, agents) listens on loopback only,
        # and token auth refuses a client without the run's token
        procs = {*_ray_processes(temp_dir), *psutil.Process().children(recursive=True)}
        names = {p.name() for p in procs}
        assert {"gcs_server", "raylet"} <= names, names
        listening = [(p.name(), addr) for p in procs for addr in _listening([p])]
        assert {n for n, _ in listening} >= {"gcs_server", "raylet"}, listening
        wide = [(n, a) for n, a in listening if a[0] not in ("127.0.0.1", "::ffff:127.0.0.1")]
        assert not wide, wide
        gcs = ray.get_runtime_context().gcs_address
        probe = subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address={gcs!r})"],
            env=dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert probe.returncode != 0
        assert "auth" in (probe.stdout + probe.stderr).lower()
    assert rep.chunks_solved == 3 and "ray" in rep.executor
    assert "3/3 chunks done" in capfd.readouterr().err  # progress from Ray's dask callback
    assert_same_cube(cubes / "short-threads.zarr", store)
    assert_same_cube(cubes / "fast-threads.zarr", tmp_path / "ray-fast.zarr")
    assert not os.path.exists(temp_dir)
    deadline = time.monotonic() + 20
    while _ray_processes(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ray_processes(temp_dir)
    assert home_ray.exists() == had_home_ray
    assert {k: os.environ.get(k) for k in env_before} == env_before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head --block`` on 127.0.0.1 (2 CPUs, no dashboard, auth disabled: a test
    cluster reachable only from this host); stopped by its PID, which takes its daemons down."""
    temp = tmp_path_factory.mktemp("rayhead")
    short_temp = Path(f"/tmp/crrxr-rayhead-{os.getpid()}")  # unix socket paths must stay short
    short_temp.mkdir()
    port = _free_port()
    # Ray maps --node-ip-address=127.0.0.1 to the machine's IP (and its servers then listen on all
    # interfaces) unless this single-machine switch is off: see crrxr.executors.ray
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_ADDRESS", None)
    ray_bin = Path(sys.executable).with_name("ray")
    log = open(temp / "ray-head.log", "w")
    proc = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={short_temp}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (temp / "ray-head.log").read_text()
            if _ray_processes(str(short_temp)) and _port_open(port):
                break
            time.sleep(0.5)
        else:
            pytest.fail("ray start --head did not come up in 90 s")
        old = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = "disabled"
        yield address, short_temp
    finally:
        proc.send_signal(signal.SIGTERM)  # --block: ray start stops every process it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for p in _ray_processes(str(short_temp)):  # never leave a daemon behind
            p.kill()
        log.close()
        shutil.rmtree(short_temp, ignore_errors=True)
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_build_joins_existing_ray_head(cubes, ray_head, tmp_path):
    """``--scheduler ray --ray-address`` on the CLI joins the head and leaves it running."""
    from crrxr.cli import main

    address, temp = ray_head
    store = tmp_path / "joined.zarr"
    args = ["build", str(cubes / "short.zarr"), str(store), "--wave-chunk=4"]
    args += ["--scheduler=ray", f"--ray-address={address}", f"--workers={WORKERS}"]
    assert main(args) == 0
    assert_same_cube(cubes / "short-threads.zarr", store)
    assert "executor=ray" in S.read_attrs(store)["history"]
    import ray

    assert not ray.is_initialized()  # our connection closed ...
    assert _ray_processes(str(temp))  # ... the cluster still runs
    head = _listening(_ray_processes(str(temp)))  # the test head too listens on loopback only
    assert head and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip, _ in head), head


def test_killed_ray_worker_is_retried(cubes, ray_head, tmp_path):
    """SIGKILL to the Ray worker process running a chunk (not the driver): Ray retries the task and
    the build completes with the threads cube."""
    address, temp = ray_head
    store = tmp_path / "killed.zarr"
    box: dict = {}

    def build():
        try:
            box["report"] = run_build(
                cubes / "long.zarr",
                store,
                wave_chunk=1,
                scheduler=ExecutorSettings("ray", ray_address=address),
                workers=WORKERS,
                progress=False,
            )
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc

    t = threading.Thread(target=build)
    t.start()
    killed = None
    deadline = time.monotonic() + 120
    while t.is_alive() and time.monotonic() < deadline and killed is None:
        if S.store_exists(store) and 1 <= int(S.read_ledger(store).sum()) < 20:
            busy = [
                p
                for p in _ray_processes("ray::")
                if p.info["cmdline"][0].startswith("ray::")
                and "IDLE" not in p.info["cmdline"][0]
                and p.pid != os.getpid()
            ]
            workers = [p for p in busy if "dask" in p.info["cmdline"][0].lower()]
            if workers:
                killed = (workers[0].pid, workers[0].info["cmdline"][0])
                workers[0].send_signal(signal.SIGKILL)
        time.sleep(0.05)
    t.join(timeout=180)
    assert killed is not None, "no Ray worker running a chunk was found to kill"
    assert "error" not in box, box.get("error")
    assert box["report"].chunks_solved == 24
    assert int(S.read_ledger(store).sum()) == 24
    assert_same_cube(cubes / "long-threads.zarr", store)
