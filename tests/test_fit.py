"""Fits: the point-source response against numerical integration, acceptance on simulated cubes
through the CLI (both routes, CRR and Shepard), pulls over >= 100 noise realisations."""

import numpy as np
import pytest
import xarray as xr

import crrxr
from crrxr.cli import main
from crrxr.core.config import CoreConfig
from crrxr.core.grid import Grid
from crrxr.core.response import point_source_fluxes
from crrxr.core.weights import channel_weights
from crrxr.fit.models import Samples, cube_data, model_spec, rss_data, sources_of, used_pixels
from crrxr.fit.run import fit_cube
from crrxr.fit.solve import fit_data
from crrxr.params import ParameterStore
from crrxr.simulate import Binary, PointSource, read_truth, simulate_rss
from crrxr.simulate.geometry import hex_bundle


def _fiber_flux_by_quadrature(px, py, sx, sy, fwhm, R=1.0, step=0.01):
    """Flux in a fiber of radius R at (px, py) of a unit source at (sx, sy): the double Gaussian
    (sigma1 = FWHM/2.355/1.05, sigma2 = 2 sigma1, outer flux 1/9 of the inner) summed over the disk."""
    s1 = fwhm / 2.355 / 1.05
    s2 = 2 * s1
    u = np.arange(-R + step / 2, R, step)
    U, V = np.meshgrid(u, u)
    inside = U**2 + V**2 <= R**2
    r2 = (px + U[inside] - sx) ** 2 + (py + V[inside] - sy) ** 2
    g = 0.9 * np.exp(-r2 / (2 * s1**2)) / (2 * np.pi * s1**2)
    g += 0.1 * np.exp(-r2 / (2 * s2**2)) / (2 * np.pi * s2**2)
    return g.sum() * step**2


def test_point_source_response_matches_quadrature():
    cfg = CoreConfig()
    px = np.array([0.0, 1.3, -2.0, 0.4])
    py = np.array([0.0, 0.2, 1.1, -2.7])
    fw = np.array([1.0, 1.2, 1.5, 2.0])
    got = point_source_fluxes(px, py, fw, [(0.3, -0.2, 50.0), (1.0, 1.0, 7.0)], cfg, background=2.0)
    want = [
        50 * _fiber_flux_by_quadrature(a, b, 0.3, -0.2, f)
        + 7 * _fiber_flux_by_quadrature(a, b, 1.0, 1.0, f)
        + 2.0 * np.pi
        for a, b, f in zip(px, py, fw)
    ]
    np.testing.assert_allclose(got, want, rtol=2e-3)


def _build(tmp, scene, method, seed, noise=100.0, nwave=3):
    rss = tmp / f"rss{seed}.zarr"
    if not rss.exists():
        simulate_rss(
            rss,
            bundle=19,
            exposures=9,
            nwave=nwave,
            wave_range=(5400.0, 5600.0),
            scene=scene,
            noise=noise,
            seed=seed,
        )
    cube = tmp / f"{method}{seed}.zarr"
    crrxr.build_cube(rss, cube, {"method": method}, scheduler="synchronous", progress=False)
    return rss, cube


@pytest.mark.parametrize("method,seed", [("crr", 1), ("crr", 2), ("shepard", 3)])
def test_point_source_recovered_by_both_routes(tmp_path, method, seed, capsys):
    src = PointSource(x=0.4 - 0.3 * seed, y=-0.5 + 0.2 * seed, flux=200.0)
    rss, cube = _build(tmp_path, src, method, seed)
    truth = read_truth(xr.open_zarr(rss))
    for route in ("cube", "rss"):
        assert main(["fit", "source", str(cube), "--rss", str(rss), "--data", route]) == 0
    fc = xr.open_zarr(cube, group="fits/source").load()
    fr = xr.open_zarr(cube, group="fits/source_rss").load()
    xr.align(fc, xr.open_zarr(cube), join="exact")
    assert (fc["fit_status"] == 0).all() and (fr["fit_status"] == 0).all()
    for f in (fc, fr):
        c = f["fit_coefficients"]
        dx = c.sel(param="source.x_arcsec") - truth["source.x_arcsec"]
        dy = c.sel(param="source.y_arcsec") - truth["source.y_arcsec"]
        assert float(np.hypot(dx, dy).max()) <= 0.03
        rel = c.sel(param="source.flux") / truth["source.flux"] - 1
        assert float(abs(rel).max()) <= 0.02
    # the routes agree within their errors
    diff = abs(fc["fit_coefficients"] - fr["fit_coefficients"])
    assert bool((diff <= 2 * np.maximum(fc["fit_stderr"], fr["fit_stderr"])).all())
    # chi2 per degree of freedom near 1 for the right model with the right covariance
    red = fc["fit_chi2"] / fc["fit_dof"]
    assert float(red.min()) > 0.5 and float(red.max()) < 1.6
    assert list(fc["param_units"].values)[:2] == ["arcsec", "arcsec"]


