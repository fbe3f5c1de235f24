"""A fast (weight-reuse) cube is a pure function of (RSS, parameters) like an exact one: bitwise the
same under every executor and worker count, and after a SIGKILL and ``--resume``. The RSS has what
makes reuse stateful inside a task (nodes moved across selection changes in the blue, samples
removed at masked channels, an LSF), and chunks of several reuse blocks."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import xarray as xr
from rss_fixtures import FAST_PARAMS, build_command, kill_after_chunks, write_reuse_rss
from rss_fixtures import ledger as _ledger

from crrxr.engine.build import run_build

FAST = FAST_PARAMS


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    """Every data variable bitwise equal but the chunk ledger (its length is the chunk count)."""
    assert set(a.data_vars) == set(b.data_vars)
    names = [n for n in a.data_vars if "wavelength_chunk" not in a[n].dims]
    assert {"flux", "ivar", "mask", "lsf_sigma", "psf", "correlation", "reuse_bound"} <= set(names)
    for name in names:
        np.testing.assert_array_equal(b[name].values, a[name].values, err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("reuse-eq")
    rss = write_reuse_rss(d / "rss.zarr", 200)
    store = d / "sync.zarr"
    run_build(rss, store, params=FAST, wave_chunk=128, scheduler="synchronous", progress=False)
    ref = xr.open_zarr(store).load()
    assert (ref["channel_exact"].values == 0).sum() > 100  # interpolated, not exact
    assert np.isfinite(ref["lsf_sigma"].values).any()
    return rss, ref


@pytest.mark.parametrize(
    ("scheduler", "workers", "chunk"),
    [("threads", 2, 64), ("processes", 2, 128), ("distributed", 2, 64), ("threads", 1, 192)],
)
def test_fast_cube_is_the_same_under_every_executor(reference, tmp_path, scheduler, workers, chunk):
    rss, ref = reference
    store = tmp_path / f"{scheduler}.zarr"
    run_build(
        rss,
        store,
        params=FAST,
        wave_chunk=chunk,
        scheduler=scheduler,
        workers=workers,
        progress=False,
    )
    _same(ref, xr.open_zarr(store).load())


def _build(rss, store, *extra) -> list[str]:
    sets = [a for k, v in FAST.items() for a in ("--set", f"{k}={v}")]
    return build_command(rss, store, *sets, *extra, chunk=64)


@pytest.mark.slow
def test_fast_build_killed_and_resumed_equals_an_uninterrupted_one(reference, tmp_path):
    rss, ref = reference
    n_chunks = -(-ref.sizes["wavelength"] // 64)
    store = tmp_path / "cube.zarr"
    proc = subprocess.Popen(_build(rss, store), stderr=subprocess.DEVNULL)
    kill_after_chunks(proc, store, 1, 300)
    done = int(_ledger(store).sum())
    assert 1 <= done < n_chunks
    resumed = subprocess.run(_build(rss, store, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _ledger(store).tolist() == [1] * n_chunks
    _same(ref, xr.open_zarr(store).load())
