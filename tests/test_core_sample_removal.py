"""CRR weights with a few more samples masked, by a low-rank update of the full set's solve
(crrxr.core.sample_removal), against the paper's equations written out in tests/reference.py for
the reduced sample set, over bundle geometries, exposure counts and numbers of removed samples."""

from __future__ import annotations

import numpy as np
import pytest
from reference import paper_weights
from test_core_crr_properties import _case, kernel_matrix

import crrxr.core.sample_removal as sample_removal
from crrxr.core.crr import solve_crr
from crrxr.core.sample_removal import remove_samples

# bundle x exposures - pixel; all take the sample-side gram route (fewer samples than pixels)
CASES = {
    "7x3-0.5": _case(1, 3, 0.5, seed=1),
    "19x9-0.75": _case(2, 9, 0.75, seed=3),
    "37x9-0.75": _case(3, 9, 0.75, seed=7),
    "61x9-0.75": _case(4, 9, 0.75, seed=5),
    "19x12-0.75": _case(2, 12, 0.75, jitter=0.1, seed=8),
}
SLACK = 50.0  # on the exact solve's own error estimate, as in test_core_crr_properties


def _drop(m: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(m, size=k, replace=False))


@pytest.mark.parametrize("k", [1, 2, 3, 6])
@pytest.mark.parametrize("name", CASES)
def test_removal_equals_the_paper_equations_without_those_samples(name, k):
    A, _ = kernel_matrix(CASES[name])
    m = A.shape[0]
    full = solve_crr(A, keep_factor=True)
    assert full.factor is not None and full.solver == "gram", (full.solver, A.shape)
    drop = _drop(m, min(k, m - 1), seed=k)
    good = np.ones(m, dtype=bool)
    good[drop] = False
    ref, cond = paper_weights(A, good)
    rem = remove_samples(full.factor, drop)
    W = rem.rows(full.weights)
    assert W.shape == ref.shape and np.all(W[:, drop] == 0.0)
    err = np.abs(W - ref).max() / np.abs(ref).max()
    assert err <= SLACK * full.error_estimate + 1e-9, (err, full.error_estimate, cond)
    # the removal really changes W (the test would not notice a no-op otherwise)
    change = np.abs(np.delete(full.weights, drop, axis=1) - np.delete(ref, drop, axis=1)).max()
    assert change > 1e3 * max(err, 1e-12) and change > 1e-3 * np.abs(ref).max()
    assert 0 <= rem.error <= 1e-6
    # rows formed a block at a time are the same rows (to the BLAS's blocking)
    np.testing.assert_allclose(rem.rows(full.weights, 3, 11), W[3:11], atol=1e-13 * np.abs(W).max())


@pytest.mark.parametrize("step", [0.8, 1.2])
def test_quadrature_error_estimate_covers_a_coarse_rule(monkeypatch, step):
    """With a coarse step the rule is visibly off, and its own estimate says so (over-estimates)."""
    A, _ = kernel_matrix(CASES["19x9-0.75"])
    full = solve_crr(A, keep_factor=True)
    monkeypatch.setattr(sample_removal, "STEP", step)
    for k in (1, 3):
        drop = _drop(A.shape[0], k, seed=10 + k)
        good = np.ones(A.shape[0], dtype=bool)
        good[drop] = False
        ref = paper_weights(A, good)[0]
        rem = remove_samples(full.factor, drop)
        err = np.abs(rem.rows(full.weights) - ref).max() / np.abs(ref).max()
        assert err > 1e-7, err  # the coarse rule is really worse than the default
        assert rem.error >= err, (rem.error, err)


def test_factor_kept_only_where_the_update_applies():
    A, _ = kernel_matrix(CASES["19x9-0.75"])
    assert solve_crr(A).factor is None  # not asked for
    assert solve_crr(A, keep_factor=True, variant="paper").factor is None
    assert solve_crr(A, keep_factor=True, solver="svd").factor is None
    # more samples than pixels: the pixel-side gram route, no sample-side factor
    B, _ = kernel_matrix(_case(2, 21, 1.5, seed=5))
    assert B.shape[0] > B.shape[1]
    assert solve_crr(B, keep_factor=True).factor is None
    # same W with and without keeping it
    np.testing.assert_array_equal(solve_crr(A, keep_factor=True).weights, solve_crr(A).weights)