@pytest.mark.parametrize("seed,pa", [(4, 35.0), (5, 250.0)])
def test_binary_recovered(tmp_path, seed, pa):
    scene = Binary(separation=2.0 + 0.8 * (seed - 3), position_angle=pa, contrast=0.3, flux=200.0)
    rss, cube = _build(tmp_path, scene, "crr", seed, nwave=2)
    truth = read_truth(xr.open_zarr(rss))
    fit = fit_cube(cube, "binary", rss)
    c = fit["fit_coefficients"]
    assert (fit["fit_status"] == 0).all()
    sep = c.sel(param="binary.separation_arcsec") - truth["binary.separation_arcsec"]
    dpa = (
        c.sel(param="binary.position_angle_deg") - truth["binary.position_angle_deg"] + 180
    ) % 360 - 180
    assert float(abs(sep).max()) <= 0.05
    assert float(abs(dpa).max()) <= 1.0
    assert float(abs(c.sel(param="binary.contrast") - 0.3).max()) < 0.03
    # derived keys from the resolver: secondary position
    d = fit["fit_derived"]
    np.testing.assert_allclose(
        d.sel(derived="binary.secondary_x_arcsec"), truth["binary.secondary_x_arcsec"], atol=0.08
    )
    # Fisher eigenvalues sorted, largest first; eigenvectors orthonormal
    ev = fit["fit_fisher_eigenvalues"].values[0]
    assert np.all(np.diff(ev) <= 0)
    V = fit["fit_fisher_eigenvectors"].values[0]
    np.testing.assert_allclose(V @ V.T, np.eye(6), atol=1e-8)
    # the covariance is the inverse Fisher information
    np.testing.assert_allclose(
        fit["fit_covariance"].values[0] @ fit["fit_fisher"].values[0], np.eye(6), atol=1e-6
    )


def _geometry(n_exp, seed):
    rng = np.random.default_rng(seed)
    fx, fy = hex_bundle(19)
    d = rng.normal(0, 0.7, (n_exp, 2))
    x = np.concatenate([fx + d[e, 0] for e in range(n_exp)])
    y = np.concatenate([fy + d[e, 1] for e in range(n_exp)])
    fw = np.repeat(rng.normal(1.4, 0.05, n_exp), 19)
    return x, y, fw, rng


@pytest.mark.parametrize(
    "kind,method,truth,n_exp,n_real",
    [
        (
            "source",
            "crr",
            {
                "source.x_arcsec": 0.3,
                "source.y_arcsec": -0.4,
                "source.flux": 800.0,
                "source.background": 0.5,
            },
            4,
            200,
        ),
        (
            "binary",
            "shepard",
            {
                "binary.x_arcsec": -0.2,
                "binary.y_arcsec": 0.1,
                "binary.separation_arcsec": 2.6,
                "binary.position_angle_deg": 120.0,
                "binary.contrast": 0.3,
                "binary.flux_total": 3000.0,
            },
            6,
            150,
        ),
    ],
)
def test_pulls_have_unit_width_for_both_routes(kind, method, truth, n_exp, n_real):
    """>= 100 noise realisations: (fit - truth) / stderr has mean ~0 and width within 15% of 1.

    The width of n pulls scatters by ~1/sqrt(2n) (7% at n = 100): 150-200 realisations keep the
    15% window at >= 2.6 sigma for each parameter of each route."""
    x, y, fw, rng = _geometry(n_exp, 9)
    n = x.size
    cfg = CoreConfig(method=method, pixel_scale=0.75)
    grid = Grid(0.75, 21)
    spec, res = model_spec(kind)
    src, bg = sources_of(kind, ParameterStore(truth))
    f0 = point_source_fluxes(x, y, fw, src, cfg, bg)
    var = (np.maximum(f0, 0) + 20.0) / 2.0
    ivar = 1 / var
    mask = np.zeros(n, np.uint32)
    w = channel_weights(x, y, fw, f0, ivar, mask, grid, cfg)
    tv = np.array([truth[k] for k in spec.primitive_keys()])
    # mask a few spaxels so that the cube route does not see everything the fibers do
    cube_mask = np.zeros(grid.shape, np.uint32)
    cube_mask[10, 8:12] = 1024
    pulls = {"cube": [], "rss": []}
    for _ in range(n_real):
        f = f0 + rng.normal(size=n) * np.sqrt(var)
        t = Samples(x, y, fw, f, ivar)
        img = w.apply(f).astype(np.float32)  # the cube stores float32
        pix = used_pixels(cube_mask, img, [w])
        fits = {
            "cube": fit_data(kind, spec, res, cube_data(kind, cfg, grid, img, pix, [w], [t])),
            "rss": fit_data(kind, spec, res, rss_data(kind, cfg, [t])),
        }
        for route, fit in fits.items():
            assert fit.status == 0
            pulls[route].append((fit.values - tv) / fit.stderr)
    for route, p in pulls.items():
        p = np.array(p)
        assert np.all(np.abs(p.std(axis=0) - 1) <= 0.15), (route, p.std(axis=0))
        assert np.all(np.abs(p.mean(axis=0)) <= 0.3), (route, p.mean(axis=0))


