"""Propagated covariance C = W N W^T against a seeded Monte-Carlo of reconstructed noise."""

import numpy as np
import pytest

from crrxr.core import CoreConfig, Grid, reconstruct_block
from crrxr.core.covariance import correlation_matrix, pair_correlation, propagated_variance
from crrxr.core.crr import crr_weights
from crrxr.core.kernel import radial_kernel
from crrxr.simulate.geometry import dither_offsets, hex_bundle


def setup(seed=0):
    rng = np.random.default_rng(seed)
    fx, fy = hex_bundle(19)
    dx, dy = dither_offsets(3, jitter=0.05, rng=rng)
    x = (fx[None, :] + dx[:, None]).ravel()
    y = (fy[None, :] + dy[:, None]).ravel()
    fw = np.full(x.size, 1.19)
    var = rng.uniform(0.5, 3.0, x.size)
    return x, y, fw, var, rng


@pytest.mark.parametrize("method", ["crr", "shepard"])
def test_monte_carlo_variance_and_covariance(method):
    x, y, fw, var, rng = setup()
    n_real = 4000
    grid = Grid.for_extent(0.75, 12.0)
    noise = rng.standard_normal((x.size, n_real)) * np.sqrt(var)[:, None]
    X, Y = np.repeat(x[:, None], n_real, 1), np.repeat(y[:, None], n_real, 1)
    ivar = np.repeat((1 / var)[:, None], n_real, 1)
    res = reconstruct_block(
        X,
        Y,
        fw,
        noise,
        ivar,
        np.zeros_like(noise, dtype=np.uint32),
        grid,
        CoreConfig(method=method),
    )
    images = res.flux.reshape(n_real, -1)
    solved = res.ivar[0].ravel() > 0
    # diagonal: sample variance vs 1/ivar; relative standard error of a variance = sqrt(2 / n)
    sample_var = images[:, solved].var(axis=0, ddof=1)
    model_var = 1 / res.ivar[0].ravel()[solved]
    z = (sample_var / model_var - 1) / np.sqrt(2 / (n_real - 1))
    assert np.max(np.abs(z)) < 5.0
    assert abs(np.mean(z)) < 5.0 / np.sqrt(z.size) + 0.2
    # off-diagonal: sample covariance of nearby pixels vs C_ab; standard error sqrt((C_aa C_bb + C_ab^2) / n)
    idx = np.flatnonzero(solved)
    a, b = idx[:-1], idx[1:]
    ca, cb = model_var[:-1], model_var[1:]
    d = images[:, solved] - images[:, solved].mean(axis=0)
    sample_cov = (d[:, :-1] * d[:, 1:]).sum(axis=0) / (n_real - 1)
    # model covariance from the correlation path of the core (rho at the same pairs)
    rho = reconstruct_block(
        X[:, :1],
        Y[:, :1],
        fw,
        noise[:, :1],
        ivar[:, :1],
        np.zeros((x.size, 1), np.uint32),
        grid,
        CoreConfig(method=method),
        correlation_pairs=(a, b),
        want=(0,),
    ).rho[0]
    model_cov = rho * np.sqrt(ca * cb)
    z = (sample_cov - model_cov) / np.sqrt((ca * cb + model_cov**2) / n_real)
    assert np.max(np.abs(z)) < 5.0
    assert np.sqrt(np.mean(z**2)) < 1.3  # reduced chi^2 of the covariances close to 1
    assert np.max(np.abs(rho)) > 0.05  # the test sees real correlations


def test_covariance_helpers_agree_with_dense_formula():
    x, y, fw, var, rng = setup(1)
    grid = Grid.for_extent(0.75, 12.0)
    px, py = grid.centres()
    r = np.hypot(x[:, None] - px[None, :], y[:, None] - py[None, :])
    A = np.where(r < 4, radial_kernel(r, 1.19), 0) * 0.75**2
    good = rng.random(x.size) > 0.1
    W = crr_weights(A, good)
    v = np.where(good, var, 0)
    C = W @ np.diag(v) @ W.T
    assert np.allclose(propagated_variance(W, v), np.diag(C))
    i, j = np.array([10, 50, 70]), np.array([11, 80, 70])
    d = np.sqrt(np.diag(C))
    expect = np.divide(C[i, j], d[i] * d[j], out=np.zeros(3), where=d[i] * d[j] > 0)
    assert np.allclose(pair_correlation(W, v, i, j), expect)
    from scipy import sparse

    assert np.allclose(pair_correlation(sparse.csr_matrix(W), v, i, j), expect)
    full = correlation_matrix(W, v)
    assert sparse.issparse(full) and np.allclose(
        full.toarray(),
        np.triu(np.divide(C, np.outer(d, d), out=np.zeros_like(C), where=np.outer(d, d) > 0)),
    )
