"""Simulator: schema, determinism, point-source fluxes vs the kernel, DAR, noise, masks, streaming, CLI."""

from __future__ import annotations

import dataclasses
import tracemalloc
import warnings

import numpy as np
import pytest
import xarray as xr

from crrxr.cli import main
from crrxr.core.kernel import radial_kernel, seeing_at
from crrxr.core.masks import RSS_DEADFIBER, RSS_REJECT
from crrxr.io import names as N
from crrxr.io import open_rss, validate_rss
from crrxr.simulate import Binary, PointSource, read_truth, simulate_rss
from crrxr.simulate.atmosphere import dar_shift, refractivity
from crrxr.simulate.geometry import MANGA_DITHER_SIDE, hex_bundle, lenslet_array
from crrxr.simulate.wavegrid import log_wavelength

SPECTRAL = ("flux", "ivar", "mask", "xpos", "ypos")


def small(**kw):
    args = dict(bundle=19, exposures=6, nwave=40, wave_chunk=16, seed=3)
    args.update(kw)
    return simulate_rss(None, **args)


def test_store_follows_schema(tmp_path):
    ds = simulate_rss(
        tmp_path / "sim.zarr",
        bundle=19,
        exposures=6,
        nwave=50,
        wave_chunk=16,
        noise=30,
        dead_fibers=1,
        bad_pixel_fraction=0.01,
    )
    assert validate_rss(ds) == []
    assert dict(ds.sizes) == {"spectrum": 19 * 6, "wavelength": 50, "exposure": 6}
    for name in SPECTRAL:
        assert ds[name].dims == ("spectrum", "wavelength")
        assert ds[name].chunks == ((114,), (16, 16, 16, 2))  # chunked along wavelength only
    assert (
        ds.flux.dtype == np.float32 and ds.ivar.dtype == np.float32 and ds.mask.dtype == np.uint32
    )
    assert ds.xpos.dtype == np.float64 and ds.exposure_index.dtype == np.int64
    assert ds.exposure.values.tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(ds.exposure_index.values, np.repeat(np.arange(6), 19))
    np.testing.assert_array_equal(ds.fiber.values, np.tile(np.arange(19), 6))
    assert ds.attrs[N.ATTR_RSS_SCHEMA] == N.RSS_SCHEMA_ID and ds.attrs[N.ATTR_FIBER_RADIUS] == 1.0
    with (
        warnings.catch_warnings()
    ):  # a plain xr.open_zarr reads it silently (consolidated metadata)
        warnings.simplefilter("error")
        plain = xr.open_zarr(tmp_path / "sim.zarr")
    assert plain.flux.chunks == ds.flux.chunks
    # no temporary siblings left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.zarr"]


def test_same_seed_is_bitwise_identical_whatever_the_chunking(tmp_path):
    kw = dict(scene="galaxy", noise=15, dead_fibers=2, bad_pixel_fraction=0.02, nwave=45)
    a = small(wave_chunk=7, **kw)
    b = simulate_rss(
        tmp_path / "b.zarr", bundle=19, exposures=6, seed=3, wave_chunk=45, **kw
    ).load()
    c = small(wave_chunk=1, **kw)
    for name in SPECTRAL:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        np.testing.assert_array_equal(a[name].values, c[name].values, err_msg=name)
    assert a.attrs == b.attrs
    other = simulate_rss(None, bundle=19, exposures=6, seed=5, wave_chunk=7, **kw)
    assert not np.array_equal(other.flux.values, a.flux.values)
    assert not np.array_equal(other.xpos.values, a.xpos.values)


def test_point_source_flux_equals_kernel_at_stored_positions():
    src = PointSource(x=0.7, y=-0.4, flux=50.0, spectral_index=-1.5)
    ds = small(scene=src, seeing=1.4)
    wave = ds.wavelength.values
    flux = ds.flux.values.astype(float)
    for s in range(0, ds.sizes["spectrum"], 5):
        e = int(ds.exposure_index[s])
        for k in range(0, wave.size, 3):
            fwhm = float(seeing_at(ds.seeing_fwhm.values[e], wave[k]))
            r = np.hypot(float(ds.xpos[s, k]) - 0.7, float(ds.ypos[s, k]) + 0.4)
            expected = (
                np.pi
                * 1.0**2
                * radial_kernel(np.array(r), fwhm)
                * 50.0
                * (wave[k] / 5400.0) ** -1.5
            )
            assert flux[s, k] == pytest.approx(expected, rel=1e-6, abs=1e-9)  # float32 storage
    assert (ds.ivar.values == 1).all() and (ds.mask.values == 0).all()  # noiseless: unit ivar


