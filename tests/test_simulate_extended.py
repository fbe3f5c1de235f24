"""Extended scenes: the tabulated convolution against a brute-force kernel sum, and flux conservation."""

from __future__ import annotations

import numpy as np
import pytest

from crrxr.core.kernel import radial_kernel, seeing_at
from crrxr.simulate import Galaxy, read_truth, simulate_rss
from crrxr.simulate.geometry import lenslet_radius
from crrxr.simulate.scenes import sersic_b
from crrxr.simulate.wavegrid import channel_edges


def brute_force(
    galaxy: Galaxy, x: float, y: float, fwhm: float, radius: float
) -> tuple[float, float]:
    """pi R^2 sum_k K(|p - s_k|) S(s_k) h^2 on a fine grid, for the disk and the line map (per unit flux)."""
    h = 0.05
    g = np.arange(-12.0, 12.0 + h / 2, h)
    sx, sy = g[None, :], g[:, None]
    w = (
        np.pi
        * radius**2
        * radial_kernel(np.hypot(x - sx, y - sy), fwhm, fiber_radius=radius)
        * h**2
    )
    return float((w * galaxy.disk(sx, sy)).sum()), float(
        (w * galaxy.line_surface_brightness(sx, sy)).sum()
    )


def test_surface_brightness_maps_integrate_to_one():
    h = 0.025
    g = np.arange(-30.0, 30.0, h) + h / 2
    for gal in (
        Galaxy(sersic_n=1.0, r_eff=2.0, axis_ratio=0.6),
        Galaxy(sersic_n=2.5, r_eff=1.5),
        Galaxy(line_map="exponential", line_scale=2.0),
    ):
        assert (gal.disk(g[None, :], g[:, None]) * h * h).sum() == pytest.approx(1.0, rel=2e-3)
        assert (gal.line_surface_brightness(g[None, :], g[:, None]) * h * h).sum() == pytest.approx(
            1.0, rel=1e-4
        )
    # r_eff encloses half the light of a circular exponential disk
    gal = Galaxy(sersic_n=1.0, r_eff=2.0, axis_ratio=1.0)
    r = np.hypot(g[None, :], g[:, None])
    inner = (gal.disk(g[None, :], g[:, None]) * (r < 2.0) * h * h).sum()
    assert inner == pytest.approx(0.5, abs=3e-3)
    assert sersic_b(1.0) == pytest.approx(1.678, abs=1e-3)


def test_fiber_fluxes_match_brute_force_kernel_sum():
    gal = Galaxy(
        x=0.4,
        y=-0.3,
        flux=100.0,
        r_eff=2.0,
        axis_ratio=0.6,
        position_angle=40.0,
        line_flux=800.0,
        ring_radius=2.0,
        ring_width=0.7,
        redshift=0.0,
        sigma_kms=100.0,
    )
    wave = np.array([5000.0, 6560.0, 6564.6, 8000.0])
    ds = simulate_rss(None, bundle=19, exposures=3, wavelength=wave, scene=gal, seed=1)
    edges = channel_edges(wave)
    line = gal.line_spectrum(wave, edges[:-1], edges[1:])
    worst = 0.0
    for s in (0, 7, 20, 33, 45):
        e = int(ds.exposure_index[s])
        for k in range(wave.size):
            fwhm = float(seeing_at(ds.seeing_fwhm.values[e], wave[k]))
            disk, ring = brute_force(gal, float(ds.xpos[s, k]), float(ds.ypos[s, k]), fwhm, 1.0)
            expected = disk * 100.0 + ring * line[k]
            worst = max(worst, abs(float(ds.flux[s, k]) - expected) / expected)
    assert worst < 2e-4, worst  # documented in crrxr.simulate.extended


def test_flux_conservation_on_dense_lenslet_array():
    """Summed over a contiguous lenslet array, fiber fluxes x (cell area / top-hat area) give the total
    flux: the lattice sums the convolved image, and the kernel integrates to one."""
    gal = Galaxy(
        flux=50.0,
        r_eff=1.0,
        axis_ratio=0.8,
        line_flux=400.0,
        ring_radius=1.5,
        ring_width=0.5,
        redshift=0.0,
        sigma_kms=80.0,
    )
    center = gal.line_center
    wave = np.concatenate([[5400.0], np.linspace(center - 12, center + 12, 61)])
    pitch = 0.75
    ds = simulate_rss(None, lenslets=1141, lenslet_pitch=pitch, wavelength=wave, scene=gal, seed=2)
    radius = lenslet_radius(pitch)
    cell = np.sqrt(3) / 2 * pitch**2
    total = ds.flux.values.astype(float).sum(axis=0) * cell / (np.pi * radius**2)
    assert total[0] == pytest.approx(50.0, rel=1e-4)  # continuum f_lambda at 5400 A
    edges = channel_edges(wave[1:])
    line_total = ((total[1:] - 50.0) * np.diff(edges)).sum()  # flat continuum subtracted
    assert line_total == pytest.approx(400.0, rel=1e-4)
    truth = read_truth(ds)
    np.testing.assert_allclose(truth["observation.extended_grid_flux_fraction"], 1.0, atol=1e-4)
    assert truth["galaxy.r_eff_arcsec"] == 1.0 and truth[
        "galaxy.line_center_angstrom"
    ] == pytest.approx(center)
