"""CRR weights: literal SVD route vs exact gram shortcut vs a plain reference of Eqs. 10-23."""

import numpy as np
import pytest

from crrxr.core.crr import GRAM_RTOL, CRRSolveError, crr_weights, solve_crr
from crrxr.core.grid import Grid
from crrxr.core.kernel import radial_kernel
from crrxr.simulate.geometry import dither_offsets, hex_bundle


def manga_kernel_matrix(
    n_fibers=19,
    n_exp=3,
    jitter=0.0,
    seeing_jitter=0.0,
    pixel=0.75,
    extent=17.0,
    seed=0,
    duplicate=1,
    masked=0.0,
    seeing=1.19,
):
    """Dense A (n_samples, n_selected_pixels) for a dithered hex bundle, and the good mask."""
    rng = np.random.default_rng(seed)
    fx, fy = hex_bundle(n_fibers)
    dx, dy = dither_offsets(n_exp, jitter=jitter, rng=rng)
    fw = seeing * (1 + seeing_jitter * rng.standard_normal(n_exp))
    dx, dy, fw = (np.tile(a, duplicate) for a in (dx, dy, fw))
    x = (fx[None, :] + dx[:, None]).ravel()
    y = (fy[None, :] + dy[:, None]).ravel()
    fwhm = np.repeat(fw, n_fibers)
    g = Grid.for_extent(pixel, extent)
    px, py = g.centres()
    r = np.hypot(x[:, None] - px[None, :], y[:, None] - py[None, :])
    sel = (r <= 1.6).any(axis=0)
    r = r[:, sel]
    A = np.stack([radial_kernel(r[i], fwhm[i]) for i in range(x.size)]) * pixel**2
    A[r >= 4.0] = 0.0
    good = rng.random(x.size) >= masked
    return A, good


def reference_weights(A, good, lam, floor, variant):
    """Eqs. 10-23 of Liu et al. (2020) written out: SVD of N~ A with every row, R by explicit division."""
    Nt = np.diag(good.astype(float))
    U, S, Vt = np.linalg.svd(Nt @ A, full_matrices=False)
    k = S >= floor
    U, S, V = U[:, k], S[k], Vt[k].T
    a_plus = V @ np.diag(S / (S**2 + lam**2)) @ U.T
    Q = V @ np.diag((S**2 + lam**2) / S if variant == "code" else S) @ V.T
    R = np.zeros_like(Q)
    for j in range(Q.shape[0]):
        total = Q[j].sum()
        if total != 0:
            R[j] = Q[j] / total
    assert np.allclose(R.sum(axis=1)[np.abs(Q).sum(axis=1) > 0], 1.0)
    return R @ a_plus @ Nt


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


WELL_POSED = {
    "19x3": dict(),
    "37x3-jitter": dict(n_fibers=37, extent=22.0, jitter=0.05, seeing_jitter=0.05, seed=1),
    "19x3-duplicated": dict(duplicate=3),
    "19x3-masked": dict(masked=0.15, seed=2),
    "61x3-dup-masked": dict(n_fibers=61, extent=27.0, duplicate=2, masked=0.1, seed=4),
    "pixel-side": dict(n_exp=6, jitter=0.3, seeing_jitter=0.1, pixel=1.5, seed=5),
}


@pytest.mark.parametrize("case", list(WELL_POSED))
@pytest.mark.parametrize("variant", ["code", "paper"])
def test_gram_equals_svd_and_reference(case, variant):
    A, good = manga_kernel_matrix(**WELL_POSED[case])
    ref = reference_weights(A, good, 1e-3, 1e-6, variant)
    svd = crr_weights(A, good, variant=variant, solver="svd")
    gram = crr_weights(A, good, variant=variant, solver="gram")
    auto = crr_weights(A, good, variant=variant, solver="auto")
    assert rel(svd, ref) <= 1e-10
    assert rel(gram, svd) <= 1e-10
    assert rel(auto, svd) <= 1e-10
    assert np.all(svd[:, ~good] == 0) and np.all(gram[:, ~good] == 0)


def test_sparse_input_equals_dense():
    from scipy import sparse

    A, good = manga_kernel_matrix(masked=0.1, seed=3)
    for solver in ("svd", "gram"):
        dense = crr_weights(A, good, solver=solver)
        for fmt in (sparse.coo_matrix, sparse.csr_matrix, sparse.csc_matrix):
            assert rel(crr_weights(fmt(A), good, solver=solver), dense) <= 1e-12


def test_pixel_side_gram_is_used():
    A, good = manga_kernel_matrix(**WELL_POSED["pixel-side"])
    assert (
        good.sum() > A.shape[1]
    )  # more samples than pixels: the pixel-side Gram matrix is smaller
    sol = solve_crr(A[good], solver="gram")
    assert sol.solver == "gram" and sol.rank == A.shape[1]


def test_duplicated_exposures_drop_zero_singular_values():
    A1, _ = manga_kernel_matrix()
    A3, good = manga_kernel_matrix(duplicate=3)
    sol = solve_crr(A3[good], solver="gram")
    assert sol.rank == solve_crr(A1, solver="svd").rank  # exact copies add no new modes
    for solver in ("svd", "gram", "auto"):
        W = crr_weights(A3, good, solver=solver)
        assert np.all(np.isfinite(W))


def test_gram_error_stays_within_its_estimate():
    # 9 jittered exposures of a 19-fiber bundle: condition ~1e3-1e4; gram is used by "auto" and its
    # measured error stays below the estimate eps * cond^2 that "auto" relies on
    for seed in (0, 1):
        A, good = manga_kernel_matrix(n_exp=9, jitter=0.05, seeing_jitter=0.05, seed=seed)
        gram = solve_crr(A, solver="gram")
        svd = solve_crr(A, solver="svd")
        assert 1e-10 < gram.error_estimate < GRAM_RTOL
        assert solve_crr(A, solver="auto").solver == "gram"
        assert rel(gram.weights, svd.weights) <= gram.error_estimate


