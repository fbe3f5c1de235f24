"""ChannelWeights: built through the engine's core path, it reproduces the cube a build wrote."""

import numpy as np
import pytest
from scipy import sparse

import crrxr
from crrxr.core.config import CoreConfig
from crrxr.core.grid import Grid
from crrxr.core.weights import channel_weights
from crrxr.fit.channels import channel_weights as cube_channel_weights
from crrxr.fit.channels import read_channels
from crrxr.io.cube_reader import open_cube
from crrxr.simulate.rss_writer import simulate_rss


@pytest.fixture(scope="module")
def rss_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "rss.zarr"
    simulate_rss(
        path,
        bundle=19,
        exposures=6,
        nwave=7,
        wave_range=(5000.0, 6000.0),
        scene="binary",
        noise=20.0,
        dead_fibers=1,
        bad_pixel_fraction=0.02,
        seed=3,
    )
    return path


@pytest.mark.parametrize("method", ["crr", "shepard"])
def test_apply_reproduces_the_built_cube(rss_path, tmp_path, method):
    store = tmp_path / f"{method}.zarr"
    crrxr.build_cube(
        rss_path, store, {"method": method}, scheduler="synchronous", progress=False, wave_chunk=3
    )
    cube = open_cube(store)
    inputs = read_channels(cube, rss_path, np.arange(7))
    weights = cube_channel_weights(cube, inputs)
    flux = cube.dataset["flux"].values
    ivar = cube.dataset["ivar"].values
    var = inputs.variance()
    for c, w in enumerate(weights):
        assert w.route == ("shepard" if method == "shepard" else w.route)
        assert w.route in (("shepard",) if method == "shepard" else ("svd", "gram"))
        img = w.apply(inputs.flux[:, c])
        scale = np.abs(flux[c]).max()
        np.testing.assert_allclose(img, flux[c], rtol=0, atol=2e-6 * scale)
        iv = w.ivar(var[:, c])
        np.testing.assert_allclose(iv, ivar[c], rtol=2e-6, atol=0)
        # unused samples (masked) never enter: W has no column for them
        usable = inputs.ivar[:, c] > 0
        assert set(w.samples) == set(np.flatnonzero(usable))
        assert usable.sum() < usable.size  # the test data do have masked samples


def _dense_reference(x, y, fw, good, grid, cfg):
    """Tiny dense CRR (paper's Eqs. 10-23, literal SVD) written here, independent of crrxr.core.crr."""
    from crrxr.core.kernel import radial_kernel

    X, Y = grid.centres()
    r = np.hypot(x[:, None] - X[None, :], y[:, None] - Y[None, :])
    A = np.zeros(r.shape)
    for i in range(len(x)):
        A[i] = radial_kernel(r[i], fw[i], cfg.fiber_radius) * cfg.pixel_scale**2
    A[r >= cfg.truncation_radius] = 0.0
    sel = (r <= cfg.select_radius).any(axis=0)
    Ag = A[good][:, sel]
    U, S, Vt = np.linalg.svd(Ag, full_matrices=False)
    keep = S >= cfg.sv_floor
    U, S, V = U[:, keep], S[keep], Vt[keep].T
    lam = cfg.lam
    Aplus = V @ np.diag(S / (S**2 + lam**2)) @ U.T
    Q = V @ np.diag((S**2 + lam**2) / S) @ V.T
    R = Q / Q.sum(axis=1, keepdims=True)
    return R @ Aplus, np.flatnonzero(sel)


@pytest.mark.parametrize("n_exp,masked", [(3, 0), (5, 4)])
def test_weights_against_dense_formula(n_exp, masked):
    rng = np.random.default_rng(n_exp)
    from crrxr.simulate.geometry import hex_bundle

    fx, fy = hex_bundle(7)
    x = np.concatenate([fx + rng.normal(0, 0.5) for _ in range(n_exp)])
    y = np.concatenate([fy + rng.normal(0, 0.5) for _ in range(n_exp)])
    n = x.size
    fw = np.full(n, 1.3)
    flux = rng.normal(10, 1, n)
    ivar = rng.uniform(0.5, 2.0, n)
    ivar[rng.choice(n, masked, replace=False)] = 0.0
    mask = np.zeros(n, np.uint32)
    grid = Grid(0.75, 15)
    cfg = CoreConfig(pixel_scale=0.75, solver="svd")
    w = channel_weights(x, y, fw, flux, ivar, mask, grid, cfg)
    Wref, sel = _dense_reference(x, y, fw, ivar > 0, grid, cfg)
    np.testing.assert_array_equal(w.pixels, sel)
    # the engine evaluates the kernel from a table (1e-6 of its peak), amplified by the inverse
    np.testing.assert_allclose(w.matrix.toarray(), Wref, atol=1e-4 * np.abs(Wref).max())
    Wref = w.matrix.toarray()  # below: the products of W, checked against dense formulas
    assert w.error_bound is not None and w.error_bound < 1e-10
    # variance and covariance against dense C = f^2 W N W^T
    var = np.divide(1.0, ivar, out=np.zeros(n), where=ivar > 0)
    Wfull = np.zeros((grid.size, n))
    Wfull[np.ix_(sel, np.flatnonzero(ivar > 0))] = Wref * cfg.flux_factor
    C = Wfull @ np.diag(var) @ Wfull.T
    np.testing.assert_allclose(w.variance(var).ravel(), np.diag(C), rtol=1e-8, atol=1e-14)
    i = rng.integers(0, grid.size, 50)
    j = rng.integers(0, grid.size, 50)
    np.testing.assert_allclose(w.covariance(var, (i, j)), C[i, j], rtol=1e-8, atol=1e-14)
    full = w.covariance(var)
    assert sparse.issparse(full)
    np.testing.assert_allclose(full.toarray(), C, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(w.apply(flux).ravel(), Wfull @ np.where(ivar > 0, flux, 0))
    np.testing.assert_allclose(w.full_matrix().toarray(), Wfull, atol=1e-15)


def test_wrong_length_is_a_clear_error():
    grid = Grid(0.75, 9)
    x = np.array([0.0, 1.0, -1.0])
    w = channel_weights(x, x * 0, 1.2, np.ones(3), np.ones(3), np.zeros(3, np.uint32), grid)
    with pytest.raises(ValueError, match="weights were built for 3"):
        w.apply(np.ones(4))
