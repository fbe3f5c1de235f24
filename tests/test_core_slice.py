"""reconstruct_slice / reconstruct_block: units, masks, invariances, bad input, block reuse and failures."""

import numpy as np
import pytest

import crrxr.core.slice as core_slice
from crrxr.core import CoreConfig, Grid, InputError, masks, reconstruct_block, reconstruct_slice
from crrxr.core.grid import odd_nside
from crrxr.core.kernel import radial_kernel
from crrxr.core.neighbours import NeighbourCache, neighbour_pairs
from crrxr.simulate.geometry import dither_offsets, hex_bundle


def bundle(n_fibers=19, n_exp=3, jitter=0.0, seed=0, seeing=1.19, seeing_jitter=0.0):
    rng = np.random.default_rng(seed)
    fx, fy = hex_bundle(n_fibers)
    dx, dy = dither_offsets(n_exp, jitter=jitter, rng=rng)
    x = (fx[None, :] + dx[:, None]).ravel()
    y = (fy[None, :] + dy[:, None]).ravel()
    fw = np.repeat(seeing * (1 + seeing_jitter * rng.standard_normal(n_exp)), n_fibers)
    return x, y, fw


def point_fluxes(x, y, fw, x0=0.0, y0=0.0):
    return np.pi * np.array(
        [radial_kernel(np.array(np.hypot(a - x0, b - y0)), w) for a, b, w in zip(x, y, fw)]
    )


GRID = Grid.for_extent(0.75, 17.0)


@pytest.mark.parametrize("method", ["crr", "shepard"])
def test_flat_field_uniform_in_covered_interior(method):
    # The sky beyond the solved pixels feeds the edge fibers and rings inwards (up to ~5% at the
    # bundle edge, for CRR); "interior" = more than ~3.5" inside the outer fiber centres.
    x, y, fw = bundle(n_fibers=37, n_exp=6, jitter=0.1, seed=1, seeing_jitter=0.05)
    grid = Grid.for_extent(0.75, 22.0)
    sb = 3.0  # surface brightness per arcsec^2 -> fiber flux sb * pi r_fib^2, spaxel flux sb * p^2
    flux = np.full(x.size, sb * np.pi)
    res = reconstruct_slice(
        x,
        y,
        fw,
        flux,
        np.ones(x.size),
        np.zeros(x.size, np.uint32),
        grid,
        CoreConfig(method=method),
    )
    xx, yy = grid.centres()
    interior = (np.hypot(xx, yy) < 4.5).reshape(grid.shape) & ((res.mask & masks.DONOTUSE) == 0)
    assert interior.sum() > 100
    assert np.max(np.abs(res.flux[interior] / (sb * 0.75**2) - 1)) <= 2e-3


def test_masks_follow_the_rules():
    x, y, fw = bundle(n_exp=3, jitter=0.05, seed=2)
    mask_in = np.zeros(x.size, np.uint32)
    mask_in[5] = masks.RSS_DEADFIBER
    ivar = np.ones(x.size)
    ivar[7] = 0.0
    res = reconstruct_slice(x, y, fw, point_fluxes(x, y, fw), ivar, mask_in, GRID, CoreConfig())
    xx, yy = GRID.centres()
    d = np.hypot(x[:, None] - xx[None, :], y[:, None] - yy[None, :])
    m = res.mask.ravel()
    selected = (d <= 1.6).any(axis=0)  # from all positions, usable or not
    assert np.array_equal((m & masks.NOCOV) != 0, ~selected)
    cov = res.coverage.ravel()[selected]
    low = (cov == 0) | (cov > 2.0 * np.median(cov[cov > 0]))
    assert np.array_equal((m[selected] & masks.LOWCOV) != 0, low)
    assert np.array_equal((m & masks.DONOTUSE) != 0, (m & (masks.NOCOV | masks.LOWCOV)) != 0)
    # DEADFIBER: the dead sample would carry >= 10% of the pixel's Shepard weight (0.7", < 1.6")
    w = np.where(d < 1.6, np.exp(-0.5 * (d / 0.7) ** 2), 0.0)
    share = np.divide(w[5], w.sum(axis=0), out=np.zeros(w.shape[1]), where=w.sum(axis=0) > 0)
    assert np.array_equal((m & masks.DEADFIBER) != 0, share >= 0.1)
    assert 0 < ((m & masks.DEADFIBER) != 0).sum() <= 12  # pixels close to the dead fiber only
    assert np.all(res.flux.ravel()[~selected] == 0) and np.all(res.ivar.ravel()[~selected] == 0)
    assert np.all(np.isfinite(res.flux)) and np.all(res.ivar >= 0)
    assert res.mask.dtype == np.uint32