def test_fit_refuses_wrong_rss_and_existing_group(tmp_path, capsys):
    rss, cube = _build(tmp_path, "point", "crr", 8, nwave=3)
    other = tmp_path / "other.zarr"
    simulate_rss(other, bundle=7, exposures=3, nwave=3, wave_range=(5400.0, 5600.0), seed=9)
    assert main(["fit", "source", str(cube), "--rss", str(other)]) == 1
    assert "not the RSS" in capsys.readouterr().err
    assert main(["fit", "source", str(cube), "--rss", str(rss)]) == 0
    assert main(["fit", "source", str(cube), "--rss", str(rss)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["fit", "psf", str(cube), "--rss", str(rss), "--data", "rss"]) == 1
    assert main(["fit", "source", str(cube), "--rss", str(rss), "--wavelengths", "9000"]) == 1
    assert "outside the cube's range" in capsys.readouterr().err
    single = xr.open_zarr(cube, group="fits/source").load()
    # one fit of the mean of the 3 channels, stored at the middle channel
    args = ["fit", "source", str(cube), "--rss", str(rss), "--bin", "3", "--overwrite"]
    assert main(args) == 0
    binned = xr.open_zarr(cube, group="fits/source").load()
    assert list(binned["fit_status"].values) == [4, 0, 4]
    assert int(binned["fit_bin_start"][1]) == 0 and int(binned["fit_bin_stop"][1]) == 3
    # independent noise in the channels: the mean of 3 has errors smaller by sqrt(3)
    ratio = binned["fit_stderr"].isel(wavelength=1) / single["fit_stderr"].mean("wavelength")
    np.testing.assert_allclose(ratio.values, 1 / np.sqrt(3), rtol=0.1)
    args = ["fit", "source", str(cube), "--rss", str(rss), "--wavelengths", "5590", "--overwrite"]
    assert main(args) == 0
    one = xr.open_zarr(cube, group="fits/source").load()
    assert list(one["fit_status"].values) == [4, 4, 0]
    # the same fits under another executor, one bin per task: identical
    threads = fit_cube(
        cube, "source", rss, scheduler="threads", workers=2, bins_per_task=1, write=False
    )
    first = fit_cube(cube, "source", rss, write=False)
    xr.testing.assert_identical(threads, first)


def test_fit_of_a_reuse_cube_records_the_cube_reuse_bound(tmp_path):
    """The cube route models the data through exact weights; on a cube built with interpolated
    weights the fit records, per bin, the cube's largest reuse_bound over the bin's channels (0 on
    an exact cube) and still recovers the source."""
    rss = tmp_path / "rss.zarr"
    simulate_rss(
        rss,
        bundle=19,
        exposures=9,
        nwave=32,
        wave_range=(4000.0, 4100.0),
        scene=PointSource(x=0.3, y=-0.4, flux=200.0),
        noise=100.0,
        dar_amplitude=1.0,
        seed=12,
    )
    params = {"kernel.truncation_radius_arcsec": 6.0}
    exact, fast = tmp_path / "exact.zarr", tmp_path / "fast.zarr"
    crrxr.build_cube(rss, exact, params, scheduler="synchronous", progress=False)
    crrxr.build_cube(
        rss, fast, {**params, "crr.reuse_tolerance": 0.01}, scheduler="synchronous", progress=False
    )
    bound = xr.open_zarr(fast)["reuse_bound"].values
    assert (xr.open_zarr(fast)["channel_exact"].values == 0).any() and bound.max() > 0
    truth = read_truth(xr.open_zarr(rss))
    for cube, bounds in ((exact, np.zeros_like(bound)), (fast, bound)):
        fit = fit_cube(cube, "source", rss, bin_size=8, write=False)
        ok = fit["fit_status"].values == 0
        assert ok.sum() == 4
        b0, b1 = fit["fit_bin_start"].values[ok], fit["fit_bin_stop"].values[ok]
        want = [bounds[a:b].max() for a, b in zip(b0, b1)]
        np.testing.assert_allclose(fit["fit_reuse_bound"].values[ok], want, rtol=1e-6)
        flux = fit["fit_coefficients"].sel(param="source.flux").values[ok]
        assert np.all(np.abs(flux / truth["source.flux"] - 1) <= 0.02)
