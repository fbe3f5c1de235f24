"""Paper Tables 1-2 (Liu et al. 2020) on a simulated 19-fiber bundle, 9 jittered exposures, 1.19" seeing.

Paper: kernel FWHM 1.905", Shepard 2.317", CRR 1.973"; pseudo-Strehl Shepard 0.664, CRR 0.996;
neighbour correlation at 0.75" Shepard 0.767 / 0.465, CRR 0.050 / 0.024 (1 / 2 pixels).
"""

import numpy as np
import pytest

from crrxr.core import CoreConfig, Grid, reconstruct_slice
from crrxr.core.kernel import kernel_fwhm, radial_kernel
from crrxr.core.psf import fit_kernel_fwhm, neighbour_correlation
from crrxr.simulate.geometry import dither_offsets, hex_bundle


def simulate(seed, n_exp=9, seeing=1.19):
    rng = np.random.default_rng(seed)
    fx, fy = hex_bundle(19)
    dx, dy = dither_offsets(n_exp, jitter=0.05, rng=rng)
    fw_exp = seeing * (1 + 0.05 * rng.standard_normal(n_exp))
    x = (fx[None, :] + dx[:, None]).ravel()
    y = (fy[None, :] + dy[:, None]).ravel()
    fw = np.repeat(fw_exp, fx.size)
    flux = np.pi * np.array(
        [radial_kernel(np.array(np.hypot(a, b)), w) for a, b, w in zip(x, y, fw)]
    )
    return x, y, fw, flux, fw_exp