def test_ill_conditioned_auto_falls_back_to_svd():
    # 12 exposures with 0.02" jitter: singular values near the floor, condition ~5e5
    A, good = manga_kernel_matrix(n_exp=12, jitter=0.02, seeing_jitter=0.05, seed=0)
    gram = solve_crr(A, solver="gram")
    auto = solve_crr(A, solver="auto")
    svd = solve_crr(A, solver="svd")
    assert gram.error_estimate > GRAM_RTOL
    assert auto.solver == "svd"
    assert rel(auto.weights, svd.weights) <= 1e-10
    assert rel(gram.weights, svd.weights) <= gram.error_estimate


def test_paper_variant_error_follows_the_modes_that_carry_weight():
    """The paper variant weighs a mode by c = S^2 / (S^2 + lam^2): modes far below lambda hardly
    enter W, so the gram route's error follows the effective condition (~S_max / lambda), not
    S_max / S_min. On the ill-conditioned 12-exposure bundle (condition ~5e5, where the code
    variant needs the SVD) "auto" takes the gram route for the paper variant, and its error against
    the literal SVD route stays within the (much smaller) estimate. The code variant is unchanged:
    its effective condition is its condition."""
    A, good = manga_kernel_matrix(n_exp=12, jitter=0.02, seeing_jitter=0.05, seed=0)
    s = np.linalg.svd(A, compute_uv=False)
    for lam in (1e-3, 1e-2):
        code = solve_crr(A, lam=lam, solver="gram")
        assert code.effective_condition == pytest.approx(code.condition, rel=1e-12)
        assert code.condition > 1e5
        assert solve_crr(A, lam=lam, solver="auto").solver == "svd"
        gram = solve_crr(A, lam=lam, variant="paper", solver="gram")
        svd = solve_crr(A, lam=lam, variant="paper", solver="svd")
        kept = s[s >= 1e-6]
        # sqrt(S_max^2 max(c / S^2) / max(c)) with c = S^2 / (S^2 + lam^2), written out here
        c = kept**2 / (kept**2 + lam**2)
        expected = np.sqrt(kept.max() ** 2 * np.max(1 / (kept**2 + lam**2)) / c.max())
        assert gram.effective_condition == pytest.approx(expected, rel=1e-6)
        assert gram.effective_condition < 1.1 * kept.max() / lam < gram.condition / 10
        assert gram.error_estimate < GRAM_RTOL
        assert solve_crr(A, lam=lam, variant="paper", solver="auto").solver == "gram"
        assert rel(gram.weights, svd.weights) <= gram.error_estimate
        assert rel(svd.weights, gram.weights) > 0  # two routes, not one


def test_eq16_diagonal_covariance_at_full_column_rank():
    A, good = manga_kernel_matrix(**WELL_POSED["pixel-side"])
    assert np.linalg.matrix_rank(A[good]) == A.shape[1]
    for variant in ("code", "paper"):
        for solver in ("svd", "gram"):
            W = crr_weights(A, good, lam=0.0, variant=variant, solver=solver)
            C = W @ np.diag(good.astype(float)) @ W.T
            off = C - np.diag(np.diag(C))
            assert np.max(np.abs(off)) <= 1e-10 * np.max(np.diag(C))
            # R rows sum to 1 and A has full column rank: W A reproduces a flat F exactly
            assert np.allclose(W @ (A @ np.ones(A.shape[1])), 1.0, atol=1e-10)


def test_code_variant_lambda_only_rescales_rows():
    A, good = manga_kernel_matrix(n_exp=3, jitter=0.05, seed=7)
    W0 = crr_weights(A, good, lam=0.0, solver="svd")
    for lam in (1e-4, 1e-3):
        W = crr_weights(A, good, lam=lam, solver="svd")
        scale = (W * W0).sum(axis=1) / (W0 * W0).sum(axis=1)
        assert np.allclose(W, scale[:, None] * W0, atol=1e-10 * np.abs(W0).max())
    Wp = crr_weights(A, good, lam=1e-3, variant="paper", solver="svd")
    assert rel(Wp, W0) > 1e-6  # the paper variant changes the weights themselves


def test_floor_drops_modes_and_empty_cases():
    A, good = manga_kernel_matrix()
    s = np.linalg.svd(A, compute_uv=False)
    floor = np.sort(s)[5] * (1 + 1e-6)
    sol = solve_crr(A, floor=floor, solver="svd")
    assert sol.rank == s.size - 6
    assert rel(solve_crr(A, floor=floor, solver="gram").weights, sol.weights) <= 1e-10
    none = crr_weights(A, np.zeros(A.shape[0], bool))
    assert none.shape == (A.shape[1], A.shape[0]) and np.all(none == 0)
    big = solve_crr(A, floor=1e3)
    assert big.rank == 0 and np.all(big.weights == 0)


@pytest.mark.parametrize(
    "kwargs", [dict(variant="x"), dict(solver="qr"), dict(lam=-1.0), dict(floor=np.nan)]
)
def test_bad_arguments(kwargs):
    A, good = manga_kernel_matrix()
    with pytest.raises(CRRSolveError):
        crr_weights(A, good, **kwargs)


def test_nan_kernel_matrix_rejected():
    A, good = manga_kernel_matrix()
    A[0, 0] = np.nan
    with pytest.raises(CRRSolveError, match="NaN"):
        crr_weights(A, good)
    with pytest.raises(CRRSolveError, match="n_samples"):
        crr_weights(A, good[:-1])
