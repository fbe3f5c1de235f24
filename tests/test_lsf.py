"""Cube line-spread function: RSS lsf_sigma -> build (same weights as the flux) -> LSFPRE/LSFPOST.

References written here: the second moment of a mixture of Gaussians by numerical integration,
dense Shepard weights from the fiber positions, and (for CRR) the linearity of the flux solve: the
cube of an RSS whose flux is sigma^2 divided by the cube of an RSS whose flux is 1.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from rss_fixtures import reuse_rss

from crrxr.core.lsf import combine_lsf
from crrxr.engine.build import build_cube
from crrxr.io.manga import export_logcube, ingest_manga_rss
from crrxr.simulate.rss_writer import simulate_rss

SIG2FWHM = 2 * np.sqrt(2 * np.log(2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_combination_is_the_second_moment_of_the_weighted_line_profile(seed):
    rng = np.random.default_rng(seed)
    n_pix, n_s = 4, 6
    w = rng.uniform(0.0, 1.0, (n_pix, n_s))
    w[:, 0] = -0.05  # CRR weights can be slightly negative
    sigma = rng.uniform(0.8, 3.0, n_s)
    lam = np.linspace(-40, 40, 40001)
    g = np.exp(-0.5 * (lam[None] / sigma[:, None]) ** 2) / (np.sqrt(2 * np.pi) * sigma[:, None])
    profile = w @ g / w.sum(axis=1, keepdims=True)  # unit-area line seen by each pixel
    moment = np.trapezoid(profile * lam**2, lam) / np.trapezoid(profile, lam)
    np.testing.assert_allclose(combine_lsf(w, sigma), np.sqrt(moment), rtol=1e-6)
    # not the weighted mean of sigma (which is smaller when the sigmas differ)
    assert np.all(np.abs(w @ sigma / w.sum(axis=1) - np.sqrt(moment)) > 1e-3)


def _sim(spread: float, seed: int, nwave: int = 6, sigma: float = 1.3):
    return simulate_rss(
        None,
        bundle=19,
        exposures=3,
        nwave=nwave,
        wave_range=(4000.0, 9000.0),
        noise=5.0,
        seed=seed,
        lsf_sigma=sigma,
        lsf_spread=spread,
    ).load()


def _usable(rss: xr.Dataset, bad_bits: int) -> np.ndarray:
    return (rss["ivar"].values > 0) & ((rss["mask"].values & bad_bits) == 0)


@pytest.mark.parametrize(("spread", "wave_chunk"), [(0.3, 2), (0.6, 5)])
def test_shepard_cube_lsf_matches_dense_weights(tmp_path, spread, wave_chunk):
    rss = _sim(spread, seed=4)
    sig = rss["lsf_sigma"].values
    assert np.ptp(sig[:19, 0]) > 0.5 * spread  # the LSF really varies between fibers
    cube = build_cube(
        rss,
        tmp_path / "c.zarr",
        method="shepard",
        scheduler="synchronous",
        wave_chunk=wave_chunk,
        progress=False,
    ).load()
    values = json.loads(cube.attrs["crrxr_params"])["values"]
    s, rlim = values["shepard.sigma_arcsec"], values["shepard.rlim_arcsec"]
    usable = _usable(rss, int(values["mask.bad_bits"]))
    xx, yy = np.meshgrid(cube["x"].values, cube["y"].values)
    got = cube["lsf_sigma"].values
    for c in range(rss.sizes["wavelength"]):
        dx = xx.ravel()[:, None] - rss["xpos"].values[None, :, c]
        dy = yy.ravel()[:, None] - rss["ypos"].values[None, :, c]
        d = np.hypot(dx, dy)
        w = np.where((d < rlim) & usable[None, :, c], np.exp(-0.5 * (d / s) ** 2), 0.0)
        reached = w.sum(axis=1) > 0
        ref = np.full(d.shape[0], np.nan)
        ref[reached] = np.sqrt(w[reached] @ sig[:, c] ** 2 / w[reached].sum(axis=1))
        np.testing.assert_allclose(got[c].ravel(), ref, rtol=2e-6, equal_nan=True)
        assert reached.sum() > 100


def test_crr_cube_lsf_is_the_flux_solve_applied_to_sigma_squared(tmp_path):
    rss = _sim(0.5, seed=7, nwave=4)
    kw = dict(method="crr", scheduler="synchronous", progress=False, profile="manga-19")
    cube = build_cube(rss, tmp_path / "lsf.zarr", **kw).load()
    unit = rss.copy()
    unit["flux"] = xr.ones_like(rss["flux"])
    square = rss.copy()
    square["flux"] = (rss["flux"].dims, (rss["lsf_sigma"].values ** 2).astype(np.float32))
    den = build_cube(unit.drop_vars("lsf_sigma"), tmp_path / "u.zarr", **kw)["flux"].values
    num = build_cube(square.drop_vars("lsf_sigma"), tmp_path / "s.zarr", **kw)["flux"].values
    got = cube["lsf_sigma"].values
    ok = np.isfinite(got)
    assert ok.mean() > 0.3
    # float32 flux stores: relative agreement to float32 precision
    np.testing.assert_allclose(got[ok], np.sqrt(num[ok] / den[ok]), rtol=2e-5)
    # a mixture of the fibers' LSFs: typical values lie between the narrowest and the widest
    for c in range(got.shape[0]):
        lo, hi = np.percentile(rss["lsf_sigma"].values[:, c], [0, 100])
        assert lo < np.nanmedian(got[c][cube["mask"].values[c] == 0]) < hi


def test_constant_lsf_survives_crr_exactly(tmp_path):
    rss = _sim(0.0, seed=2, nwave=3, sigma=1.7)
    const = np.full(rss["lsf_sigma"].shape, 1.7)
    rss["lsf_sigma"] = (rss["lsf_sigma"].dims, const, rss["lsf_sigma"].attrs)
    cube = build_cube(
        rss, tmp_path / "c.zarr", method="crr", scheduler="synchronous", progress=False
    ).load()
    got = cube["lsf_sigma"].values
    covered = (cube["mask"].values & 1) == 0  # not NOCOV
    np.testing.assert_allclose(got[covered], 1.7, rtol=1e-5)


def test_export_writes_lsf_and_resolution(tmp_path):
    rss = _sim(0.4, seed=5, nwave=5)
    build_cube(rss, tmp_path / "c.zarr", method="shepard", scheduler="synchronous", progress=False)
    cube = xr.open_zarr(tmp_path / "c.zarr").load()
    out = export_logcube(tmp_path / "c.zarr", tmp_path / "manga-1-2-LOGCUBE.fits")
    wave = cube["wavelength"].values
    pre = cube["lsf_sigma"].values
    edges = np.concatenate([[wave[0] - (wave[1] - wave[0]) / 2], (wave[:-1] + wave[1:]) / 2])
    edges = np.concatenate([edges, [wave[-1] + (wave[-1] - wave[-2]) / 2]])
    width = np.diff(edges)
    with fits.open(out) as hdul:
        np.testing.assert_array_equal(hdul["LSFPRE"].data, pre)
        post = np.sqrt(pre.astype(np.float64) ** 2 + (width**2 / 12)[:, None, None])
        np.testing.assert_allclose(hdul["LSFPOST"].data, post, rtol=1e-6, equal_nan=True)
        # median over spaxels of R = lambda / (2.3548 sigma) (not lambda over the median sigma:
        # the two differ when an even number of spaxels averages the middle pair)
        r = np.array(
            [np.nanmedian(w / (SIG2FWHM * p)) for w, p in zip(wave, pre.astype(np.float64))]
        )
        np.testing.assert_allclose(hdul["PRESPECRES"].data, r, rtol=1e-6)
        assert hdul["LSFPRE"].header["BUNIT"] == "Angstrom"


def test_ingest_reads_lsfpre_and_lsfpost(tmp_path):
    from test_manga_end_to_end import write_logrss

    rss = _sim(0.3, seed=1, nwave=7)
    path = tmp_path / "manga-1-2-LOGRSS.fits"
    write_logrss(rss, path)
    pre = rss["lsf_sigma"].values
    post = pre * 1.1
    with fits.open(path, mode="append") as hdul:
        hdul.append(fits.ImageHDU(pre, name="LSFPRE"))
        hdul.append(fits.ImageHDU(post, name="LSFPOST"))
    got = xr.open_zarr(ingest_manga_rss(path, tmp_path / "rss.zarr", wave_chunk=3))
    np.testing.assert_array_equal(got["lsf_sigma"].values, pre)
    np.testing.assert_array_equal(got["lsf_sigma_post"].values, post)
    assert got["lsf_sigma"].attrs["units"] == "Angstrom"
    # a LSF image of the wrong shape is refused with its name
    bad = tmp_path / "manga-1-3-LOGRSS.fits"
    write_logrss(rss, bad)
    with fits.open(bad, mode="append") as hdul:
        hdul.append(fits.ImageHDU(pre[:, :3], name="LSFPRE"))
    with pytest.raises(ValueError, match="LSFPRE"):
        ingest_manga_rss(bad, tmp_path / "rss2.zarr")


def test_cube_lsf_is_bitwise_the_same_under_other_executors_and_chunks(tmp_path):
    rss = _sim(0.5, seed=9, nwave=5)
    runs = [("synchronous", 1, 2), ("threads", 2, 5), ("processes", 2, 3)]
    cubes = [
        build_cube(
            rss,
            tmp_path / f"{sched}-{chunk}.zarr",
            method="crr",
            scheduler=sched,
            workers=workers,
            wave_chunk=chunk,
            progress=False,
        )["lsf_sigma"].values
        for sched, workers, chunk in runs
    ]
    assert np.isfinite(cubes[0]).sum() > 100
    for other in cubes[1:]:
        np.testing.assert_array_equal(other, cubes[0])


@pytest.mark.parametrize(("start", "bad"), [(3650.0, 0.0), (7000.0, 0.003)])
def test_reuse_build_lsf_follows_the_weights_applied(tmp_path, start, bad):
    """A fast build (crr.reuse_tolerance > 0) writes the LSF of the weights each channel got:
    at a tolerance that accepts every interpolation (the plan then depends on geometry and ivar
    only) it is sqrt(cube(flux = sigma^2) / cube(flux = 1)) of fast builds; at 0.01 sigma it agrees
    with the exact build's LSF. In the blue the nodes are moved across selection changes; at 3 per
    mille masked samples they are removed from the nodes' solves."""
    rss = reuse_rss(None, 65, start, bad).load()
    cut = {"method": "crr", "kernel.truncation_radius_arcsec": 6.0}

    def build(data, name, tol):
        params = {**cut, "crr.reuse_tolerance": tol}
        path = tmp_path / f"{name}.zarr"
        return build_cube(data, path, params, scheduler="synchronous", progress=False).load()

    exact = build(rss, "exact", 0.0)
    fast = build(rss, "fast", 0.01)
    assert (~fast["channel_exact"].values.astype(bool)).sum() >= 30
    a, b = fast["lsf_sigma"].values, exact["lsf_sigma"].values
    np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
    ok = np.isfinite(a)
    assert ok.sum() > 1000
    rel = np.abs(a[ok] / b[ok] - 1)
    assert 0 < rel.max() <= 1e-4
    # the MaNGA export carries the fast cube's LSF as it is
    out = export_logcube(tmp_path / "fast.zarr", tmp_path / "manga-1-2-LOGCUBE.fits")
    with fits.open(out) as hdul:
        np.testing.assert_array_equal(hdul["LSFPRE"].data, a)
    sig = rss["lsf_sigma"]
    loose = build(rss, "loose", 1e6)
    squared = build(rss.assign(flux=sig**2), "squared", 1e6)
    unit = build(rss.assign(flux=xr.ones_like(sig)), "unit", 1e6)
    np.testing.assert_array_equal(squared["channel_exact"].values, loose["channel_exact"].values)
    np.testing.assert_array_equal(unit["channel_exact"].values, loose["channel_exact"].values)
    assert (~loose["channel_exact"].values.astype(bool)).sum() >= 50
    got = loose["lsf_sigma"].values
    ok = np.isfinite(got)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.sqrt(squared["flux"].values.astype(float) / unit["flux"].values)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-5)