def test_binary_geometry_and_truth():
    binary = Binary(separation=3.0, position_angle=90.0, contrast=0.25, flux=80.0, x=0.5, y=0.2)
    x2, y2 = binary.secondary_position
    assert (x2, y2) == pytest.approx((0.5 - 3.0, 0.2))  # PA 90 = East = -x
    x2, y2 = dataclasses.replace(binary, position_angle=0.0).secondary_position
    assert (x2, y2) == pytest.approx((0.5, 3.2))  # PA 0 = North = +y
    ds = small(scene=binary, nwave=8, dar=False)
    truth = read_truth(ds)
    assert truth["binary.separation_arcsec"] == 3.0 and truth["binary.position_angle_deg"] == 90.0
    assert truth["binary.contrast"] == 0.25
    assert truth["binary.secondary_x_arcsec"] == pytest.approx(-2.5)
    # fluxes = primary + contrast x secondary, each pi R^2 K
    s, k = 20, 4
    e = int(ds.exposure_index[s])
    fwhm = float(seeing_at(ds.seeing_fwhm.values[e], ds.wavelength.values[k]))
    x, y = float(ds.xpos[s, k]), float(ds.ypos[s, k])
    expected = (
        np.pi
        * 80.0
        * (
            radial_kernel(np.array(np.hypot(x - 0.5, y - 0.2)), fwhm)
            + 0.25 * radial_kernel(np.array(np.hypot(x + 2.5, y - 0.2)), fwhm)
        )
    )
    assert float(ds.flux[s, k]) == pytest.approx(expected, rel=1e-6)


def test_dither_pattern_and_seeing_jitter():
    ds = small(jitter=0.0, seeing_jitter=0.0, dar=False, exposures=3)
    fx, fy = hex_bundle(19)
    dx = ds.xpos.values[:, 0] - fx[ds.fiber.values]
    dy = ds.ypos.values[:, 0] - fy[ds.fiber.values]
    off = np.array(
        [
            [dx[ds.exposure_index.values == e][0], dy[ds.exposure_index.values == e][0]]
            for e in range(3)
        ]
    )
    sides = [np.hypot(*(off[i] - off[(i + 1) % 3])) for i in range(3)]
    np.testing.assert_allclose(sides, MANGA_DITHER_SIDE, rtol=1e-12)
    np.testing.assert_allclose(off.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_array_equal(ds.seeing_fwhm.values, 1.19)
    jittered = small(seeing_jitter=0.05, exposures=9)
    rel = jittered.seeing_fwhm.values / 1.19 - 1
    assert 0 < rel.std() < 0.15 and not np.allclose(rel, 0)


def test_dar_magnitude_direction_and_shape():
    pa = np.array([0.0, 90.0, 45.0])
    ds = small(
        exposures=3,
        dar_pa=pa,
        dar_amplitude=1.0,
        wavelength=np.array([3600.0, 5000.0, 7000.0, 10000.0]),
    )
    e = ds.exposure_index.values
    shift_x = ds.xpos.values - ds.xpos.values[:, [1]]  # zero at the 5000 A reference
    shift_y = ds.ypos.values - ds.ypos.values[:, [1]]
    mag = np.hypot(shift_x[:, 0] - shift_x[:, 3], shift_y[:, 0] - shift_y[:, 3])
    np.testing.assert_allclose(mag, 1.0, rtol=1e-12)  # 1" between 3600 and 10000 A
    # blue light shifts along the parallactic angle (E of N: PA 0 = +y, PA 90 = -x)
    ux, uy = -np.sin(np.deg2rad(pa[e])), np.cos(np.deg2rad(pa[e]))
    np.testing.assert_allclose(shift_x[:, 0], ux * dar_shift(np.array(3600.0)), atol=1e-12)
    np.testing.assert_allclose(shift_y[:, 0], uy * dar_shift(np.array(3600.0)), atol=1e-12)
    # physically shaped: proportional to the refractivity difference, bigger in the blue
    ratio = (refractivity(3600.0) - refractivity(5000.0)) / (
        refractivity(5000.0) - refractivity(10000.0)
    )
    assert dar_shift(np.array(3600.0)) / -dar_shift(np.array(10000.0)) == pytest.approx(ratio)
    assert 1.2 < ratio < 1.5
    flat = small(dar=False)
    assert (flat.xpos.values == flat.xpos.values[:, :1]).all()


def test_noise_statistics_and_snr_definition():
    clean = small(nwave=200, wave_chunk=64)
    noisy = small(nwave=200, wave_chunk=64, noise=8.0)
    np.testing.assert_array_equal(clean.xpos.values, noisy.xpos.values)
    z = (noisy.flux.values.astype(float) - clean.flux.values) * np.sqrt(
        noisy.ivar.values.astype(float)
    )
    n = z.size
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.std() - 1) < 4 / np.sqrt(2 * n)
    # S/N of the brightest fiber at the reference channel is the requested one
    truth = read_truth(noisy)
    k = int(np.argmin(np.abs(noisy.wavelength.values - 5400)))
    f = clean.flux.values[:, k].astype(float)
    snr = f.max() * np.sqrt(noisy.ivar.values[f.argmax(), k])
    assert snr == pytest.approx(8.0, rel=1e-5)
    assert truth["observation.f_ref"] == pytest.approx(f.max(), rel=1e-6)
    # variance grows with flux (object Poisson) above a sky floor
    var = 1 / noisy.ivar.values.astype(float)
    s = truth["observation.photons_per_unit"]
    np.testing.assert_allclose(
        var, (np.maximum(clean.flux.values, 0) + 0.1 * f.max()) / s, rtol=1e-5
    )