def test_shepard_nocov_and_units():
    x, y, fw = bundle()
    ivar = np.ones(x.size)
    flux = np.arange(x.size, dtype=float)
    res = reconstruct_slice(
        x, y, fw, flux, ivar, np.zeros(x.size, np.uint32), GRID, CoreConfig(method="shepard")
    )
    xx, yy = GRID.centres()
    d = np.hypot(x[:, None] - xx[None, :], y[:, None] - yy[None, :])
    covered = (d < 1.6).any(axis=0)
    assert np.array_equal((res.mask.ravel() & masks.NOCOV) != 0, ~covered)
    # a pixel's value is p^2/pi times the Gaussian-weighted mean of its fibers' fluxes
    usable = covered & ((res.mask.ravel() & masks.DONOTUSE) == 0)
    assert np.all(res.ivar.ravel()[~usable] == 0)  # DONOTUSE spaxels carry no ivar
    j = np.flatnonzero(usable)[10]
    w = np.where(d[:, j] < 1.6, np.exp(-(d[:, j] ** 2) / (2 * 0.7**2)), 0)
    assert res.flux.ravel()[j] == pytest.approx(0.75**2 / np.pi * (w @ flux) / w.sum(), rel=1e-12)
    var = (w / w.sum()) ** 2 @ (1 / ivar)
    assert res.ivar.ravel()[j] == pytest.approx(1 / var / (0.75**2 / np.pi) ** 2, rel=1e-12)