def measure(seed, pixel=0.75):
    x, y, fw, flux, fw_exp = simulate(seed)
    grid = Grid.for_extent(pixel, 17.0)
    c = (grid.nside // 2) * grid.nside + grid.nside // 2
    n = grid.nside
    nb = np.array([c + 1, c - 1, c + n, c - n, c + 2, c - 2, c + 2 * n, c - 2 * n])
    pairs = (np.full(nb.size, c), nb)
    out = {}
    for method in ("crr", "shepard"):
        res = reconstruct_slice(
            x,
            y,
            fw,
            flux,
            np.ones(x.size),
            np.zeros(x.size, np.uint32),
            grid,
            CoreConfig(method=method, pixel_scale=pixel),
            correlation_pairs=pairs,
            psf=True,
        )
        fit = fit_kernel_fwhm(res.psf, grid, true_seeing=float(np.mean(fw_exp)))
        out[method] = (fit, neighbour_correlation(res.rho, grid, pairs=pairs))
    return out, kernel_fwhm(float(np.mean(fw_exp)))


SEEDS = (0, 1, 2, 3)
_RESULTS: dict[int, tuple] = {}


def measured(seed):
    if seed not in _RESULTS:
        _RESULTS[seed] = measure(seed)
    return _RESULTS[seed]


@pytest.mark.parametrize("seed", SEEDS)
def test_table1_and_table2(seed):
    out, k_fwhm = measured(seed)
    (crr, (c1, c2)), (shep, (s1, s2)) = out["crr"], out["shepard"]
    print(
        f"seed {seed}: kernel {k_fwhm:.3f} CRR {crr.fwhm:.3f} Shepard {shep.fwhm:.3f} | "
        f"Strehl CRR {crr.strehl:.3f} Shepard {shep.strehl:.3f} | "
        f"rho CRR {c1:.3f}/{c2:.3f} Shepard {s1:.3f}/{s2:.3f}"
    )
    # CRR is 4.7-5.6% broader than the kernel at the mean seeing over these seeds with MaNGA's
    # dither orientation (paper: 3.6%); each realisation within 6%, their mean within 5.5% (below)
    assert abs(crr.fwhm / k_fwhm - 1) <= 0.06
    assert shep.fwhm >= 1.12 * crr.fwhm
    assert crr.strehl >= 0.85 and shep.strehl <= 0.75
    # the paper's CRR / Shepard pseudo-Strehl ratio is 0.996 / 0.664 = 1.50; relative to the TRUE
    # kernel we reproduce it, relative to each fit's own peak Shepard would be ~0.97 (issue #9)
    assert 1.40 <= crr.strehl / shep.strehl <= 1.60
    assert shep.peak_to_fit >= 0.9
    assert c1 <= 0.2 and c2 <= 0.08 and s1 >= 0.6
    assert c1 < s1 and c2 < s2


def test_crr_fwhm_within_5_percent_of_kernel_on_average():
    excess = [measured(seed)[0]["crr"][0].fwhm / measured(seed)[1] - 1 for seed in SEEDS]
    assert np.mean(excess) <= 0.055


def test_sharpness_independent_of_pixel_scale():
    # Table 1: FWHM and Strehl nearly identical at 0.5" and 0.75"
    a, _ = measure(0, 0.75)
    b, _ = measure(0, 0.5)
    for method in ("crr", "shepard"):
        assert a[method][0].fwhm == pytest.approx(b[method][0].fwhm, rel=0.01)
    # Table 2: correlations are much higher at 0.5"
    assert b["crr"][1][0] > 2 * a["crr"][1][0]


def test_fit_recovers_exact_kernel_image():
    from crrxr.core.psf import kernel_image

    grid = Grid(0.75, 23)
    img = kernel_image(grid, 1.3, flux=2.0)
    fit = fit_kernel_fwhm(img, grid, true_seeing=1.3, true_flux=2.0)
    assert fit.seeing == pytest.approx(1.3, rel=1e-6) and fit.amplitude == pytest.approx(
        2.0, rel=1e-6
    )
    assert fit.fwhm == pytest.approx(kernel_fwhm(1.3), rel=1e-6)
    assert fit.strehl == pytest.approx(1.0, rel=1e-12)
    assert fit.peak_to_fit == pytest.approx(1.0, rel=1e-6)
    off = kernel_image(grid, 1.3, x0=0.3, y0=-0.2)
    free = fit_kernel_fwhm(off, grid, free_centre=True)
    assert (free.x0, free.y0) == (pytest.approx(0.3, abs=1e-5), pytest.approx(-0.2, abs=1e-5))


def test_neighbour_correlation_forms():
    from scipy import sparse

    grid = Grid(1.0, 5)
    rho = np.eye(25)
    c = 12
    for k, v in ((13, 0.5), (11, 0.3), (17, 0.1), (7, 0.1), (14, 0.2)):
        rho[c, k] = rho[k, c] = v
    r1, r2 = neighbour_correlation(rho, grid)
    assert r1 == pytest.approx(np.sqrt((0.25 + 0.09 + 0.01 + 0.01) / 4))
    assert r2 == pytest.approx(np.sqrt(0.04 / 4))
    assert neighbour_correlation(sparse.csr_matrix(np.triu(rho)), grid) == (
        pytest.approx(r1),
        pytest.approx(r2),
    )
    i, j = np.array([12, 11, 14]), np.array([13, 12, 12])
    p1, p2 = neighbour_correlation(np.array([0.5, 0.3, 0.2]), grid, pairs=(i, j))
    assert p1 == pytest.approx(np.sqrt((0.25 + 0.09) / 4)) and p2 == pytest.approx(0.1)


def test_kernel_mismatch_barely_changes_crr_fwhm():
    # Paper section 3.6: a 10% / 20% error in the assumed seeing changes the CRR FWHM by ~0.3% / ~0.4%
    x, y, fw, flux, _ = simulate(0)
    grid = Grid.for_extent(0.75, 17.0)
    fwhm = {}
    for factor in (1.0, 0.9, 1.1, 0.8, 1.2):
        res = reconstruct_slice(
            x, y, fw * factor, flux, np.ones(x.size), np.zeros(x.size, np.uint32), grid
        )
        fwhm[factor] = fit_kernel_fwhm(res.flux, grid).fwhm
    for factor, tol in ((0.9, 0.005), (1.1, 0.005), (0.8, 0.01), (1.2, 0.01)):
        assert abs(fwhm[factor] / fwhm[1.0] - 1) <= tol


def test_pseudo_strehl_against_a_kernel_written_here():
    """max(image) / max(true kernel image), kernel = double Gaussian x 1" top hat via scipy's Rice CDF."""
    from scipy import stats

    from crrxr.core.psf import pseudo_strehl

    grid = Grid(0.5, 21)
    xx, yy = grid.centres()
    seeing, x0, y0, total = 1.4, 0.3, -0.2, 3.0
    s1 = seeing / 2.355 / 1.05
    r = np.hypot(xx - x0, yy - y0)
    k = sum(f * stats.rice.cdf(1.0 / s, r / s) for f, s in ((0.9, s1), (0.1, 2 * s1))) / np.pi
    true_image = (total * 0.25 * k).reshape(grid.shape)
    blurred = 0.8 * true_image
    assert pseudo_strehl(blurred, grid, seeing, total, x0, y0) == pytest.approx(0.8, rel=1e-9)
    # a wrong position or seeing changes the reference: the truth enters, not a fit
    assert pseudo_strehl(blurred, grid, seeing * 1.1, total, x0, y0) > 0.85
