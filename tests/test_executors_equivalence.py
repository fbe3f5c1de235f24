"""The same plan under every executor gives the same cube (chunk size not dividing the channels)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from rss_fixtures import write_rss

from crrxr.engine.build import run_build
from crrxr.executors import DistributedExecutor, LocalExecutor, make_executor


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("eq")
    rss = write_rss(d / "rss.zarr", n_wave=11, n_exp=3, dead=[(3, 2), (10, 7)])
    store = d / "sync.zarr"
    run_build(rss, store, wave_chunk=4, scheduler="synchronous", progress=False)
    return rss, xr.open_zarr(store).load()


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    for name in a.data_vars:
        x, y = a[name].values, b[name].values
        if x.dtype.kind == "f":
            np.testing.assert_allclose(y, x, rtol=1e-12, atol=0, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(y, x, err_msg=name)
    for name in a.coords:
        np.testing.assert_array_equal(a[name].values, b[name].values)


@pytest.mark.parametrize("scheduler", ["threads", "processes", "distributed"])
def test_executors_give_identical_cubes(reference, tmp_path, scheduler):
    rss, ref = reference
    assert ref.sizes["wavelength"] % 4 != 0
    store = tmp_path / f"{scheduler}.zarr"
    rep = run_build(rss, store, wave_chunk=4, scheduler=scheduler, workers=2, progress="log")
    assert rep.chunks_solved == 3
    _same(ref, xr.open_zarr(store).load())


def test_make_executor_names():
    assert isinstance(make_executor("synchronous"), LocalExecutor)
    assert make_executor("threads", 3).workers == 3
    ex = make_executor("tcp://127.0.0.1:8786", 2)
    assert isinstance(ex, DistributedExecutor) and ex.address == "tcp://127.0.0.1:8786"
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_executor("gpu")


def test_existing_scheduler_address(reference, tmp_path):
    from distributed import LocalCluster

    rss, ref = reference
    import dask

    with (
        dask.config.set({"temporary-directory": str(tmp_path / "scratch")}),
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
    ):
        store = tmp_path / "addr.zarr"
        rep = run_build(
            rss, store, wave_chunk=4, scheduler=cluster.scheduler_address, progress=False
        )
        assert "tcp://127.0.0.1" in rep.executor
    _same(ref, xr.open_zarr(store).load())


def test_task_graph_is_small(reference, tmp_path):
    """Each task carries paths, a slice and plain config: no arrays, no whole-RSS closures."""
    import pickle

    import dask

    from crrxr.engine import settings
    from crrxr.engine.build import make_tasks, prepare
    from crrxr.engine.chunk import solve_chunk

    rss, _ = reference
    ds = settings.open_rss(rss)
    pstore, grid, plan = prepare(ds, wave_chunk=4)
    store = tmp_path / "g.zarr"
    run_build(rss, store, wave_chunk=4, scheduler="synchronous", progress=False)
    tasks = make_tasks(rss, str(store), pstore, grid, plan, ds, todo=list(range(plan.n_chunks)))
    graph = dict(dask.delayed(solve_chunk)(tasks[0], dask_key_name="k0").__dask_graph__())
    assert len(graph) == 1
    assert all(len(pickle.dumps(t)) < 4096 for t in tasks)


def test_local_cluster_leaves_no_scratch_space():
    """The LocalCluster's spill/scratch folder is private to the run and removed on close."""
    import os

    from crrxr.executors.distributed import DistributedExecutor

    with DistributedExecutor(workers=1) as ex:
        scratch = ex._scratch
        assert scratch and os.path.isdir(scratch)
        assert ex.client.submit(sum, [1, 2]).result() == 3
    assert not os.path.exists(scratch)
