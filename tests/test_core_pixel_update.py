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
from crrxr.core.pixel_update import FLOOR_SPREAD, change_pixels

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


def lenslets(nside: int, pixel: float, seed: int):
    """Dense kernel matrix of a hexagonal lenslet array (0.75" pitch, one exposure: more samples
    than selected pixels at this pixel size, so the paper variant takes the pixel-side route) and
    each pixel's distance to the nearest lenslet."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(-nside, nside + 1), np.arange(-nside, nside + 1))
    x, y = 0.75 * (i + 0.5 * j), 0.75 * j * np.sqrt(3) / 2
    inside = np.hypot(x, y) <= 0.9 * 0.75 * nside
    x = x[inside] + 0.01 * rng.standard_normal(inside.sum())
    y = y[inside] + 0.01 * rng.standard_normal(inside.sum())
    half = (np.abs(np.r_[x, y]).max() + 3.0) // pixel
    c = pixel * np.arange(-half, half + 1)
    px, py = (a.ravel() for a in np.meshgrid(c, c))
    r = np.hypot(x[:, None] - px[None], y[:, None] - py[None])
    A = kernel(r, 1.2, 0.39) * pixel**2
    A[r >= 4.0] = 0.0
    return A, r.min(axis=0)


def lenslet_sets(dist: np.ndarray, n_in: int, n_out: int, seed: int):
    """Old set: pixels within 0.75" of a lenslet; new set: that less ``n_out`` of its outer pixels
    plus ``n_in`` from the ring outside."""
    rng = np.random.default_rng(seed)
    old = np.flatnonzero(dist <= 0.75)
    leave = rng.choice(old[dist[old] > 0.55], size=n_out, replace=False)
    enter = rng.choice(np.flatnonzero((dist > 0.75) & (dist <= 1.3)), size=n_in, replace=False)
    return old, np.sort(np.r_[np.setdiff1d(old, leave), enter])


def moved_paper(A, old, new, floor=1e-6):
    solve = solve_crr(A[:, old], variant="paper", floor=floor, keep_factor=True)
    assert solve.solver == "gram" and solve.factor is not None and solve.factor.side == "pixel"
    pos = np.full(A.shape[1], -1)
    pos[old] = np.arange(old.size)
    moved = change_pixels(
        solve.factor, solve.weights, sparse.csr_matrix(A[:, new]), pos[new], floor
    )
    return solve, pos, moved


@pytest.mark.parametrize(("n_in", "n_out"), [(1, 0), (0, 1), (2, 2), (3, 5), (6, 0), (0, 6)])
@pytest.mark.parametrize("nside", [6, 8])
def test_paper_variant_moved_on_the_pixel_side_equals_the_paper_equations(nside, n_in, n_out):
    """The paper variant's pixel-side solve (lenslets: more samples than pixels) moved to another
    set, against Eqs. 10-23 written out for the new set."""
    A, dist = lenslets(nside, 0.85, seed=nside)
    old, new = lenslet_sets(dist, n_in, n_out, seed=n_in + 10 * n_out)
    assert A.shape[0] > new.size  # the pixel-side route, before and after
    solve, pos, moved = moved_paper(A, old, new)
    assert moved is not None
    ref, _ = paper_weights(A[:, new], np.ones(A.shape[0], dtype=bool), variant="paper")
    err = np.abs(moved.weights - ref).max() / np.abs(ref).max()
    assert err <= SLACK * solve.error_estimate + 1e-9, (err, solve.error_estimate)
    kept = np.isin(new, old)
    change = np.abs(solve.weights[pos[new[kept]]] - ref[kept]).max() / np.abs(ref).max()
    assert change > 1e3 * max(err, 1e-12), (change, err)
    assert 0 <= moved.error <= 1e-9 and moved.floor_share == 0.0
    exact = solve_crr(A[:, new], variant="paper")
    # an upper bound (Weyl above, interlacing below): safe against the interpolation limit
    assert exact.effective_condition <= 1.01 * moved.condition <= 4 * exact.effective_condition


@pytest.mark.parametrize(("n_in", "n_out"), [(2, 0), (0, 3), (3, 3)])
def test_paper_variant_move_with_dropped_modes_is_the_solve_of_the_truncated_matrix(n_in, n_out):
    """A node that dropped modes below the floor is the exact solve of its truncated kernel matrix
    A_r = A V_r V_r^T; the move is the exact solve of A_r with the columns changed (every mode of
    it kept; of an entering column's part outside A_r's range only the directions above the floor,
    as an exact solve drops the modes the others make), and reports its floor share."""
    A, dist = lenslets(6, 0.85, seed=6)
    old, new = lenslet_sets(dist, n_in, n_out, seed=1 + n_in + 10 * n_out)
    S = np.linalg.svd(A[:, old], compute_uv=False)
    floor = float(np.sqrt(S[-4] * S[-5]))  # four modes dropped
    solve, pos, moved = moved_paper(A, old, new, floor)
    assert solve.rank == old.size - 4 and moved is not None
    U, _, Vt = np.linalg.svd(A[:, old], full_matrices=False)
    A_r = A[:, old] @ Vt[:-4].T @ Vt[:-4]  # the modes kept
    A_new = np.zeros((A.shape[0], new.size))
    kept = np.isin(new, old)
    A_new[:, kept] = A_r[:, pos[new[kept]]]
    # entering columns: their part in span(U_r), and of the rest the directions above the floor
    Z, U_r = A[:, new[~kept]], U[:, :-4]
    inside = U_r @ (U_r.T @ Z)
    Q, sv, Wt = np.linalg.svd(Z - inside, full_matrices=False)
    up = sv >= floor
    A_new[:, ~kept] = inside + (Q[:, up] * sv[up]) @ Wt[up]
    ref, _ = paper_weights(A_new, np.ones(A.shape[0], dtype=bool), floor=1e-9, variant="paper")
    err = np.abs(moved.weights - ref).max() / np.abs(ref).max()
    assert err <= 1e-8, err
    # how far an exact solve on the new set lies is measured on 2400-lenslet channels at floors far
    # below lam (docs/benchmarks.md); this floor is ~8 lam, outside that model
    assert moved.floor_share == pytest.approx(FLOOR_SPREAD * floor / 1e-3)


def with_twin(A, old, new, twin: float, seed: int):
    """A with one more pixel whose kernel column is old[0]'s plus ``twin`` of its norm in a random
    direction (a singular value ~twin), appended to both sets."""
    base = A[:, old[0]]
    noise = np.random.default_rng(seed).standard_normal(base.size)
    B = np.hstack([A, (base + twin * np.linalg.norm(base) * noise)[:, None]])
    return B, np.r_[old, A.shape[1]], np.r_[new, A.shape[1]]


@pytest.mark.parametrize(("twin", "n_out"), [(1e-7, 1), (2e-7, 2), (3e-7, 3)])
def test_paper_variant_node_whose_rank_is_in_doubt_keeps_its_factor(twin, n_out):
    """A pixel whose kernel column is a kept one's plus ``twin`` of its norm in another direction
    makes a singular value ~twin far below lam; a floor at exactly that value puts the node's rank
    in doubt (the eigenvalue of H lies within rounding of floor^2: the gram route keeps or drops
    that mode by rounding). The node still keeps its factor (on 2400-lenslet channels one such
    node had cost its block 13 solves instead of 5) and its move reports the floor share, which
    covers what the exact solve on the new set, deciding that mode by its own rounding, differs
    by: c(floor) ~ (floor / lam)^2 of W and the modes near the floor."""
    A, dist = lenslets(6, 0.85, seed=6)
    B, old, new = with_twin(A, *lenslet_sets(dist, 0, n_out, seed=2 + 10 * n_out), twin, n_out)
    floor = float(np.linalg.svd(B[:, old], compute_uv=False)[-1])
    assert floor < 1e-2 * 1e-3  # far below lam: the gram route and the floor share's model
    solve, pos, moved = moved_paper(B, old, new, floor)
    c_floor = floor**2 / (floor**2 + 1e-6)
    assert solve.error_estimate >= c_floor  # the solve reports the doubt
    assert solve.rank in (old.size - 1, old.size)  # that mode kept or dropped by rounding
    assert moved is not None and moved.floor_share == pytest.approx(FLOOR_SPREAD * floor / 1e-3)
    assert moved.floor_share >= c_floor
    # against the exact solve on the new set, which decides that mode by its own rounding
    exact = solve_crr(B[:, new], variant="paper", floor=floor)
    diff = np.abs(moved.weights - exact.weights).max() / np.abs(exact.weights).max()
    assert diff <= moved.floor_share, (diff, moved.floor_share)


def test_paper_variant_unchanged_set_and_a_duplicated_pixel():
    """An unchanged set gives the node's own weights. An entering pixel whose kernel column is a
    copy of a kept one makes H' singular: the exact solve drops that null mode, and the move, which
    sees the pixels only through A' A'^T, agrees with it."""
    A, dist = lenslets(6, 0.85, seed=6)
    old = np.flatnonzero(dist <= 0.75)
    solve, pos, moved = moved_paper(A, old, old)
    np.testing.assert_array_equal(moved.weights, solve.weights)
    B = np.hstack([A, A[:, old[:1]]])  # pixel B.shape[1]-1 duplicates old[0]
    new = np.r_[old, B.shape[1] - 1]
    pos = np.r_[pos, -1]
    moved = change_pixels(solve.factor, solve.weights, sparse.csr_matrix(B[:, new]), pos[new])
    exact = solve_crr(B[:, new], variant="paper")
    assert exact.rank == old.size
    scale = np.abs(exact.weights).max()
    np.testing.assert_allclose(moved.weights, exact.weights, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(moved.weights[0], moved.weights[-1], rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("twin", [1e-4, 1e-5, 1e-6])
@pytest.mark.parametrize(("n_in", "n_out"), [(1, 0), (3, 3)])
def test_paper_variant_move_with_a_kept_mode_far_below_lam(twin, n_in, n_out):
    """A twin pixel (its kernel column a kept one's plus ``twin`` of its norm) makes a kept
    singular value ~twin far below lam, and the floor is far below it (floor share 0). An entering
    pixel's column has a part of O(1) along that mode, so the move needs the mode's singular value
    to ~eps S_max, not eigh's eps w_max on S^2 (crrxr.core.crr.ONE_SIDED_RTOL): it agrees with the
    exact solve on the new set within SLACK x the error estimates (with eigh's values it was off
    by 3.4e-9, 1.7e-6 and 2.8e-5 at twins 1e-4, 1e-5 and 1e-6, and this fails)."""
    A, dist = lenslets(6, 0.85, seed=6)
    B, old, new = with_twin(
        A, *lenslet_sets(dist, n_in, n_out, seed=3 + n_in + 10 * n_out), twin, 1
    )
    solve, pos, moved = moved_paper(B, old, new, floor=1e-9)
    assert solve.rank == old.size and moved is not None and moved.floor_share == 0.0
    assert np.linalg.svd(B[:, old], compute_uv=False)[-1] < 0.1 * 1e-3
    exact = solve_crr(B[:, new], variant="paper", floor=1e-9)
    diff = np.abs(moved.weights - exact.weights).max() / np.abs(exact.weights).max()
    assert diff <= SLACK * (moved.error + exact.error_estimate), diff
