"""build_cube end to end on small hand-made RSS stores: layout, ledger, resume rules, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
import zarr
from rss_fixtures import make_rss, write_rss

import crrxr
from crrxr.engine.build import ResumeError, estimate, run_build
from crrxr.engine.lock import LOCK_NAME
from crrxr.engine.plan import PlanError
from crrxr.io import cube as C
from crrxr.params import ParameterStore, load_profile


@pytest.fixture(scope="module")
def rss_path(tmp_path_factory):
    return write_rss(tmp_path_factory.mktemp("rss") / "rss.zarr", n_wave=13, n_exp=3)


def test_build_layout_ledger_and_attrs(rss_path, tmp_path):
    store = tmp_path / "cube.zarr"
    ds = crrxr.build_cube(rss_path, store, wave_chunk=5, scheduler="synchronous", progress=False)
    assert ds.sizes[C.WAVELENGTH] == 13 and ds.sizes[C.WAVELENGTH_CHUNK] == 3
    assert ds[C.CHUNK_DONE].values.tolist() == [1, 1, 1]
    assert zarr.open_array(str(store), path=C.FLUX).chunks[0] == 5
    assert json.loads(ds.attrs[C.ATTR_FAILED]) == []
    assert "crrxr" in ds.attrs[C.ATTR_HISTORY]
    assert not (store / LOCK_NAME).exists()
    flux = ds[C.FLUX].values
    assert np.isfinite(flux).all() and flux.dtype == np.float32
    # the point source sits at the centre pixel
    ny, nx = flux.shape[1:]
    assert np.unravel_index(np.argmax(flux[6]), (ny, nx)) == (ny // 2, nx // 2)
    # PSF and correlation of the one band in range were written
    assert np.isfinite(ds[C.PSF].values).all()
    rho = ds[C.CORRELATION].values[0]
    diag = ds[C.PAIR_I].values == ds[C.PAIR_J].values
    assert np.isfinite(rho).all() and np.allclose(rho[diag & (rho != 0)], 1.0)


def test_existing_store_needs_resume_or_overwrite(rss_path, tmp_path):
    store = tmp_path / "cube.zarr"
    run_build(rss_path, store, wave_chunk=5, scheduler="synchronous", progress=False)
    with pytest.raises(ResumeError, match="--resume.*--overwrite"):
        run_build(rss_path, store, wave_chunk=5, scheduler="synchronous", progress=False)
    # a finished store resumes to a no-op
    rep = run_build(rss_path, store, resume=True, scheduler="synchronous", progress=False)
    assert rep.chunks_solved == 0 and rep.chunks_skipped == 3
    rep = run_build(
        rss_path, store, overwrite=True, wave_chunk=4, scheduler="synchronous", progress=False
    )
    assert rep.chunks_solved == 4 and xr.open_zarr(store).sizes[C.WAVELENGTH_CHUNK] == 4


def test_resume_recomputes_only_missing_chunks_and_refuses_changes(rss_path, tmp_path):
    store = tmp_path / "cube.zarr"
    run_build(rss_path, store, wave_chunk=4, scheduler="synchronous", progress=False)
    full = xr.open_zarr(store).load()
    # forget chunks 1 and 3 (as if the build had died before their ledger marks)
    g = zarr.open_group(str(store), mode="r+")
    g[C.CHUNK_DONE][1] = 0
    g[C.CHUNK_DONE][3] = 0
    g[C.FLUX][4:8] = -1.0
    (store / C.FLUX / "c" / "0" / "0" / "0.partial").write_bytes(b"torn")
    rep = run_build(rss_path, store, resume=True, scheduler="threads", workers=2, progress=False)
    assert rep.chunks_solved == 2 and rep.removed_partials == ["flux/c/0/0/0.partial"]
    again = xr.open_zarr(store).load()
    xr.testing.assert_identical(again.drop_attrs(), full.drop_attrs())
    # a changed parameter refuses, naming the key
    with pytest.raises(ResumeError, match=r"crr\.lambda"):
        run_build(rss_path, store, resume=True, overrides=["crr.lambda=2e-3"], progress=False)
    with pytest.raises(ResumeError, match="method"):
        run_build(rss_path, store, resume=True, method="shepard", progress=False)
    # a different RSS refuses
    other = write_rss(tmp_path / "other.zarr", n_wave=13, n_exp=3, seed=7)
    with pytest.raises(ResumeError, match="different RSS"):
        run_build(other, store, resume=True, progress=False)


def test_dataset_input_and_profile_grid(tmp_path):
    ds = make_rss(n_wave=6, n_exp=3)
    cube = crrxr.build_cube(
        ds,
        tmp_path / "c.zarr",
        profile="manga-19",
        wave_chunk=4,
        scheduler="synchronous",
        progress=False,
    )
    # manga-19 fixes the grid side (17" at 0.75" -> 23 pixels)
    spec_store = ParameterStore.from_attrs(cube.attrs)[1]
    extent = float(spec_store["grid.extent_arcsec"])
    assert extent > 0 and cube.sizes["x"] == (int(np.ceil(extent / 0.75 - 1e-9)) // 2) * 2 + 1


def test_refusals_before_work(rss_path, tmp_path):
    with pytest.raises(PlanError, match="one channel needs"):
        run_build(rss_path, tmp_path / "c.zarr", max_memory="1MB", progress=False)
    assert not (tmp_path / "c.zarr").exists()
    bad = make_rss(n_wave=4)
    bad["ivar"][:] = 0.0
    with pytest.raises(PlanError, match="no usable samples"):
        run_build(bad, tmp_path / "d.zarr", progress=False)
    with pytest.raises(PlanError, match="pixels"):
        estimate(rss_path, overrides=["grid.extent_arcsec=2000", "grid.pixel_scale_arcsec=1"])


def test_plain_open_zarr_without_crrxr(rss_path, tmp_path):
    store = tmp_path / "cube.zarr"
    run_build(
        rss_path,
        store,
        wave_chunk=5,
        scheduler="synchronous",
        progress=False,
        overrides=["crr.lambda=0.002"],
    )
    code = textwrap.dedent(f"""
        import json, sys, warnings
        warnings.simplefilter("error")
        import xarray as xr
        ds = xr.open_zarr({str(store)!r})
        assert "crrxr" not in sys.modules
        print(json.dumps({{
            "vars": sorted(ds.data_vars), "coords": sorted(ds.coords), "attrs": sorted(ds.attrs),
            "flag_meanings": ds.mask.attrs["flag_meanings"], "units": ds.flux.attrs["units"],
            "params": ds.attrs["crrxr_params"], "spec": ds.attrs["crrxr_paramspec"],
        }}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got["vars"] == sorted(C.DATA_VARIABLES)
    assert got["coords"] == sorted([C.WAVELENGTH, C.X, C.Y, C.BAND, C.PAIR_I, C.PAIR_J])
    for a in (
        C.ATTR_PARAMS,
        C.ATTR_PARAMSPEC,
        C.ATTR_VERSION,
        C.ATTR_HISTORY,
        C.ATTR_RSS_IDENTITY,
        C.ATTR_WCS,
        C.ATTR_FAILED,
        "ifu_ra",
        "ifu_dec",
    ):
        assert a in got["attrs"]
    assert got["flag_meanings"].split()[-1] == "DONOTUSE"
    spec, params = ParameterStore.from_attrs(
        {C.ATTR_PARAMS: got["params"], C.ATTR_PARAMSPEC: got["spec"]}
    )
    assert params["crr.lambda"] == 0.002 and params["engine.wave_chunk"] == 5
    expected = load_profile(overrides={"crr.lambda": 0.002, "engine.wave_chunk": 5})
    assert params == expected
    wcs = json.loads(xr.open_zarr(store).attrs[C.ATTR_WCS])
    assert wcs["CRVAL1"] == 150.0 and wcs["CD1_1"] == -0.75 / 3600


def test_sky_subtraction_inside_tasks(tmp_path):
    clean = make_rss(n_wave=6, n_exp=3, noise=1e-4)
    outer = np.hypot(clean.xpos[:, 0], clean.ypos[:, 0]).values > 4.0  # far from the source
    skyful = clean.copy()
    skyful["flux"] = clean["flux"] + 5.0
    skyful["sky_fiber"] = ("spectrum", outer)
    a = crrxr.build_cube(clean, tmp_path / "a.zarr", wave_chunk=4, progress=False)
    with pytest.raises(ValueError, match="sky_fiber"):
        run_build(clean, tmp_path / "c.zarr", sky_subtract=True, progress=False)
    b = crrxr.build_cube(
        skyful, tmp_path / "b.zarr", wave_chunk=4, progress=False, sky_subtract=True
    )
    peak = float(a.flux.max())
    np.testing.assert_allclose(b.flux.values, a.flux.values, atol=1e-3 * peak)
    assert ParameterStore.from_attrs(b.attrs)[1]["sky.enabled"] is True
    with pytest.raises(ResumeError, match="sky.enabled"):  # resuming without sky subtraction
        run_build(skyful, tmp_path / "b.zarr", resume=True, progress=False)


def test_failed_channel_is_donotuse_listed_and_never_filled(rss_path, tmp_path, monkeypatch):
    """A LinAlgError in one channel's solve (injected into the eigendecomposition, which the Gram route
    calls once per channel) marks that channel DONOTUSE with zero weights; its neighbours are solved."""
    from crrxr.core import crr

    real_eigh = crr._eigh
    calls = []

    def eigh(a, *args, **kwargs):
        calls.append(1)
        if fail_at and len(calls) == fail_at:
            raise np.linalg.LinAlgError("Eigenvalues did not converge (injected)")
        return real_eigh(a, *args, **kwargs)

    monkeypatch.setattr(crr, "_eigh", eigh)
    # one chunk, so the order of the calls is the order of the channels
    opts = dict(
        wave_chunk=13, scheduler="synchronous", progress=False, overrides=["crr.solver=gram"]
    )
    fail_at = 0
    ok = crrxr.build_cube(rss_path, tmp_path / "ok.zarr", **opts).load()
    assert len(calls) == ok.sizes["wavelength"]  # one decomposition per channel
    calls.clear()
    fail_at = 8  # channel 7
    rep = run_build(rss_path, tmp_path / "bad.zarr", **opts)
    bad = xr.open_zarr(tmp_path / "bad.zarr").load()
    assert rep.failed_channels == [7] and json.loads(bad.attrs[C.ATTR_FAILED]) == [7]
    assert "injected" in " ".join(rep.failure_messages) and "1 failed channel" in rep.summary()
    assert bad[C.CHANNEL_FAILED].values.tolist() == [1 if c == 7 else 0 for c in range(13)]
    assert ((bad[C.MASK].values[7] & 1024) != 0).all()
    assert (bad[C.FLUX].values[7] == 0).all() and (bad[C.IVAR].values[7] == 0).all()
    others = [c for c in range(13) if c != 7]
    np.testing.assert_array_equal(bad[C.FLUX].values[others], ok[C.FLUX].values[others])
    assert bad[C.CHUNK_DONE].values.tolist() == [1]


def test_cli_estimate_and_refusal(rss_path, tmp_path, capsys):
    from crrxr.cli import main

    assert main(["estimate", rss_path, "--max-memory", "1GB", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert (
        "channels:        13" in out and "memory per task" in out and "threads (2 workers)" in out
    )
    assert main(["estimate", rss_path, "--max-memory", "1MB"]) == 1
    assert "one channel needs" in capsys.readouterr().err
    assert (
        main(
            [
                "build",
                rss_path,
                str(tmp_path / "c.zarr"),
                "--set",
                "grid.extent_arcsec=900",
                "--set",
                "grid.pixel_scale_arcsec=0.5",
                "--no-progress",
            ]
        )
        == 1
    )
    assert "pixels" in capsys.readouterr().err and not (tmp_path / "c.zarr").exists()
    assert (
        main(
            [
                "build",
                rss_path,
                str(tmp_path / "d.zarr"),
                "--wave-chunk",
                "7",
                "--method",
                "shepard",
                "--scheduler",
                "synchronous",
                "--no-progress",
            ]
        )
        == 0
    )
    assert xr.open_zarr(tmp_path / "d.zarr").sizes[C.WAVELENGTH_CHUNK] == 2


def test_torn_template_needs_overwrite(rss_path, tmp_path):
    import shutil

    store = tmp_path / "cube.zarr"
    run_build(rss_path, store, wave_chunk=5, scheduler="synchronous", progress=False)
    shutil.rmtree(store / C.CHUNK_DONE)
    S_json = (store / "zarr.json").read_text()
    (store / "zarr.json").write_text(S_json.replace('"chunk_done"', '"chunk_gone"'))
    with pytest.raises(ResumeError, match="--overwrite"):
        run_build(rss_path, store, resume=True, progress=False)
    rep = run_build(rss_path, store, overwrite=True, wave_chunk=5, progress=False)
    assert rep.chunks_solved == 3


def test_config_file_layers_over_profile(rss_path, tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("crr:\n  lambda: 0.0025\ngrid:\n  pixel_scale_arcsec: 1.0\n")
    rep = run_build(
        rss_path,
        tmp_path / "c.zarr",
        profile="manga-19",
        config=cfg,
        wave_chunk=13,
        overrides=["crr.lambda=0.0015"],
        progress=False,
    )
    params = ParameterStore.from_attrs(xr.open_zarr(tmp_path / "c.zarr").attrs)[1]
    assert params["crr.lambda"] == 0.0015  # --set wins over the config file
    assert params["grid.pixel_scale_arcsec"] == 1.0  # config file over the profile
    assert params["grid.extent_arcsec"] == load_profile("manga-19")["grid.extent_arcsec"]
    assert rep.plan.nx == (int(np.ceil(params["grid.extent_arcsec"] / 1.0 - 1e-9)) // 2) * 2 + 1
