"""Sky subtraction: synthetic RSS with a known sky added to every fiber; dense/Monte-Carlo references."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from crrxr.core.masks import RSS_NOSKY, RSS_REJECT
from crrxr.io.sky import SkyError, sky_record, subtract_sky

N_EXP, N_FIB, N_WAVE = 3, 19, 60
SKY_ROWS = (0, 5, 11, 17)  # fiber ids that see blank sky


def make_rss(
    *, n_exp=N_EXP, n_fib=N_FIB, n_wave=N_WAVE, sigma=0.5, seed=0, sky_fibers=True, constant=False
):
    """RSS with object + per-exposure sky + Gaussian noise; returns (rss, object flux, sky)."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(5000.0, 6000.0, n_wave)
    n = n_exp * n_fib
    fiber = np.tile(np.arange(n_fib), n_exp)
    eidx = np.repeat(np.arange(n_exp), n_fib)
    is_sky = np.isin(fiber, SKY_ROWS)
    obj = np.where(is_sky[:, None], 0.0, rng.uniform(1, 5, (n, 1)) * (1 + 0.1 * np.sin(wave / 30)))
    if constant:
        sky = np.full((n_exp, n_wave), 20.0)
    else:
        sky = 20 + 3 * np.arange(n_exp)[:, None] + 10 * np.exp(-0.5 * ((wave - 5577) / 3) ** 2)
    sig = sigma * rng.uniform(0.7, 1.3, (n, n_wave))
    flux = obj + sky[eidx] + rng.normal(0, 1, (n, n_wave)) * sig
    dims = ("spectrum", "wavelength")
    rss = xr.Dataset(
        {
            "flux": (dims, flux.astype(np.float32), {"units": "1e-17 erg / (s cm2 Angstrom)"}),
            "ivar": (dims, (1 / sig**2).astype(np.float32)),
            "mask": (dims, np.zeros((n, n_wave), np.uint32)),
            "xpos": (dims, np.zeros((n, n_wave))),
            "ypos": (dims, np.zeros((n, n_wave))),
            "exposure_index": (("spectrum",), eidx),
            "seeing_fwhm": (("exposure",), np.full(n_exp, 1.5)),
        },
        coords={
            "wavelength": wave,
            "exposure": np.arange(n_exp),
            "spectrum": np.arange(n),
            "fiber": ("spectrum", fiber),
        },
        attrs={"history": "simulated"},
    )
    if sky_fibers:
        rss["sky_fiber"] = (("spectrum",), is_sky)
    return rss, obj, sky


