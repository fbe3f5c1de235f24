"""CRR weights moved to another solved-pixel set by a low-rank update of the exact solve on the
old set (crrxr.core.pixel_update), against the paper's equations written out in tests/reference.py
for the new set, over bundle geometries, exposure counts and pixels entering and leaving."""

from __future__ import annotations

import numpy as np
import pytest
from reference import kernel, paper_weights
from rss_fixtures import bundle
from scipy import sparse

from crrxr.core.crr import solve_crr
from crrxr.core.pixel_update import change_pixels

SLACK = 50.0  # on the exact solve's own error estimate, as in test_core_crr_properties


def geometry(rings: int, n_exp: int, pixel: float, seed: int):
    """Dense kernel matrix (samples x every grid pixel) and each pixel's distance to the nearest
    sample, for a dithered bundle (the fixtures of test_core_crr_properties, unselected)."""
    rng = np.random.default_rng(seed)
    fx, fy = bundle(3 * rings * (rings + 1) + 1, 2.5)
    ang = np.deg2rad([90.0, 210.0, 330.0])[np.arange(n_exp) % 3]
    rho = 2.5 / 3 if n_exp > 1 else 0.0
    dx = rho * np.cos(ang) + 0.05 * rng.standard_normal(n_exp)
    dy = rho * np.sin(ang) + 0.05 * rng.standard_normal(n_exp)
    fw = 1.3 * (1 + 0.05 * rng.standard_normal(n_exp))
    x = (fx[None] + dx[:, None]).ravel()
    y = (fy[None] + dy[:, None]).ravel()
    half = (np.abs(np.r_[x, y]).max() + 3.0) // pixel
    c = pixel * np.arange(-half, half + 1)
    px, py = (a.ravel() for a in np.meshgrid(c, c))
    r = np.hypot(x[:, None] - px[None], y[:, None] - py[None])
    A = np.zeros_like(r)
    for e in range(n_exp):
        rows = slice(e * fx.size, (e + 1) * fx.size)
        A[rows] = kernel(r[rows], fw[e], 1.0) * pixel**2
    A[r >= 4.0] = 0.0
    return A, r.min(axis=0)


CASES = {
    "7x3-0.5": (1, 3, 0.5, 1),
    "19x9-0.75": (2, 9, 0.75, 3),
    "37x9-0.75": (3, 9, 0.75, 7),
}


def sets(dist: np.ndarray, n_in: int, n_out: int, seed: int):
    """Old set: pixels within 1.6" of a sample; new set: that less ``n_out`` of its outermost
    pixels plus ``n_in`` of the nearest ones outside (what a shift of the samples does)."""
    rng = np.random.default_rng(seed)
    old = np.flatnonzero(dist <= 1.6)
    edge = old[dist[old] > 1.3]
    outside = np.flatnonzero((dist > 1.6) & (dist <= 1.9))
    leave = rng.choice(edge, size=n_out, replace=False)
    enter = rng.choice(outside, size=n_in, replace=False)
    new = np.sort(np.r_[np.setdiff1d(old, leave), enter])
    return old, new


@pytest.mark.parametrize(("n_in", "n_out"), [(1, 0), (0, 1), (2, 2), (3, 5), (6, 0)])
@pytest.mark.parametrize("name", CASES)
def test_moved_weights_equal_the_paper_equations_on_the_new_set(name, n_in, n_out):
    A, dist = geometry(*CASES[name])
    old, new = sets(dist, n_in, n_out, seed=n_in + 10 * n_out)
    solve = solve_crr(A[:, old], keep_factor=True)
    assert solve.factor is not None and solve.solver == "gram"
    pos = np.full(dist.size, -1)
    pos[old] = np.arange(old.size)
    moved = change_pixels(solve.factor, solve.weights, sparse.csr_matrix(A[:, new]), pos[new])
    assert moved is not None
    ref, cond = paper_weights(A[:, new], np.ones(A.shape[0], dtype=bool))
    assert moved.weights.shape == ref.shape
    err = np.abs(moved.weights - ref).max() / np.abs(ref).max()
    assert err <= SLACK * solve.error_estimate + 1e-9, (err, solve.error_estimate, cond)
    # the new set really changes the kept pixels' weights (a no-op would not be noticed otherwise)
    kept = np.isin(new, old)
    change = np.abs(solve.weights[pos[new[kept]]] - ref[kept]).max()
    assert change > 1e3 * max(err, 1e-12), (change, err)
    assert 0 <= moved.error <= 1e-9
    assert moved.condition == pytest.approx(cond, rel=0.02)


def test_an_unchanged_set_gives_the_same_weights():
    A, dist = geometry(*CASES["19x9-0.75"])
    old = np.flatnonzero(dist <= 1.6)
    solve = solve_crr(A[:, old], keep_factor=True)
    moved = change_pixels(
        solve.factor, solve.weights, sparse.csr_matrix(A[:, old]), np.arange(old.size)
    )
    scale = np.abs(solve.weights).max()
    np.testing.assert_allclose(moved.weights, solve.weights, rtol=0, atol=1e-12 * scale)
    assert moved.error == 0.0


def test_a_set_that_leaves_g_singular_is_refused():
    """With as many pixels as samples, removing one leaves G' = A' A'^T singular (its smallest
    eigenvalue at rounding level, where the exact solve drops a mode): the update does not apply.
    Removing a pixel from a larger set does."""
    A, dist = geometry(*CASES["7x3-0.5"])
    order = np.argsort(dist)
    m = A.shape[0]
    old = np.sort(order[:m])  # the m pixels nearest to the samples
    solve = solve_crr(A[:, old], keep_factor=True)
    assert solve.factor is not None
    pos = np.full(dist.size, -1)
    pos[old] = np.arange(old.size)
    new = old[1:]
    assert (
        change_pixels(solve.factor, solve.weights, sparse.csr_matrix(A[:, new]), pos[new]) is None
    )
    more = np.sort(order[: m + 3])
    solve = solve_crr(A[:, more], keep_factor=True)
    pos[more] = np.arange(more.size)
    moved = change_pixels(
        solve.factor, solve.weights, sparse.csr_matrix(A[:, more[1:]]), pos[more[1:]]
    )
    assert moved is not None and moved.condition < 1e6