def test_dead_fibers_and_bad_pixels_are_flagged_with_zero_ivar():
    ds = small(nwave=100, noise=20, dead_fibers=3, bad_pixel_fraction=0.05)
    truth = read_truth(ds)
    dead_ids = np.asarray(truth["observation.dead_fibers"])
    assert dead_ids.size == 3 and np.unique(dead_ids).size == 3
    dead = np.isin(ds.fiber.values, dead_ids)[:, None] & np.ones(ds.sizes["wavelength"], bool)
    mask, ivar, flux = ds.mask.values, ds.ivar.values, ds.flux.values
    assert (
        ((mask[dead] & RSS_DEADFIBER) != 0).all()
        and (ivar[dead] == 0).all()
        and (flux[dead] == 0).all()
    )
    assert ((mask[~dead] & RSS_DEADFIBER) == 0).all()
    rejected = (mask & RSS_REJECT) != 0
    assert (ivar[rejected] == 0).all()
    assert (ivar[~dead & ~rejected] > 0).all()
    frac = rejected[~dead].mean()
    n = rejected[~dead].size
    assert abs(frac - 0.05) < 4 * np.sqrt(0.05 * 0.95 / n)
    assert validate_rss(ds) == []


def test_lenslet_array_geometry():
    x, y = lenslet_array(50, 0.75)
    assert x.size == 50
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) + np.eye(50) * 99
    np.testing.assert_allclose(
        d.min(axis=1), 0.75, rtol=1e-12
    )  # contiguous, every lenslet touches one
    assert np.hypot(x, y).max() < 4 * 0.75 + 1e-9  # filled from the centre outwards
    ds = simulate_rss(None, lenslets=50, nwave=5)
    assert ds.sizes["exposure"] == 1 and ds.sizes["spectrum"] == 50
    assert ds.attrs[N.ATTR_FIBER_RADIUS] == pytest.approx(
        0.75 * np.sqrt(np.sqrt(3) / (2 * np.pi)), rel=1e-14
    )  # equal-area circle of the hexagonal cell
    assert read_truth(ds)["observation.fiber_radius_arcsec"] == ds.attrs[N.ATTR_FIBER_RADIUS]