def _weighted_sky(rss):
    """Dense reference: per exposure, sum(ivar f) / sum(ivar) over usable sky rows; variance 1/sum."""
    f, iv = rss["flux"].values.astype(float), rss["ivar"].values.astype(float)
    usable = (rss["mask"].values & RSS_REJECT) == 0
    eidx, sky = rss["exposure_index"].values, rss["sky_fiber"].values
    est, var = [], []
    for e in range(rss.sizes["exposure"]):
        rows = sky & (eidx == e)
        w = iv[rows] * usable[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            est.append((w * f[rows]).sum(0) / w.sum(0))
            var.append(1 / w.sum(0))
    return np.array(est), np.array(var)


def test_recovers_object_within_noise_and_propagates_ivar():
    rss, obj, sky = make_rss()
    out = subtract_sky(rss)
    est, var = _weighted_sky(rss)
    np.testing.assert_allclose(out["sky"].values, est, rtol=1e-12)
    # ivar formula: 1/ivar_new = 1/ivar + var_sky of the row's exposure
    eidx = rss["exposure_index"].values
    expected_ivar = 1 / (1 / rss["ivar"].values.astype(float) + var[eidx])
    np.testing.assert_allclose(out["ivar"].values, expected_ivar, rtol=2e-7)
    assert out["ivar"].dtype == np.float32 and out["flux"].dtype == np.float32
    # science rows: residual against the true object is noise with the propagated variance
    science = ~rss["sky_fiber"].values
    resid = out["flux"].values[science].astype(float) - obj[science]
    chi2 = np.mean(resid**2 * out["ivar"].values[science])
    assert 0.9 < chi2 < 1.1, chi2  # 2700 samples: chi2/N = 1 +- 0.03 (1 sigma)
    # the sky itself is gone: mean residual ~ 0 within its error (the sky error is shared by all
    # fibers of an exposure at a channel, so it averages down over N_EXP x N_WAVE only)
    sigma_mean = np.sqrt(
        var.mean() / var.size + np.mean(1 / rss["ivar"].values[science]) / resid.size
    )
    assert abs(resid.mean()) < 5 * sigma_mean
    assert int((out["mask"].values & RSS_NOSKY).sum()) == 0
    np.testing.assert_allclose(out["sky"].values, sky, atol=6 * np.sqrt(var).max())


def test_monte_carlo_variance_of_subtracted_flux():
    """Empirical variance of (subtracted - truth) over many channels matches 1/ivar_new."""
    rss, obj, _ = make_rss(n_exp=1, n_wave=4000, constant=True, seed=3)
    rng = np.random.default_rng(7)  # unit noise everywhere, so the expected variance is exact
    rss["ivar"] = (("spectrum", "wavelength"), np.ones(rss["ivar"].shape, np.float32))
    noisy = obj + 20.0 + rng.normal(0, 1, obj.shape)
    rss["flux"] = (("spectrum", "wavelength"), noisy.astype(np.float32))
    out = subtract_sky(rss)
    science = np.flatnonzero(~rss["sky_fiber"].values)
    resid = out["flux"].values[science].astype(float) - obj[science]
    # sigma = 1, four sky fibers: var = 1 + 1/4, identical for every channel
    np.testing.assert_allclose(1 / out["ivar"].values[science], 1.25, rtol=1e-6)
    emp = resid.var(axis=1)  # per fiber over 4000 channels: relative error ~ 2.2 %
    assert np.all(np.abs(emp / 1.25 - 1) < 0.1), emp


def test_masked_sky_samples_are_excluded_and_undefined_sky_flags_nosky():
    rss, _, _ = make_rss()
    mask = rss["mask"].values.copy()
    eidx = rss["exposure_index"].values
    sky_rows = np.flatnonzero(rss["sky_fiber"].values & (eidx == 1))
    mask[sky_rows[0], 10] |= RSS_REJECT  # one sky sample rejected
    mask[sky_rows, 20] |= RSS_REJECT  # all sky samples of exposure 1 at channel 20 rejected
    rss["mask"] = (("spectrum", "wavelength"), mask)
    flux_big = rss["flux"].values.copy()
    flux_big[sky_rows[0], 10] += 1e4  # would wreck the estimate if it were used
    rss["flux"] = (("spectrum", "wavelength"), flux_big)
    out = subtract_sky(rss)
    est, _ = _weighted_sky(rss)
    np.testing.assert_allclose(out["sky"].values[1, 10], est[1, 10], rtol=1e-12)
    rows1 = eidx == 1
    assert np.all(out["mask"].values[rows1, 20] & RSS_NOSKY)
    assert np.all(out["ivar"].values[rows1, 20] == 0)
    np.testing.assert_array_equal(out["flux"].values[rows1, 20], rss["flux"].values[rows1, 20])
    assert np.isnan(out["sky"].values[1, 20]) and out["sky_ivar"].values[1, 20] == 0
    others = ~rows1
    assert not np.any(out["mask"].values[others, 20] & RSS_NOSKY)


def test_median_is_robust_to_a_contaminated_sky_fiber():
    rss, obj, sky = make_rss(sigma=0.2)
    eidx = rss["exposure_index"].values
    bad_row = np.flatnonzero(rss["sky_fiber"].values & (eidx == 0))[0]
    flux = rss["flux"].values.copy()
    flux[bad_row] += 50.0  # a star in one sky fiber
    rss["flux"] = (("spectrum", "wavelength"), flux)
    mean = subtract_sky(rss, method="mean")
    med = subtract_sky(rss, method="median")
    err_mean = np.abs(mean["sky"].values[0] - sky[0]).mean()
    err_med = np.abs(med["sky"].values[0] - sky[0]).mean()
    assert err_med < 1.0 < err_mean
    # median variance: pi/2 * sum(sigma_i^2) / n^2 over the 4 sky samples
    rows = rss["sky_fiber"].values & (eidx == 2)
    expected = 0.5 * np.pi * (1 / rss["ivar"].values[rows].astype(float)).sum(0) / rows.sum() ** 2
    np.testing.assert_allclose(1 / med["sky_ivar"].values[2], expected, rtol=1e-12)
    assert sky_record(med)["estimator"] == "median"


def test_provided_sky_spectrum():
    rss, obj, sky = make_rss(sky_fibers=False)
    sky_ivar = np.full(sky.shape, 4.0)
    sky_ivar[2, 7] = 0.0  # undefined there
    rss["sky"] = (("exposure", "wavelength"), sky)
    rss["sky_ivar"] = (("exposure", "wavelength"), sky_ivar)
    out = subtract_sky(rss)
    eidx = rss["exposure_index"].values
    f = rss["flux"].values
    expected = (f.astype(float) - sky[eidx]).astype(np.float32)
    expected[eidx == 2, 7] = f[eidx == 2, 7]
    np.testing.assert_array_equal(out["flux"].values, expected)
    iv = rss["ivar"].values.astype(float)
    exp_ivar = 1 / (1 / iv + 0.25)
    exp_ivar[eidx == 2, 7] = 0
    np.testing.assert_allclose(out["ivar"].values, exp_ivar, rtol=2e-7)
    assert np.all(out["mask"].values[eidx == 2, 7] == RSS_NOSKY)
    assert np.count_nonzero(out["mask"].values) == N_FIB
    rec = sky_record(out)
    assert rec["source"] == "sky spectrum" and rec["sky_ivar_given"] is True
    # without sky_ivar the sky is noise-free: ivar unchanged
    out2 = subtract_sky(rss.drop_vars("sky_ivar"))
    np.testing.assert_array_equal(out2["ivar"].values, rss["ivar"].values)


def test_lazy_dask_matches_numpy_and_stays_lazy(tmp_path):
    rss, _, _ = make_rss()
    eager = subtract_sky(rss)
    lazy_in = rss.chunk({"wavelength": 16})  # 60 = 3 x 16 + 12: chunks that do not divide
    lazy = subtract_sky(lazy_in)
    assert isinstance(lazy["flux"].data, da.Array) and isinstance(lazy["sky"].data, da.Array)
    for var in ("flux", "ivar", "mask", "sky", "sky_ivar"):
        np.testing.assert_array_equal(lazy[var].values, eager[var].values)
    # from a zarr store, and per wavelength slice (as the engine calls it)
    rss.chunk({"wavelength": 16}).to_zarr(tmp_path / "rss.zarr", consolidated=False)
    stored = xr.open_zarr(tmp_path / "rss.zarr", consolidated=False)
    part = subtract_sky(stored.isel(wavelength=slice(16, 40))).load()
    np.testing.assert_array_equal(part["flux"].values, eager["flux"].values[:, 16:40])


def test_clear_errors():
    rss, _, _ = make_rss(sky_fibers=False)
    with pytest.raises(SkyError, match="sky_fiber.*sky\\(exposure, wavelength\\)"):
        subtract_sky(rss)
    rss2, _, _ = make_rss()
    flags = rss2["sky_fiber"].values.copy()
    flags[rss2["exposure_index"].values == 1] = False
    rss2["sky_fiber"] = (("spectrum",), flags)
    with pytest.raises(SkyError, match=r"exposure index\(es\) \[1\] have no sky fiber"):
        subtract_sky(rss2)
    with pytest.raises(SkyError, match="sky.method"):
        subtract_sky(make_rss()[0], method="mode")
    rss3, _, sky = make_rss(sky_fibers=False)
    rss3["sky"] = (("wavelength", "exposure"), sky.T)
    with pytest.raises(SkyError, match="dims"):
        subtract_sky(rss3)


def test_provenance_record_and_history():
    rss, _, _ = make_rss()
    out = subtract_sky(rss)
    rec = sky_record(out)
    assert rec["source"] == "sky fibers" and rec["method"] == "mean"
    assert rec["sky_fibers_per_exposure"] == [len(SKY_ROWS)] * N_EXP
    assert out.attrs["history"].startswith("simulated\nsky subtraction:")
    assert sky_record(rss) is None
    assert "sky_subtraction" not in rss.attrs  # input untouched
