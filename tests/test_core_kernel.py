"""Kernel: unit integral, closed form vs brute-force FFT convolution, FWHM, seeing law, tables."""

import numpy as np
import pytest
from scipy import integrate

from crrxr.core.kernel import (
    KernelTable,
    cut_level,
    double_gaussian_components,
    kernel_fwhm,
    radial_kernel,
    radius_for_level,
    seeing_at,
)


def fft_kernel_row(fwhm, wing, h, supersample, box=12.0):
    """Top hat (radius 1") and double Gaussian sampled on a fine grid, convolved by FFT; central row."""
    n = int(round(box / h))
    c = (np.arange(n) - n // 2) * h
    X, Y = np.meshgrid(c, c, indexing="ij")
    sub = (np.arange(supersample) - (supersample - 1) / 2) / supersample * h
    disc = np.zeros((n, n))
    for a in sub:
        for b in sub:
            disc += np.hypot(X + a, Y + b) <= 1.0
    disc /= supersample**2 * np.pi
    (f1, s1), (f2, s2) = double_gaussian_components(fwhm, wing=wing)
    r2 = X**2 + Y**2
    seeing = f1 * np.exp(-r2 / 2 / s1**2) / (2 * np.pi * s1**2) + f2 * np.exp(-r2 / 2 / s2**2) / (
        2 * np.pi * s2**2
    )
    conv = (
        np.fft.ifft2(
            np.fft.fft2(np.fft.ifftshift(disc)) * np.fft.fft2(np.fft.ifftshift(seeing))
        ).real
        * h
        * h
    )
    return np.abs(c), np.fft.fftshift(conv)[n // 2]


@pytest.mark.parametrize("fwhm", [0.6, 1.19, 2.5])
@pytest.mark.parametrize("wing", ["flux", "peak"])
def test_unit_integral(fwhm, wing):
    total, _ = integrate.quad(
        lambda r: 2 * np.pi * r * radial_kernel(np.array(r), fwhm, wing=wing),
        0,
        30,
        limit=200,
        epsabs=1e-13,
    )
    assert total == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize(
    ("fwhm", "wing", "h", "ss"),
    [(1.19, "flux", 0.01, 8), (1.19, "peak", 0.01, 8), (0.8, "flux", 0.02, 16)],
)
def test_closed_form_matches_fft_convolution(fwhm, wing, h, ss):
    r, brute = fft_kernel_row(fwhm, wing, h, ss)
    exact = radial_kernel(r, fwhm, wing=wing)
    assert np.max(np.abs(brute - exact)) <= 1e-4 * exact.max()


def test_kernel_fwhm_matches_paper_table1():
    # Table 1: kernel FWHM 1.905" at 1.19" seeing (flux convention of the authors' code).
    assert kernel_fwhm(1.19) == pytest.approx(1.905, abs=0.01)
    # The paper-text (central-value) convention is broader: ~1.97".
    assert kernel_fwhm(1.19, wing="peak") == pytest.approx(1.97, abs=0.01)


def test_double_gaussian_conventions():
    (f1, s1), (f2, s2) = double_gaussian_components(1.5)
    assert s1 == pytest.approx(1.5 / 2.355 / 1.05)
    assert s2 == pytest.approx(2 * s1)
    assert f2 / f1 == pytest.approx(1 / 9)
    (g1, t1), (g2, t2) = double_gaussian_components(1.5, wing="peak")
    # central values g / (2 pi s^2): ratio 1/9
    assert (g2 / t2**2) / (g1 / t1**2) == pytest.approx(1 / 9)
    with pytest.raises(ValueError, match="FWHM"):
        double_gaussian_components(-1.0)
    with pytest.raises(ValueError, match="wing"):
        double_gaussian_components(1.0, wing="x")


def test_kernel_is_monotone_and_point_source_flux():
    r = np.linspace(0, 6, 601)
    k = radial_kernel(r, 1.19)
    assert np.all(np.diff(k) <= 0)
    # a fiber of radius 1" centred on a unit point source collects pi K(0) of its flux: the flux inside 1"
    inside, _ = integrate.dblquad(lambda rr, t: rr * _gauss_mix(rr, 1.19), 0, 2 * np.pi, 0, 1.0)
    assert np.pi * radial_kernel(np.array(0.0), 1.19) == pytest.approx(inside, rel=1e-7)


def _gauss_mix(r, fwhm):
    (f1, s1), (f2, s2) = double_gaussian_components(fwhm)
    return f1 * np.exp(-(r**2) / 2 / s1**2) / (2 * np.pi * s1**2) + f2 * np.exp(
        -(r**2) / 2 / s2**2
    ) / (2 * np.pi * s2**2)


def test_seeing_law():
    assert seeing_at(1.5, 5400.0) == pytest.approx(1.5)
    assert seeing_at(1.5, 10800.0) == pytest.approx(1.5 * 2**-0.2)
    out = seeing_at(np.array([[1.0], [2.0]]), np.array([5400.0, 6000.0, 7000.0]))
    assert out.shape == (2, 3)
    assert out[1, 2] == pytest.approx(2.0 * (7000 / 5400) ** -0.2)


@pytest.mark.parametrize("fwhm", [0.5, 1.19, 1.2345678, 3.0])
@pytest.mark.parametrize("fwhm_step", [0.0, 5e-4])
@pytest.mark.parametrize("r_max", [4.0, 8.0])
def test_kernel_table_interpolation_error(fwhm, fwhm_step, r_max):
    """Cubic in radius: ~1e-11 of the peak at most (linear interpolation on the same grid was
    ~1e-7); the blend between seeing rows dominates at the default step."""
    table = KernelTable(r_max, fwhm_step=fwhm_step)
    r = np.random.default_rng(0).uniform(0, r_max, 20000)
    exact = radial_kernel(r, fwhm)
    approx = table(r, np.full(r.size, fwhm))
    peak = radial_kernel(np.array(0.0), fwhm)
    assert np.max(np.abs(approx - exact)) < (1e-10 if fwhm_step == 0 else 1e-6) * peak


@pytest.mark.parametrize("fwhm", [0.8, 1.6, 2.2])
def test_kernel_table_is_smooth_across_its_radius_nodes(fwhm):
    """The second difference of the table across a radius node (offsets a tenth of the node step)
    matches the exact kernel's: no kink where a sample-pixel distance crosses a node (a linear
    table's second difference there is ~10x the kernel's curvature)."""
    table = KernelTable(8.0, fwhm_step=0.0)
    h = table.step / 10
    nodes = table.radii[np.arange(200, 3800, 97)]
    r = nodes[:, None] + h * np.array([-1.0, 0.0, 1.0])
    second = lambda k: (k[:, 0] - 2 * k[:, 1] + k[:, 2]) / h**2  # noqa: E731
    got = second(table(r, np.full(r.shape, fwhm)))
    want = second(radial_kernel(r, fwhm))
    assert np.max(np.abs(got - want)) < 1e-3 * np.max(np.abs(want))


def test_kernel_table_reuses_rows_across_a_block():
    # 64 MaNGA channels (dlog10 lambda = 1e-4) move the seeing by ~0.3%: a handful of FWHM nodes
    table = KernelTable(4.0)
    fw = 1.3 * (10 ** (1e-4 * np.arange(64))) ** -0.2
    r = np.linspace(0, 4, 50)
    for f in fw:
        assert np.allclose(
            table(r, np.full(r.size, f)),
            radial_kernel(r, f),
            rtol=0,
            atol=1e-6 * radial_kernel(np.array(0.0), f),
        )
    assert len(table._rows) <= 8


def test_kernel_table_mixed_fwhm_and_range():
    table = KernelTable(4.0)
    r = np.array([0.0, 1.0, 2.0, 3.9])
    fw = np.array([1.0, 1.5, 1.0, 2.0])
    expect = np.array([radial_kernel(np.array(a), b) for a, b in zip(r, fw)])
    assert np.allclose(table(r, fw), expect, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="radii"):
        table(np.array([4.5]), np.array([1.0]))


@pytest.mark.parametrize("fwhm", [0.8, 1.19, 1.5, 2.0, 2.5])
@pytest.mark.parametrize("level", [1e-3, 2e-7, 1e-10])
@pytest.mark.parametrize("fiber_radius", [0.5, 1.0])
def test_radius_for_level_is_where_the_kernel_falls_to_that_level(fwhm, level, fiber_radius):
    """The cut radius weight reuse names: the kernel (over its centre) is ``level`` there, above it
    just inside and below it just outside (the kernel falls monotonically)."""
    r = radius_for_level(level, fwhm, fiber_radius)
    k0 = radial_kernel(np.array(0.0), fwhm, fiber_radius)
    ratio = [radial_kernel(np.array(x), fwhm, fiber_radius) / k0 for x in (r - 0.01, r, r + 0.01)]
    assert ratio[0] > level > ratio[2] and ratio[1] == pytest.approx(level, rel=1e-4)
    assert cut_level(r, fwhm, fiber_radius) == pytest.approx(level, rel=1e-4)
    assert r > fiber_radius


def test_radius_for_level_refuses_levels_outside_zero_one():
    for bad in (0.0, 1.0, -1e-3, 2.0):
        with pytest.raises(ValueError, match="level"):
            radius_for_level(bad, 1.2)