def test_wavelength_grid():
    w = log_wavelength()
    assert w.size == 4563 and w[0] == pytest.approx(3622) and w[-1] == pytest.approx(10354)
    np.testing.assert_allclose(np.diff(np.log10(w)), 1e-4, rtol=1e-3)
    window = log_wavelength(100, (6500.0, 6700.0))
    assert window.size == 100 and window[0] == pytest.approx(6500.0)
    with pytest.raises(ValueError, match="increasing positive"):
        log_wavelength(10, (5000.0, 4000.0))


def test_failed_run_leaves_nothing(tmp_path):
    class Exploding(PointSource):
        def spectrum(self, wave):
            if wave[0] > 6000:
                raise RuntimeError("boom")
            return super().spectrum(wave)

    with pytest.raises(RuntimeError, match="boom"):
        simulate_rss(
            tmp_path / "x.zarr",
            scene=Exploding(),
            nwave=60,
            wave_chunk=10,
            noise_ref_wavelength=4000,
        )
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="do not form a hexagonal bundle"):
        simulate_rss(None, bundle=20, nwave=4)
    with pytest.raises(ValueError, match="unknown scene 'blob'"):
        simulate_rss(None, scene="blob", nwave=4)
    with pytest.raises(ValueError, match="S/N must be a positive"):
        simulate_rss(None, noise=-1.0, nwave=4)
    with pytest.raises(ValueError, match="sky_fraction must be > 0"):
        simulate_rss(None, noise=5.0, sky_fraction=0.0, nwave=4)
    with pytest.raises(ValueError, match="dead_fibers must be between 0 and 19"):
        simulate_rss(None, dead_fibers=25, nwave=4)


def test_streaming_memory_is_bounded(tmp_path):
    """127 fibers x 9 exposures x 1600 channels (51 MB uncompressed): the peak of Python-traced memory
    while simulating, writing and validating stays at a few chunks, far below the data size."""
    simulate_rss(
        tmp_path / "warm.zarr", bundle=7, exposures=1, nwave=4, noise=5
    )  # first-use imports
    n_spec, n_wave = 127 * 9, 1600
    size = n_spec * n_wave * (4 + 4 + 4 + 8 + 8)
    tracemalloc.start()
    try:
        ds = simulate_rss(
            tmp_path / "big.zarr",
            bundle=127,
            exposures=9,
            nwave=n_wave,
            wave_chunk=50,
            noise=20,
            bad_pixel_fraction=0.001,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.sizes["spectrum"] == n_spec and ds.flux.chunks[1][0] == 50
    assert peak < size / 4, (peak, size)


def test_cli_simulate_and_overwrite(tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    assert (
        main(
            [
                "simulate",
                str(out),
                "--bundle",
                "7",
                "--exposures",
                "3",
                "--nwave",
                "30",
                "--scene",
                "binary",
                "--noise",
                "10",
                "--dead-fibers",
                "1",
                "--wave-chunk",
                "8",
                "--seed",
                "2",
                "--no-dar",
            ]
        )
        == 0
    )
    assert "21 spectra x 30 channels" in capsys.readouterr().out
    ds = open_rss(out)
    assert ds.flux.chunks[1] == (8, 8, 8, 6)
    assert (ds.xpos.values == ds.xpos.values[:, :1]).all()
    first = ds.flux.values.copy()
    assert main(["simulate", str(out), "--nwave", "10"]) == 1
    assert "already exists" in capsys.readouterr().err
    np.testing.assert_array_equal(open_rss(out).flux.values, first)  # untouched
    assert main(["simulate", str(out), "--lenslets", "30", "--nwave", "10", "--overwrite"]) == 0
    assert open_rss(out).sizes["spectrum"] == 30
    assert main(["validate", str(out)]) == 0
    with pytest.raises(SystemExit):  # argparse usage error
        main(["simulate", str(tmp_path / "n.zarr"), "--noise", "-3"])
    assert "--noise S/N must be > 0" in capsys.readouterr().err


def test_in_memory_equals_store(tmp_path):
    a = small(scene="binary", noise=5)
    b = simulate_rss(
        tmp_path / "s.zarr",
        bundle=19,
        exposures=6,
        nwave=40,
        wave_chunk=16,
        seed=3,
        scene="binary",
        noise=5,
    )
    b = b.load()
    xr.testing.assert_equal(a, b)
    assert a.attrs == b.attrs
