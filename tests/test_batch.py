"""``crrxr status`` from the stores themselves, the survey manifest, the job script of
``crrxr submit --dry-run`` and the SLURM site settings (no SLURM needed here)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import zarr
from rss_fixtures import write_rss

from crrxr.batch.manifest import plan_manifest, store_name
from crrxr.batch.status import find_stores, store_status
from crrxr.batch.submit import array_spec, signal_margin
from crrxr.cli import main
from crrxr.engine import store as S
from crrxr.engine.build import run_build
from crrxr.engine.lock import lease_path
from crrxr.executors import SlurmSettings
from crrxr.executors.options import add_executor_options, slurm_settings
from crrxr.executors.slurm import (
    WORKER_MEMORY_FRACTION,
    SlurmExecutor,
    lifetime_args,
    parse_walltime,
    size_jobs,
)
from crrxr.io import cube as C


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    rss = write_rss(d / "a.zarr", n_wave=11, n_exp=2)
    store = d / "a.cube.zarr"
    run_build(rss, store, wave_chunk=4, workers=1, progress=False)
    return d, rss, store


def _copy(src, dst) -> str:
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def test_status_states_from_the_store(built, tmp_path):
    d, _, store = built
    st = store_status(store)
    assert (st.state, st.chunks_done, st.chunks_total) == ("complete", 3, 3)
    # a chunk unmarked in the ledger: partial, 2 of 3
    part = _copy(store, tmp_path / "part.zarr")
    zarr.open_array(part, path=C.CHUNK_DONE, mode="r+")[1] = 0
    st = store_status(part)
    assert (st.state, st.chunks_done, st.chunks_total) == ("partial", 2, 3)
    # every chunk done but the finish step not run (no consolidated metadata): unfinished
    unfinished = _copy(store, tmp_path / "unfinished.zarr")
    S.drop_consolidated(unfinished)
    assert store_status(unfinished).state == "unfinished"
    # failed channels as recorded in the store
    failed = _copy(store, tmp_path / "failed.zarr")
    zarr.open_array(failed, path=C.CHANNEL_FAILED, mode="r+")[5] = 1
    assert store_status(failed).failed_channels == [5]
    # nothing there / something crrxr did not write
    assert store_status(tmp_path / "none.zarr").state == "not started"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    assert store_status(tmp_path / "foreign").state == "not a cube"


def test_status_running_names_the_live_holder(built, tmp_path):
    _, _, store = built
    part = _copy(store, tmp_path / "run.zarr")
    zarr.open_array(part, path=C.CHUNK_DONE, mode="r+")[2] = 0
    me = __import__("psutil").Process()
    lease = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_time": me.create_time(),
        "heartbeat": time.time(),
        "ttl": 120,
        "slurm_job_id": "77_3",
    }
    lease_path(part).write_text(json.dumps(lease))
    st = store_status(part)
    assert st.state == "running" and st.chunks_done == 2
    assert f"pid {os.getpid()}" in st.where and "SLURM job 77_3" in st.where
    # the same lease from a dead process on this host is stale: the store is partial again
    lease["pid"] = 2**22 + 12345
    lease_path(part).write_text(json.dumps(lease))
    assert store_status(part).state == "partial"


def test_status_cli_totals(built, tmp_path, capsys):
    d, _, store = built
    part = _copy(store, tmp_path / "p.zarr")
    zarr.open_array(part, path=C.CHUNK_DONE, mode="r+")[0] = 0
    assert main(["status", str(store), part]) == 0
    out = capsys.readouterr().out
    assert "total: 2 IFU(s): 1 complete, 1 partial; 5/6 chunks" in out
    # a folder of stores
    assert find_stores([str(tmp_path)]) == [part]
    assert main(["status", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_manifest_appends_and_refuses_name_clashes(tmp_path):
    (tmp_path / "x").mkdir()
    a = write_rss(tmp_path / "a.zarr", n_wave=3, n_exp=1)
    b = write_rss(tmp_path / "x" / "b.zarr", n_wave=3, n_exp=1)
    out = tmp_path / "out"
    entries, new = plan_manifest(out, [a])
    assert [(e.index, e.store) for e in new] == [(0, str(out / "a.cube.zarr"))]
    out.mkdir()
    from crrxr.batch.manifest import append_manifest

    append_manifest(out, new)
    entries, new = plan_manifest(out, [b, a])  # a is known: keeps index 0, b appended as 1
    assert [(e.index, os.path.basename(e.rss)) for e in entries] == [(0, "a.zarr"), (1, "b.zarr")]
    assert [e.index for e in new] == [1]
    clash = write_rss(tmp_path / "x" / "a.zarr", n_wave=3, n_exp=1)
    with pytest.raises(ValueError, match="would both write"):
        plan_manifest(out, [clash])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_manifest(out, [str(tmp_path / "nope.zarr")])
    assert store_name("/d/manga-1-2-LOGRSS.zarr/") == "manga-1-2-LOGRSS.cube.zarr"


@pytest.mark.parametrize(
    "indexes, k, spec",
    [([0, 1, 2], None, "0-2"), ([5, 0, 1, 3, 9, 10], 4, "0-1,3,5,9-10%4"), ([7], None, "7")],
)
def test_array_spec(indexes, k, spec):
    assert array_spec(indexes, k) == spec


def test_submit_dry_run_prints_the_script_and_writes_nothing(built, tmp_path, capsys):
    d, rss, _ = built
    out = tmp_path / "survey"
    profile = tmp_path / "site.yaml"
    profile.write_text(
        "slurm:\n  partition: short\n  account: astro\n  walltime: '02:00:00'\n  cores: 2\n"
        "  job-directives: ['--qos=normal']\n  env-setup: ['module load python']\n"
    )
    code = main(
        ["submit", rss, f"--out={out}", "--dry-run", "--max-concurrent=5"]
        + [f"--slurm-profile={profile}", "--set", "crr.lambda=1e-3", "--wave-chunk=4"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert not out.exists()  # a dry run writes nothing
    for line in [
        "#SBATCH --array=0%5",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@600",  # 10% of 2 h, at most 10 min
        "#SBATCH --partition=short",
        "#SBATCH --account=astro",
        "#SBATCH --time=02:00:00",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --qos=normal",
        "module load python",
        "--resume --set=crr.lambda=1e-3 --wave-chunk=4 --workers=2",
        f"# 0\tsubmit\t{os.path.abspath(rss)}\t{out / 'a.cube.zarr'}",
    ]:
        assert line in text, line
    assert "--partition=short --" not in text.split("crrxr.cli build")[1]  # site flags stay out
    # the default --mem: 2 workers x the planner's 2 GB budget over the worker fraction
    mem = int(text.split("#SBATCH --mem=")[1].split("M")[0])
    assert mem == int(2 * 2e9 / WORKER_MEMORY_FRACTION) // 2**20


def test_submit_refuses_slurm_inside_slurm(built, tmp_path, capsys):
    _, rss, _ = built
    assert main(["submit", rss, f"--out={tmp_path}", "--scheduler=slurm", "--dry-run"]) == 1
    assert "drop --scheduler slurm" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, seconds",
    [("30", 1800), ("1:30", 90), ("02:00:00", 7200), ("1-12", 129600), ("2-00:30:00", 174600)],
)
def test_parse_walltime(text, seconds):
    assert parse_walltime(text) == seconds


def test_lifetime_retires_before_the_walltime():
    assert lifetime_args("01:00:00") == ["--lifetime", "3240s", "--lifetime-stagger", "180s"]
    assert lifetime_args("00:02:00") == ["--lifetime", "60s", "--lifetime-stagger", "30s"]
    assert signal_margin(SlurmSettings(walltime="10:00:00")) == 600
    with pytest.raises(ValueError, match="time limit"):
        SlurmSettings.from_mapping({"walltime": "soon"})


def test_worker_memory_limit_sits_below_the_job_memory():
    n_jobs, job_mem, limit = size_jobs(SlurmSettings(processes=2), workers=3, worker_memory=2**30)
    assert n_jobs == 2  # 3 workers, 2 per job
    assert 2 * limit < job_mem and 2 * limit >= 2 * 2**30 * 0.99
    _, job_mem, limit = size_jobs(SlurmSettings(memory="8GB"), workers=1, worker_memory=None)
    assert job_mem == 8_000_000_000 and limit == int(8e9 * WORKER_MEMORY_FRACTION)
    ex = SlurmExecutor(
        2, memory_limit=2**30, settings=SlurmSettings(interface="lo", walltime="01:00:00")
    )
    kw = ex.cluster_kwargs()
    assert kw["job_mem"] == f"{ex.job_memory // 2**20}M"
    assert kw["memory"] == f"{ex.worker_memory}B" and ex.worker_memory < ex.job_memory
    assert kw["worker_extra_args"][:2] == ["--lifetime", "3240s"]
    assert kw["scheduler_options"] == {"dashboard_address": "127.0.0.1:0", "host": "127.0.0.1"}


def test_slurm_settings_profile_and_flags(tmp_path):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--scheduler", default="slurm")
    add_executor_options(p)
    prof = tmp_path / "site.yaml"
    prof.write_text("partition: long\ncores: 4\nqueue_typo: x\n")
    with pytest.raises(ValueError, match="unknown SLURM setting 'queue_typo'"):
        slurm_settings(p.parse_args([f"--slurm-profile={prof}"]))
    prof.write_text("partition: long\ncores: 4\nenv_setup: source /opt/env.sh\n")
    s = slurm_settings(p.parse_args([f"--slurm-profile={prof}", "--job-cores=8", "--account=a"]))
    assert (s.partition, s.cores, s.account, s.env_setup) == (
        "long",
        8,
        "a",
        ("source /opt/env.sh",),
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        slurm_settings(p.parse_args(["--slurm-profile=/nope.yaml"]))
