"""Kill a real ``crrxr build`` process with SIGKILL mid-build, resume it, and prove that only the
missing chunks were solved and that the result equals an uninterrupted build."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
import zarr
from rss_fixtures import build_command, kill_after_chunks, write_rss
from rss_fixtures import ledger as _ledger

from crrxr.cli import main
from crrxr.core.masks import DEADFIBER
from crrxr.engine import settings
from crrxr.engine.lock import lease_path
from crrxr.io import cube as C
from crrxr.io.cube_reader import open_cube
from crrxr.params import ParameterStore, ParamSpec
from crrxr.params.codec import PARAMS_ATTR
from crrxr.simulate import simulate_rss

SOLVED = re.compile(r"solved chunk (\d+) ")


def _build(rss, store, *extra):
    return build_command(rss, store, *extra, chunk=2)


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    rss = write_rss(tmp_path / "rss.zarr", n_wave=48, n_exp=9)
    store = tmp_path / "cube.zarr"
    log1 = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen(_build(rss, store), stderr=log1, stdout=log1)
    kill_after_chunks(proc, store, 3, 120)
    log1.close()
    done_at_kill = set(np.flatnonzero(_ledger(store)).tolist())
    n_chunks = 24
    assert 3 <= len(done_at_kill) < n_chunks
    assert lease_path(store).exists()  # the dead holder's lease is still there
    solved1 = {int(k) for k in SOLVED.findall((tmp_path / "run1.log").read_text())}
    assert solved1 <= done_at_kill  # a chunk is logged only after its ledger mark

    # without --resume or --overwrite an existing store is refused
    again = subprocess.run(_build(rss, store), capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr
    assert "took over a stale lease" in again.stderr  # the killed build's lease was stale

    # a changed parameter refuses to resume and names the key
    changed = subprocess.run(
        _build(rss, store, "--resume", "--set", "crr.lambda=0.002"), capture_output=True, text=True
    )
    assert changed.returncode == 2 and "crr.lambda" in changed.stderr

    resumed = subprocess.run(_build(rss, store, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    solved2 = [int(k) for k in SOLVED.findall(resumed.stderr)]
    assert sorted(solved2) == sorted(set(range(n_chunks)) - done_at_kill)  # only the missing ones
    assert _ledger(store).tolist() == [1] * n_chunks

    ref = tmp_path / "ref.zarr"
    full = subprocess.run(_build(rss, ref), capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    a, b = xr.open_zarr(store).load(), xr.open_zarr(ref).load()
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_concurrent_build_refused(tmp_path):
    rss = write_rss(tmp_path / "rss.zarr", n_wave=6, n_exp=3)
    store = tmp_path / "cube.zarr"
    code = (
        "import sys, time; from crrxr.engine.lock import StoreLock; "
        f"StoreLock({str(store)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = subprocess.run(_build(rss, store, "--overwrite"), capture_output=True, text=True)
        assert out.returncode == 1 and f"pid {holder.pid}" in out.stderr
    finally:
        holder.kill()
        holder.wait()


def _as_written_before(store, key: str) -> None:
    """Rewrite the store's parameter attrs as a crrxr without ``key`` in its spec wrote them."""
    group = zarr.open_group(store, mode="r+")
    spec, params = ParameterStore.from_attrs(dict(group.attrs))
    old_spec = ParamSpec(
        [f for f in spec if f.key != key], spec.name, spec.system_id, spec.schema_version
    )
    attrs = params.without([key]).to_attrs(old_spec)
    attrs[C.ATTR_FINGERPRINT] = settings.values_fingerprint(
        json.loads(attrs[PARAMS_ATTR])["values"]
    )
    group.attrs.update(attrs)


def test_a_store_written_before_a_parameter_existed_resumes_and_reads(tmp_path):
    """A store from before `mask.deadfiber_share` existed (then the constant 0.1) resumes with that
    value, bitwise as an uninterrupted build, and its cube opens for fits with it."""
    rss = tmp_path / "rss.zarr"
    simulate_rss(rss, bundle=7, exposures=3, nwave=12, dead_fibers=1, seed=2)
    base = ["--method", "shepard", "--wave-chunk", "4", "--scheduler", "synchronous"]
    ref, old = tmp_path / "ref.zarr", tmp_path / "old.zarr"
    assert main(["build", str(rss), str(ref), *base, "--no-progress"]) == 0
    assert main(["build", str(rss), str(old), *base, "--no-progress"]) == 0
    _as_written_before(old, "mask.deadfiber_share")
    assert "deadfiber" not in xr.open_zarr(old).attrs["crrxr_params"]
    group = zarr.open_group(old, mode="r+")
    group["chunk_done"][2] = 0  # the last chunk unfinished, its flux lost
    group["flux"][8:12] = 0.0
    assert main(["build", str(rss), str(old), "--resume", "--no-progress"]) == 0
    a, b = xr.open_zarr(old).load(), xr.open_zarr(ref).load()
    for name in ("flux", "ivar", "mask"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert (a["mask"].values & DEADFIBER).any()  # DEADFIBER flags are part of what is compared
    cube = open_cube(old)
    assert settings.core_config(cube.params).deadfiber_share == 0.1
