"""#11 groundwork: the build as a plan object, a batch of stores on ONE executor that the caller
owns, and worker-side measurements."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
from rss_fixtures import write_rss

from crrxr.engine.build import prepare_build, run_batch, run_build
from crrxr.engine.lock import lease_path
from crrxr.executors import LocalExecutor


@pytest.fixture(scope="module")
def two_rss(tmp_path_factory):
    d = tmp_path_factory.mktemp("rss")
    return [write_rss(d / "a.zarr", n_wave=8, n_exp=3), write_rss(d / "b.zarr", n_wave=6, n_exp=2)]


class CountingExecutor(LocalExecutor):
    """A threads executor that counts its computes and whether anyone closed it."""

    def __init__(self):
        super().__init__("threads", 2)
        self.computes = 0
        self.closed = 0

    def compute(self, tasks, **kw):
        self.computes += 1
        return super().compute(tasks, **kw)

    def _close(self):
        self.closed += 1


def test_batch_runs_every_store_on_one_caller_owned_executor(two_rss, tmp_path):
    ex = CountingExecutor().start()
    builds = [
        prepare_build(rss, tmp_path / f"{i}.zarr", wave_chunk=2, progress=False)
        for i, rss in enumerate(two_rss)
    ]
    try:
        assert all(lease_path(b.store).exists() for b in builds)  # held from prepare to close
        reports = run_batch(builds, ex)
    finally:
        for b in builds:
            b.close()
    assert ex.computes == 1 and ex.closed == 0 and ex.started  # one graph, caller still owns it
    assert [r.chunks_solved for r in reports] == [b.plan.n_chunks for b in builds]
    assert not any(lease_path(b.store).exists() for b in builds)
    # run_build with an executor passed in does not close it either
    run_build(two_rss[0], tmp_path / "single.zarr", wave_chunk=2, progress=False, executor=ex)
    assert ex.closed == 0 and ex.started
    ex.close()
    assert ex.closed == 1
    # the batch cubes equal separate builds, bitwise
    for i, rss in enumerate(two_rss):
        sep = tmp_path / f"sep{i}.zarr"
        run_build(rss, sep, wave_chunk=2, progress=False, scheduler="synchronous")
        a, b = xr.open_zarr(sep).load(), xr.open_zarr(tmp_path / f"{i}.zarr").load()
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_worker_memory_and_blas_threads_are_measured_in_the_workers(two_rss, tmp_path):
    from crrxr.engine.build import run_chunks

    with (
        prepare_build(two_rss[0], tmp_path / "p.zarr", wave_chunk=2, progress=False) as b,
        LocalExecutor("processes", 2) as ex,
    ):
        (results,), _, peak = run_chunks([b], ex)
        rep = b.finish(results, executor=ex.describe(), peak=peak)
    pids = {r.pid for r in results}
    assert os.getpid() not in pids  # measured in the pool workers, not in this driver
    assert rep.worker_peak_memory == max(r.peak_rss for r in results)
    # a worker's own peak is a fraction of the sampled tree (driver + workers), not the driver's
    assert 50 * 2**20 < rep.worker_peak_memory < peak.peak
    assert rep.worker_blas_threads == b.plan.blas_threads == max(r.blas_threads for r in results)
