"""Point-source acceptance through the whole engine (simulate -> Zarr RSS -> build -> cube):
19-fiber bundle, 9 jittered exposures, 1.19" seeing (Liu et al. 2020 Table 1: kernel 1.905",
CRR 1.973", Shepard 2.316")."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from crrxr.core.grid import Grid
from crrxr.core.kernel import kernel_fwhm, seeing_at
from crrxr.core.psf import fit_kernel_fwhm, neighbour_correlation
from crrxr.engine.build import run_build
from crrxr.simulate import simulate_rss


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    d = tmp_path_factory.mktemp("psf")
    wave = np.linspace(
        6150.0, 6200.0, 6
    )  # contains the r band (6176.58 A): PSF + correlation stored
    rss = d / "rss.zarr"
    sim = simulate_rss(
        rss,
        bundle=19,
        exposures=9,
        seeing=1.19,
        seeing_jitter=0.05,
        jitter=0.05,
        wavelength=wave,
        scene="point",
        noise=None,
        dar=False,
        seed=3,
    )
    out = {}
    for method in ("crr", "shepard"):
        store = d / f"{method}.zarr"
        run_build(
            rss, store, method=method, wave_chunk=4, scheduler="threads", workers=2, progress=False
        )
        out[method] = xr.open_zarr(store).load()
    return sim.load(), out


def test_point_source_fwhm_crr_vs_shepard(cubes):
    rss, out = cubes
    ref = float(rss["wavelength"][3])
    seeing = float(np.mean(seeing_at(rss["seeing_fwhm"].values, ref)))
    k = kernel_fwhm(seeing)
    fw = {}
    for method, cube in out.items():
        grid = Grid(float(cube.x[1] - cube.x[0]), cube.sizes["x"])
        img = cube["flux"].isel(wavelength=3).values
        good = (cube["mask"].isel(wavelength=3).values & 1024) == 0
        fw[method] = fit_kernel_fwhm(img, grid, use=good).fwhm
    print(f"kernel {k:.3f} CRR {fw['crr']:.3f} Shepard {fw['shepard']:.3f}")
    assert abs(fw["crr"] / k - 1) < 0.05, (fw, k)
    assert fw["shepard"] / k >= 1.12, (fw, k)
    # the stored PSF image agrees with the reconstructed point source
    crr = out["crr"]
    grid = Grid(float(crr.x[1] - crr.x[0]), crr.sizes["x"])
    assert abs(fit_kernel_fwhm(crr["psf"].isel(band=0).values, grid).fwhm / fw["crr"] - 1) < 0.03


def test_neighbour_correlation_crr_far_below_shepard(cubes):
    _, out = cubes
    rho1 = {}
    for method, cube in out.items():
        assert list(cube["band"].values) == ["r"]
        grid = Grid(float(cube.x[1] - cube.x[0]), cube.sizes["x"])
        pairs = (cube["pair_i"].values, cube["pair_j"].values)
        rho1[method] = neighbour_correlation(
            cube["correlation"].isel(band=0).values, grid, pairs=pairs
        )
    print(f"rho 1 px / 2 px: {rho1}")
    assert rho1["shepard"][0] > 0.6 and rho1["crr"][0] < 0.3, rho1
