"""A real single-node SLURM (scripts/slurm.sh, started once for this module, torn down by PID):
a SLURMCluster build equals the threads build bitwise; ``crrxr submit`` of three RSS stores as one
array completes them all; a job scancelled mid-build and resubmitted resumes only the missing
chunks; a job signalled with SIGUSR1 (what ``--signal=B:USR1@...`` sends before the time limit)
requeues itself and resumes; a bad partition is a clear error within 30 s."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from cube_checks import assert_same_cube
from rss_fixtures import FAST_PARAMS, write_reuse_rss, write_rss

from crrxr.batch.manifest import read_manifest
from crrxr.batch.status import store_status
from crrxr.cli import main
from crrxr.engine import store as S
from crrxr.engine.build import run_build
from crrxr.executors import ClusterStartError, ExecutorSettings, SlurmSettings

pytestmark = pytest.mark.slurm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm.sh"
WORKERS = 2


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A private SLURM cluster for this module; skips (with the reason) where none can run."""
    check = subprocess.run(["bash", str(SCRIPT), "check"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"no SLURM here: {check.stdout.strip() or check.stderr.strip()}")
    folder = tmp_path_factory.mktemp("slurm")
    up = subprocess.run(
        ["bash", str(SCRIPT), "up", str(folder)], capture_output=True, text=True, timeout=600
    )
    if up.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down", str(folder)], capture_output=True)
        pytest.fail(f"scripts/slurm.sh up failed:\n{up.stderr}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    try:
        yield folder
    finally:
        subprocess.run(["bash", str(SCRIPT), "down", str(folder)], capture_output=True, timeout=120)
        for name in ("slurmctld.pid", "slurmd.pid", "munge/munged.pid"):
            assert not (folder / name).exists()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def squeue(*args: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, check=True)
    return [ln for ln in out.stdout.splitlines() if ln.strip()]


def wait_until(predicate, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """Three short RSS stores (3 chunks each) and a long one (24 one-channel chunks), with threads
    references built with the same worker count as the SLURM builds."""
    d = tmp_path_factory.mktemp("survey")
    rss = [write_rss(d / f"ifu{i}.zarr", n_wave=11, n_exp=3, seed=10 + i) for i in range(3)]
    long = write_rss(d / "long.zarr", n_wave=24, n_exp=3, n_fibers=37)
    refs = {}
    for path, chunk in [(p, 4) for p in rss] + [(long, 1)]:
        ref = d / f"{Path(path).stem}.threads.zarr"
        run_build(path, ref, wave_chunk=chunk, workers=1, progress=False)
        refs[path] = ref
    return d, rss, long, refs


def lo_settings(tmp_path, **kw) -> SlurmSettings:
    return SlurmSettings(interface="lo", log_directory=str(tmp_path / "logs"), **kw)


def test_slurm_cluster_build_equals_threads(slurm, survey, tmp_path):
    d, rss, _, _ = survey
    ref = tmp_path / "threads2.zarr"
    run_build(rss[0], ref, wave_chunk=4, workers=WORKERS, progress=False)
    store = tmp_path / "slurm.zarr"
    settings = ExecutorSettings("slurm", slurm=lo_settings(tmp_path, walltime="00:10:00"))
    rep = run_build(
        rss[0], store, wave_chunk=4, scheduler=settings, workers=WORKERS, progress="log"
    )
    assert rep.chunks_solved == 3 and rep.executor.startswith("slurm (2 job(s)")
    assert_same_cube(ref, store)
    # a fast (weight-reuse) build: moves, removals and LSF sums inside the SLURM workers
    fast = write_reuse_rss(tmp_path / "fast.zarr", 130)
    run_build(
        fast, d / "fast-threads.zarr", FAST_PARAMS, wave_chunk=64, workers=WORKERS, progress=False
    )
    run_build(
        fast,
        tmp_path / "slurm-fast.zarr",
        FAST_PARAMS,
        wave_chunk=64,
        scheduler=settings,
        workers=WORKERS,
        progress=False,
    )
    assert_same_cube(d / "fast-threads.zarr", tmp_path / "slurm-fast.zarr")
    # the worker jobs ran under SLURM (their logs exist) and were cancelled when the build closed
    assert list((tmp_path / "logs").glob("*.err"))
    wait_until(lambda: not squeue("-n", "crrxr-worker"), 30, "the worker jobs to end")


def test_bad_partition_is_a_clear_error_within_30s(slurm, survey, tmp_path, capsys):
    _, rss, _, _ = survey
    t0 = time.monotonic()
    settings = ExecutorSettings("slurm", slurm=lo_settings(tmp_path, partition="nosuch"))
    with pytest.raises(ClusterStartError, match="invalid partition.*nosuch"):
        run_build(rss[0], tmp_path / "bad.zarr", wave_chunk=4, scheduler=settings, progress=False)
    assert time.monotonic() - t0 < 30
    # the command line: exit 1, sbatch's own words, no traceback
    t0 = time.monotonic()
    code = main(
        ["build", rss[0], str(tmp_path / "bad2.zarr"), "--scheduler=slurm", "--partition=nosuch"]
        + ["--interface=lo", f"--log-directory={tmp_path / 'logs'}", "--wave-chunk=4"]
    )
    err = capsys.readouterr().err
    assert code == 1 and time.monotonic() - t0 < 30
    assert "sbatch: error: invalid partition specified: nosuch" in err
    assert "Traceback" not in err
    assert not squeue()


def wait_for_jobs(name: str, timeout: float = 240) -> None:
    wait_until(lambda: not squeue("-n", name), timeout, f"jobs {name} to finish", step=0.5)


def test_submit_array_of_three_completes(slurm, survey, tmp_path, capsys):
    d, rss, _, refs = survey
    out = tmp_path / "run"
    assert main(["submit", *rss, f"--out={out}", "--wave-chunk=4", "--job-name=arr3"]) == 0
    said = capsys.readouterr().out
    assert "3 of 3 IFU(s) submitted as array job" in said
    script = next(out.glob("job-*.sh")).read_text()
    assert "#SBATCH --array=0-2" in script and "#SBATCH --requeue" in script
    assert "#SBATCH --signal=B:USR1@" in script
    wait_for_jobs("arr3")
    entries = read_manifest(out)
    assert [e.rss for e in entries] == [os.path.abspath(p) for p in rss]
    for e in entries:
        assert store_status(e.store).state == "complete"
        assert_same_cube(refs[e.rss], e.store)
    assert main(["status", str(out)]) == 0
    assert "3 complete" in capsys.readouterr().out
    # a rerun submits nothing: every IFU is complete
    assert main(["submit", f"--out={out}"]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert len(list(out.glob("job-*.sh"))) == 1


def _history_chunks(store) -> list[str]:
    return [ln.split("chunks=")[1].split()[0] for ln in S.read_attrs(store)["history"].splitlines()]


def _one_long_job(survey, tmp_path, name: str):
    d, _, long, refs = survey
    out = tmp_path / "run"
    assert main(["submit", long, f"--out={out}", "--wave-chunk=1", f"--job-name={name}"]) == 0
    store = read_manifest(out)[0].store
    job = wait_until(lambda: squeue("-n", name, "-o", "%i"), 30, "the job to be queued")[0].strip()
    # let it write some chunks, not all
    wait_until(
        lambda: S.store_exists(store) and int(S.read_ledger(store).sum()) >= 3,
        120,
        "the first chunks",
        step=0.05,
    )
    return out, store, job, refs[long]


def test_scancelled_job_resubmitted_resumes_only_missing(slurm, survey, tmp_path, capsys):
    out, store, job, ref = _one_long_job(survey, tmp_path, "cancel1")
    subprocess.run(["scancel", job], check=True)
    wait_for_jobs("cancel1", 60)
    done = int(S.read_ledger(store).sum())
    assert 3 <= done < 24, done
    st = store_status(store)
    assert st.state == "partial" and st.chunks_done == done
    capsys.readouterr()
    assert main(["submit", f"--out={out}", "--wave-chunk=1", "--job-name=cancel2"]) == 0
    assert "1 of 1 IFU(s) submitted" in capsys.readouterr().out
    wait_for_jobs("cancel2")
    assert store_status(store).state == "complete"
    # the resumed build solved exactly the chunks the cancelled one had not finished
    assert _history_chunks(store)[-1] == f"{24 - done}/24"
    assert_same_cube(ref, store)


def test_sigusr1_before_time_limit_requeues_and_resumes(slurm, survey, tmp_path):
    out, store, job, ref = _one_long_job(survey, tmp_path, "usr1")
    # what --signal=B:USR1@<margin> does before the time limit: USR1 to the batch shell
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)

    def log() -> str:
        return "\n".join(p.read_text() for p in (out / "logs").glob("*.out"))

    wait_until(lambda: "requeueing" in log(), 60, "the job to requeue itself")

    # SLURM holds a requeued job back until the old step's credential expires (reason BeginTime;
    # scripts/slurm.sh sets cred_expire=10 s). Releasing it earlier races with that revocation
    # ("Job credential revoked" kills the restarted job), so the test waits like a user would.
    def finished() -> bool:
        return store_status(store).state == "complete"

    wait_until(finished, 180, "the requeued job to finish", step=1.0)
    wait_for_jobs("usr1", 60)
    last = S.read_attrs(store)["history"].splitlines()[-1]
    assert "resumed" in last and "chunks=24/24" not in last  # resumed, did not start over
    assert "resuming" in log()
    assert "stopped before the time limit (status 75)" in log()  # crrxr build's interrupted status
    assert_same_cube(ref, store)
