"""Shepard weights against a plain-loop implementation of Liu et al. Eqs. 1-3."""

import numpy as np
import pytest

from crrxr.core.grid import Grid
from crrxr.core.neighbours import neighbour_pairs
from crrxr.core.shepard import shepard_weights, shepard_weights_sparse


def loop_shepard(xs, ys, good, px, py, sigma, rlim):
    """Eqs. 1-3 written out with loops."""
    W = np.zeros((len(px), len(xs)))
    for j in range(len(px)):
        w0 = 0.0
        for i in range(len(xs)):
            r = np.sqrt((xs[i] - px[j]) ** 2 + (ys[i] - py[j]) ** 2)
            if good[i] and r < rlim:
                w0 += np.exp(-r * r / (2 * sigma * sigma))
        for i in range(len(xs)):
            r = np.sqrt((xs[i] - px[j]) ** 2 + (ys[i] - py[j]) ** 2)
            if good[i] and r < rlim and w0 > 0:
                W[j, i] = np.exp(-r * r / (2 * sigma * sigma)) / w0
    return W


@pytest.fixture
def scene():
    rng = np.random.default_rng(3)
    xs, ys = rng.uniform(-3, 3, 40), rng.uniform(-3, 3, 40)
    good = rng.random(40) > 0.2
    g = Grid(0.5, 15)
    px, py = g.centres()
    r = np.hypot(xs[:, None] - px[None, :], ys[:, None] - py[None, :])
    return xs, ys, good, g, px, py, r


def test_matches_loop_implementation(scene):
    xs, ys, good, g, px, py, r = scene
    W = shepard_weights(r, good, 0.7, 1.6)
    ref = loop_shepard(xs, ys, good, px, py, 0.7, 1.6)
    assert W.shape == (g.size, xs.size)
    assert np.allclose(W, ref, rtol=1e-13, atol=1e-15)


def test_row_sums_cut_and_bad_columns(scene):
    xs, ys, good, g, px, py, r = scene
    W = shepard_weights(r, good, 0.7, 1.6)
    has = ((r < 1.6) & good[:, None]).any(axis=0)
    assert np.allclose(W.sum(axis=1)[has], 1.0, atol=1e-14)
    assert np.all(W[~has] == 0)
    assert np.all(W.T[r >= 1.6] == 0)
    assert np.all(W[:, ~good] == 0)
    assert has.sum() < g.size  # the scene leaves some pixels uncovered


def test_sparse_path_equals_dense(scene):
    xs, ys, good, g, px, py, r = scene
    s, p, d = neighbour_pairs(xs, ys, g, 1.6)
    Ws = shepard_weights_sparse(s, p, d, good, g.size, 0.7, 1.6)
    assert np.allclose(Ws.toarray(), shepard_weights(r, good, 0.7, 1.6), rtol=1e-13, atol=1e-15)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sigma"):
        shepard_weights(np.ones((2, 3)), np.ones(2, bool), sigma=0.0)
    with pytest.raises(ValueError, match="n_samples"):
        shepard_weights(np.ones((2, 3)), np.ones(3, bool))