def test_independent_of_positive_ivar_values():
    x, y, fw = bundle(n_exp=3, jitter=0.05, seed=3)
    f = point_fluxes(x, y, fw)
    z = np.zeros(x.size, np.uint32)
    rng = np.random.default_rng(0)
    a = reconstruct_slice(x, y, fw, f, np.ones(x.size), z, GRID)
    iv = rng.uniform(0.1, 10, x.size)
    b = reconstruct_slice(x, y, fw, f, iv, z, GRID)
    assert np.array_equal(a.flux, b.flux) and np.array_equal(a.mask, b.mask)
    c = reconstruct_slice(x, y, fw, f, 4.0 * np.ones(x.size), z, GRID)
    assert np.allclose(c.ivar, 4.0 * a.ivar, rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", ["crr", "shepard"])
def test_linearity_and_translation(method):
    x, y, fw = bundle(n_exp=3, jitter=0.05, seed=4)
    z = np.zeros(x.size, np.uint32)
    iv = np.ones(x.size)
    cfg = CoreConfig(method=method)
    g = Grid(0.75, 31)
    f1 = point_fluxes(x, y, fw, 0.4, -0.3)
    f2 = np.random.default_rng(1).normal(size=x.size)
    r1 = reconstruct_slice(x, y, fw, f1, iv, z, g, cfg).flux
    r2 = reconstruct_slice(x, y, fw, f2, iv, z, g, cfg).flux
    r12 = reconstruct_slice(x, y, fw, 2.0 * f1 - 0.5 * f2, iv, z, g, cfg).flux
    assert np.allclose(r12, 2.0 * r1 - 0.5 * r2, rtol=0, atol=1e-12 * np.abs(r12).max())
    # shift every sample by (+2, -1) pixels: the image shifts by the same amount
    sx, sy = 2, -1
    shifted = reconstruct_slice(x + sx * 0.75, y + sy * 0.75, fw, f1, iv, z, g, cfg)
    base = reconstruct_slice(x, y, fw, f1, iv, z, g, cfg)
    assert np.allclose(
        shifted.flux[3 + sy : -3 + sy, 3 + sx : -3 + sx],
        base.flux[3:-3, 3:-3],
        rtol=0,
        atol=1e-9 * np.abs(base.flux).max(),
    )
    assert np.array_equal(shifted.mask[3 + sy : -3 + sy, 3 + sx : -3 + sx], base.mask[3:-3, 3:-3])


def test_rho_matches_dense_covariance():
    from crrxr.core.covariance import correlation_matrix
    from crrxr.core.crr import crr_weights

    x, y, fw = bundle(n_exp=3, jitter=0.05, seed=5)
    rng = np.random.default_rng(2)
    iv = rng.uniform(0.5, 2.0, x.size)
    iv[3] = 0
    z = np.zeros(x.size, np.uint32)
    g = Grid.for_extent(0.75, 12.0)
    i = np.array([0, 40, 60, 60, 84, 84])
    j = np.array([1, 41, 61, 84, 85, 84 + g.nside])
    res = reconstruct_slice(
        x, y, fw, np.ones(x.size), iv, z, g, CoreConfig(solver="svd"), correlation_pairs=(i, j)
    )
    xx, yy = g.centres()
    d = np.hypot(x[:, None] - xx[None, :], y[:, None] - yy[None, :])
    A = (
        np.where(d < 4.0, np.stack([radial_kernel(d[k], fw[k]) for k in range(x.size)]), 0)
        * 0.75**2
    )
    sel = (d <= 1.6).any(axis=0)
    good = iv > 0
    W = np.zeros((g.size, x.size))
    W[sel] = crr_weights(A[:, sel], good, solver="svd")
    var = np.where(good, 1 / np.where(good, iv, 1), 0)
    rho = correlation_matrix(W, var).toarray()
    assert np.allclose(res.rho, rho[i, j], atol=1e-10)
    assert res.rho[0] == 0  # pixel 0 is not solved
    C = W @ np.diag(var) @ W.T
    factor = 0.75**2 / np.pi
    solved = sel & (np.diag(C) > 0) & ((res.mask.ravel() & masks.DONOTUSE) == 0)
    assert np.all(res.ivar.ravel()[~solved] == 0)  # no ivar in DONOTUSE spaxels
    # the core interpolates kernel tables (<1e-7 of the peak), the reference uses the exact kernel
    assert np.allclose(res.ivar.ravel()[solved], 1 / np.diag(C)[solved] / factor**2, rtol=1e-6)


def test_neighbour_pairs_brute_force():
    rng = np.random.default_rng(6)
    x, y = rng.uniform(-9, 9, 50), rng.uniform(-9, 9, 50)
    x[3] = np.nan
    g = Grid(0.7, 21)
    s, p, d = neighbour_pairs(x, y, g, 2.3)
    xx, yy = g.centres()
    dd = np.hypot(x[:, None] - xx[None, :], y[:, None] - yy[None, :])
    ref = np.argwhere(dd <= 2.3)
    assert np.array_equal(np.stack([s, p], axis=1), ref)
    assert np.allclose(d, dd[ref[:, 0], ref[:, 1]])


def test_neighbour_cache_equals_fresh_search():
    """Drifting positions (DAR-like steps, one jump past the pad, a NaN appearing): every call equals
    a fresh neighbour_pairs bit for bit, and the candidate search is redone only when needed."""
    rng = np.random.default_rng(7)
    x0, y0 = rng.uniform(-8, 8, 60), rng.uniform(-8, 8, 60)
    g = Grid(0.5, 31)
    cache = NeighbourCache(g, 2.0, pad=0.1)
    for k in range(40):
        x, y = x0 + 0.004 * k, y0 - 0.003 * k
        if k == 25:
            x = x.copy()
            x[5] += 0.5  # one sample jumps farther than the pad
        if k == 33:
            x = x.copy()
            x[7] = np.nan
        got = cache(x, y)
        ref = neighbour_pairs(x, y, g, 2.0)
        for a, b in zip(got, ref):
            assert np.array_equal(a, b)
    # 0.004" and 0.003" per step: the anchor moves after ~20 steps, at the jump and at the NaN
    assert 3 <= cache.searches <= 6


@pytest.mark.parametrize("method", ["crr", "shepard"])
def test_all_masked_and_missed_grid(method):
    x, y, fw = bundle()
    z = np.zeros(x.size, np.uint32)
    cfg = CoreConfig(method=method)
    res = reconstruct_slice(x, y, fw, np.ones(x.size), np.zeros(x.size), z, GRID, cfg)
    assert np.all(res.flux == 0) and np.all(res.ivar == 0)
    assert np.all(res.mask == masks.NOCOV | masks.DONOTUSE)
    dead = np.full(x.size, masks.RSS_REJECT)
    dead[0] |= masks.RSS_DEADFIBER
    bad = reconstruct_slice(x, y, fw, np.ones(x.size), np.ones(x.size), dead, GRID, cfg)
    assert np.all(bad.flux == 0) and np.all(bad.ivar == 0)
    assert np.all(bad.mask & masks.NOCOV) and np.all(bad.mask & masks.DONOTUSE)
    assert np.any(bad.mask & masks.DEADFIBER) and np.all(np.isfinite(bad.flux))
    far = reconstruct_slice(
        x + 100, y, fw, np.ones(x.size), np.ones(x.size), z, GRID, cfg, psf=True
    )
    assert (
        np.all(far.mask == masks.NOCOV | masks.DONOTUSE)
        and np.all(far.flux == 0)
        and np.all(far.psf == 0)
    )


def test_bad_input():
    x, y, fw = bundle()
    n = x.size
    ok = dict(flux=np.ones(n), ivar=np.ones(n), mask=np.zeros(n, np.uint32))
    xn = x.copy()
    xn[0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        reconstruct_slice(xn, y, fw, grid=GRID, **ok)
    # a NaN position on an unusable sample is ignored
    iv = np.ones(n)
    iv[0] = 0
    res = reconstruct_slice(xn, y, fw, np.ones(n), iv, np.zeros(n, np.uint32), GRID)
    assert np.all(np.isfinite(res.flux))
    with pytest.raises(InputError, match="ivar"):
        reconstruct_slice(x, y, fw, np.ones(n), -np.ones(n), np.zeros(n, np.uint32), GRID)
    with pytest.raises(InputError, match="no samples"):
        reconstruct_slice(
            x[:0], y[:0], fw[:0], np.ones(0), np.ones(0), np.zeros(0, np.uint32), GRID
        )
    with pytest.raises(InputError, match="shape"):
        reconstruct_slice(x, y[:-1], fw, grid=GRID, **ok)
    with pytest.raises(InputError, match="pixel scale"):
        reconstruct_slice(x, y, fw, grid=GRID, config=CoreConfig(pixel_scale=0.5), **ok)
    with pytest.raises(InputError, match="FWHM"):
        reconstruct_slice(x, y, -fw, grid=GRID, **ok)
    with pytest.raises(InputError, match="integer"):
        reconstruct_slice(x, y, fw, np.ones(n), np.ones(n), np.zeros(n), GRID)
    with pytest.raises(ValueError, match="method"):
        CoreConfig(method="nearest")
    with pytest.raises(ValueError, match="lam"):
        CoreConfig(lam=-1.0)


def test_block_equals_slices_and_reuses():
    x, y, fw = bundle(n_exp=3, jitter=0.05, seed=7)
    n, n_chan = x.size, 5
    rng = np.random.default_rng(3)
    wave_fw = fw[:, None] * (1 + 0.01 * np.arange(n_chan))[None, :]
    X = np.repeat(x[:, None], n_chan, axis=1) + 0.02 * np.arange(n_chan)[None, :] * (
        np.arange(n_chan) >= 3
    )
    Y = np.repeat(y[:, None], n_chan, axis=1)
    F = rng.normal(1.0, 0.1, (n, n_chan))
    IV = rng.uniform(0.5, 2, (n, n_chan))
    IV[4, 2] = 0
    M = np.zeros((n, n_chan), np.uint32)
    M[9, :] = masks.RSS_DEADFIBER
    i, j = np.array([100, 200]), np.array([101, 223])
    res = reconstruct_block(X, Y, wave_fw, F, IV, M, GRID, correlation_pairs=(i, j), want=(1, 4))
    assert res.flux.shape == (n_chan, *GRID.shape) and not res.failed.any()
    assert set(res.rho) == {1, 4} and set(res.psf) == {1, 4}
    for c in range(n_chan):
        one = reconstruct_slice(
            X[:, c],
            Y[:, c],
            wave_fw[:, c],
            F[:, c],
            IV[:, c],
            M[:, c],
            GRID,
            correlation_pairs=(i, j),
            psf=True,
        )
        assert np.array_equal(one.flux, res.flux[c]) and np.array_equal(one.ivar, res.ivar[c])
        assert np.array_equal(one.mask, res.mask[c])
        if c in res.rho:
            assert np.array_equal(one.rho, res.rho[c]) and np.array_equal(one.psf, res.psf[c])
    assert res.messages == ("",) * n_chan
    # constant seeing given as (n_samples,)
    const = reconstruct_block(X, Y, fw, F, IV, M, GRID)
    assert np.array_equal(
        const.flux[0],
        reconstruct_slice(X[:, 0], Y[:, 0], fw, F[:, 0], IV[:, 0], M[:, 0], GRID).flux,
    )
    with pytest.raises(InputError, match="want"):
        reconstruct_block(X, Y, fw, F, IV, M, GRID, want=(n_chan,))


def test_block_failed_channel_is_isolated(monkeypatch):
    # fault injection: the real solver does not fail on valid input, so make the third solve raise
    x, y, fw = bundle(n_exp=3, seed=8)
    n, n_chan = x.size, 4
    X, Y = np.repeat(x[:, None], n_chan, 1), np.repeat(y[:, None], n_chan, 1)
    FW = fw[:, None] * (1 + 0.01 * np.arange(n_chan))[None, :]
    F = np.repeat(point_fluxes(x, y, fw)[:, None], n_chan, 1)
    IV, M = np.ones((n, n_chan)), np.zeros((n, n_chan), np.uint32)
    real = core_slice.solve_crr
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise np.linalg.LinAlgError("SVD did not converge")
        return real(*args, **kwargs)

    monkeypatch.setattr(core_slice, "solve_crr", flaky)
    res = reconstruct_block(X, Y, FW, F, IV, M, GRID)
    assert res.failed.tolist() == [False, False, True, False]
    assert "SVD did not converge" in res.messages[2] and res.messages[3] == ""
    assert np.all(res.flux[2] == 0) and np.all(res.ivar[2] == 0)
    assert np.all(res.mask[2] == masks.NOCOV | masks.DONOTUSE)
    monkeypatch.setattr(core_slice, "solve_crr", real)
    ok = reconstruct_slice(X[:, 3], Y[:, 3], FW[:, 3], F[:, 3], IV[:, 3], M[:, 3], GRID)
    assert np.array_equal(ok.flux, res.flux[3])


def test_grid_nside_rule_matches_authors():
    assert odd_nside(36.0, 0.75) == 49


def test_block_skips_rejected_gram_route_and_matches_slices():
    # 12 exposures with 0.02" jitter: "auto" rejects the gram route; the block then goes straight to
    # the SVD for the following channels, with the same results as channel-by-channel solves
    x, y, fw = bundle(n_exp=12, jitter=0.02, seed=0, seeing_jitter=0.05)
    n, n_chan = x.size, 3
    X = x[:, None] + 0.001 * np.arange(n_chan)[None, :]
    Y = np.repeat(y[:, None], n_chan, 1)
    FW = fw[:, None] * (1 + 1e-4 * np.arange(n_chan))[None, :]
    F = np.repeat(point_fluxes(x, y, fw)[:, None], n_chan, 1)
    IV, M = np.ones((n, n_chan)), np.zeros((n, n_chan), np.uint32)
    res = reconstruct_block(X, Y, FW, F, IV, M, GRID)
    assert res.solver == ("svd",) * n_chan
    for c in range(n_chan):
        one = reconstruct_slice(X[:, c], Y[:, c], FW[:, c], F[:, c], IV[:, c], M[:, c], GRID)
        assert one.solver == "svd" and np.array_equal(one.flux, res.flux[c])


def test_two_dead_fibers_flag_only_their_neighbourhood():
    """Issue #9: with the old rule (any kernel within 4") two dead fibers flagged 53% of a bundle."""
    x, y, fw = bundle(n_exp=3, jitter=0.05, seed=4)
    mask_in = np.zeros(x.size, np.uint32)
    dead_fibers = (2, 11)  # dead in every exposure (the whole fiber)
    for e in range(3):
        for f in dead_fibers:
            mask_in[e * 19 + f] = masks.RSS_DEADFIBER | masks.RSS_NODATA
    ivar = np.where(mask_in > 0, 0.0, 1.0)
    res = reconstruct_slice(x, y, fw, point_fluxes(x, y, fw), ivar, mask_in, GRID, CoreConfig())
    covered = (res.mask & masks.NOCOV) == 0
    flagged = ((res.mask & masks.DEADFIBER) != 0) & covered
    share = flagged.sum() / covered.sum()
    assert 0.03 <= share <= 0.2, share
    xx, yy = GRID.centres()
    d = np.min(
        [np.hypot(xx - x[e * 19 + f], yy - y[e * 19 + f]) for e in range(3) for f in dead_fibers],
        axis=0,
    ).reshape(GRID.shape)
    assert d[flagged].max() < 1.6  # only pixels near a dead sample
