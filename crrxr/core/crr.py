"""Covariance-Regularized Reconstruction weights (Liu, Blanton & Law 2020, Eqs. 9-23).

With N~ = diag(good) and the SVD N~ A = U S V^T (singular values below ``floor`` dropped):

    A+ = V diag(S / (S^2 + lam^2)) U^T                     (Eqs. 19-20)
    Q  = V diag(q) V^T,  q = (S^2 + lam^2) / S  ("code")  or  q = S  ("paper")
    R  = Q with each row divided by its sum (rows sum to 1; rows summing to 0 -> 0)   (Eq. 14)
    W  = R A+ N~                                            (Eq. 23)

The "code" variant (the authors' code) whitens the regularized solution; then Q A+ = V U^T and
W = diag(1/s) V U^T N~ with s = Q 1. With the Gram matrix G = A_g A_g^T = U S^2 U^T of the good rows
A_g, V U^T = A_g^T U diag(1/S) U^T, so one symmetric eigendecomposition of the smaller Gram matrix
and sparse products replace the SVD ("gram" solver). The "paper" variant has the same structure with
different diagonal factors (see :func:`_factors`), so the gram route serves both variants.

The gram route squares the condition number. A kept mode enters W with weight c (above); the
eigendecomposition perturbs mode i by ~eps * w_max / w_i (w = S^2), so W's relative error is about
eps * kappa^2 with the *effective condition* kappa^2 = S_max^2 max_i(c_i / S_i^2) / max(c): the
condition cond = S_max / S_min for the code variant (c = 1), ~S_max / lambda for the paper variant,
whose modes below lambda carry c ~ S^2 / lambda^2 and hardly matter. ``solver="auto"`` uses the gram
route only where that estimate is below ``gram_rtol`` (default :data:`GRAM_RTOL`); an eigenvalue
close enough to the floor for the rank decision to be in doubt adds the weight such a mode would
carry, c(floor) / max(c) (1 for the code variant, so the SVD is used). Use ``solver="svd"`` for
agreement with the literal route to ~eps * kappa' with kappa' = S_max max_i(c_i / S_i) / max(c).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from crrxr.core.sample_removal import GramFactor

EPS = np.finfo(float).eps
# Largest estimated relative error (eps * cond^2) accepted from the gram route under "auto". Measured
# errors on MaNGA-like geometries were 1-2 orders of magnitude below the estimate (docs/benchmarks.md),
# i.e. <~1e-8 of max|W| at this threshold: below the float32 resolution of the cube.
GRAM_RTOL = 1e-6
#: The pixel-side factor (:class:`~crrxr.core.sample_removal.GramFactor`) takes its modes with
#: eigenvalues below this fraction of the largest from the SVD of A E over them (one-sided: each
#: singular value to ~eps S_max, instead of eigh's eps w_max on w = S^2; :func:`_one_sided`).
ONE_SIDED_RTOL = 1e-4


class CRRSolveError(ValueError):
    """The CRR weights cannot be computed (bad arguments or a failed decomposition)."""


@dataclass(frozen=True)
class CRRWeights:
    """Weights of the good samples and how they were obtained.

    weights: W restricted to the good samples, shape (n_pixels, n_good). solver: "svd" or "gram"
    (the route actually used). rank: number of kept singular values. condition: s_max / s_min over the
    kept singular values. effective_condition: the condition of the modes that carry weight in W
    (module docstring; equal to ``condition`` for the code variant, ~s_max / lambda for the paper
    variant). error_estimate: relative error bound of W, eps * effective_condition^2 for the gram
    route (plus the weight of a mode whose rank decision is in doubt), eps * S_max max(c / S) / max(c)
    for the SVD. factor: the eigendecomposition behind W, kept only when asked for (``keep_factor``)
    and only for a gram route: the code variant's sample-side route where it dropped no mode and
    its rank was not in doubt (what :func:`crrxr.core.sample_removal.remove_samples` and
    :func:`crrxr.core.pixel_update.change_pixels` use), and the paper variant's pixel-side route
    (``change_pixels`` only; dropped modes allowed, and a rank in doubt: a mode at the floor carries
    c(floor) ~ (floor / lam)^2 of W there, within the floor share every move from such a node
    reports); else None.
    """

    weights: np.ndarray
    solver: str
    rank: int
    condition: float
    error_estimate: float
    effective_condition: float = 1.0
    factor: GramFactor | None = None


def crr_weights(
    A: np.ndarray | sparse.spmatrix,
    good: np.ndarray,
    lam: float = 1e-3,
    floor: float = 1e-6,
    variant: str = "code",
    solver: str = "auto",
) -> np.ndarray:
    """CRR weights ``W`` (n_pixels, n_samples) for a kernel matrix ``A`` (n_samples, n_pixels).

    ``A[i, j] = K_i(|p_i - X_j|) * pixel_scale^2`` (dense or scipy sparse); ``good`` (n_samples,) bool
    marks usable samples. Columns of bad samples are exactly zero.
    """
    good = np.asarray(good, dtype=bool)
    shape = A.shape
    if len(shape) != 2 or good.shape != (shape[0],):
        raise CRRSolveError(
            f"A must be (n_samples, n_pixels) and good (n_samples,), got {shape} and {good.shape}"
        )
    rows = np.flatnonzero(good)
    Ag = A.tocsr()[rows] if sparse.issparse(A) else np.asarray(A, dtype=float)[rows]
    sol = solve_crr(Ag, lam=lam, floor=floor, variant=variant, solver=solver)
    W = np.zeros((shape[1], shape[0]))
    W[:, rows] = sol.weights
    return W


def solve_crr(
    Ag: np.ndarray | sparse.spmatrix,
    lam: float = 1e-3,
    floor: float = 1e-6,
    variant: str = "code",
    solver: str = "auto",
    gram_rtol: float = GRAM_RTOL,
    try_gram: bool = True,
    keep_factor: bool = False,
) -> CRRWeights:
    """CRR weights for the kernel matrix of the good samples only, ``Ag`` (n_good, n_pixels).

    ``try_gram=False`` makes ``solver="auto"`` go straight to the SVD (a caller that has just seen
    the gram route rejected for a nearly identical matrix saves the wasted eigendecomposition).
    ``keep_factor=True`` keeps the eigendecomposition in :attr:`CRRWeights.factor` where a
    low-rank update can use it (:class:`CRRWeights`; W is the same either way).
    """
    if variant not in ("code", "paper"):
        raise CRRSolveError(f"variant must be 'code' or 'paper', got {variant!r}")
    if solver not in ("auto", "svd", "gram"):
        raise CRRSolveError(f"solver must be 'auto', 'svd' or 'gram', got {solver!r}")
    if not (np.isfinite(lam) and lam >= 0 and np.isfinite(floor) and floor >= 0):
        raise CRRSolveError(
            f"lam and floor must be finite and >= 0, got lam={lam!r}, floor={floor!r}"
        )
    n, m = Ag.shape
    if n == 0 or m == 0:
        return CRRWeights(np.zeros((m, n)), "svd" if solver == "svd" else "gram", 0, 1.0, 0.0)
    if sparse.issparse(Ag):
        Ag = Ag.tocsr()
        data = Ag.data
    else:
        Ag = np.asarray(Ag, dtype=float)
        data = Ag
    if not np.all(np.isfinite(data)):
        raise CRRSolveError("kernel matrix contains NaN or infinite values")
    if solver == "svd":
        return _svd_literal(Ag, lam, floor, variant)
    if solver == "auto" and not try_gram:
        return _svd_fast(Ag, lam, floor, variant)
    try:
        sol = _gram(Ag, lam, floor, variant, keep_factor)
    except np.linalg.LinAlgError:
        if solver == "gram":
            raise
        return _svd_fast(Ag, lam, floor, variant)
    if solver == "auto" and sol.error_estimate > gram_rtol:
        return _svd_fast(Ag, lam, floor, variant)
    return sol


def _factors(S: np.ndarray, lam: float, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """(c, q): W = D V diag(c) U^T with s = V diag(q) V^T 1, over the kept singular values S."""
    lam2 = lam * lam
    if variant == "code":
        return np.ones_like(S), (S * S + lam2) / S
    return S * S / (S * S + lam2), S


def _amplification(S: np.ndarray, c: np.ndarray, power: int) -> float:
    """S_max^power max_i(c_i / S_i^power) / max(c) over the kept modes (S ascending or not): how much
    a relative perturbation eps * S_max^power / S_i^power of mode i moves W, relative to W."""
    c_max = float(np.max(c))
    if c_max <= 0:
        return 1.0
    return float(np.max(S) ** power * np.max(c / S**power) / c_max)


def _row_scale(s: np.ndarray) -> np.ndarray:
    """1 / s where s is nonzero and finite, else 0 (NaN rows of R -> 0, as the authors' code)."""
    out = np.zeros_like(s)
    ok = np.isfinite(s) & (s != 0)
    out[ok] = 1.0 / s[ok]
    return out


def _dense(Ag: np.ndarray | sparse.spmatrix) -> np.ndarray:
    return Ag.toarray() if sparse.issparse(Ag) else Ag


def _svd_result(W: np.ndarray, S: np.ndarray, c: np.ndarray) -> CRRWeights:
    """CRRWeights of an SVD route: kept singular values S (descending) with mode weights c."""
    amp1, amp2 = _amplification(S, c, 1), _amplification(S, c, 2)
    return CRRWeights(W, "svd", int(S.size), float(S[0] / S[-1]), EPS * amp1, float(np.sqrt(amp2)))


def _svd_literal(Ag, lam: float, floor: float, variant: str) -> CRRWeights:
    """The paper's route: SVD, A+, Q, R and W = R A+ as explicit matrices."""
    U, S, Vt = np.linalg.svd(_dense(Ag), full_matrices=False)
    keep = S >= floor
    U, S, V = U[:, keep], S[keep], Vt[keep].T
    m, n = V.shape[0], U.shape[0]
    if S.size == 0:
        return CRRWeights(np.zeros((m, n)), "svd", 0, 1.0, 0.0)
    a_plus = (V * (S / (S * S + lam * lam))) @ U.T
    q = (S * S + lam * lam) / S if variant == "code" else S
    Q = (V * q) @ V.T
    R = Q * _row_scale(Q.sum(axis=1))[:, None]
    W = R @ a_plus
    c = _factors(S, lam, variant)[0]
    return _svd_result(W, S, c)


def _svd_fast(Ag, lam: float, floor: float, variant: str) -> CRRWeights:
    """SVD route without the pixel x pixel products: W = D V diag(c) U^T."""
    U, S, Vt = np.linalg.svd(_dense(Ag), full_matrices=False)
    keep = S >= floor
    U, S, Vt = U[:, keep], S[keep], Vt[keep]
    m, n = Vt.shape[1], U.shape[0]
    if S.size == 0:
        return CRRWeights(np.zeros((m, n)), "svd", 0, 1.0, 0.0)
    c, q = _factors(S, lam, variant)
    s = Vt.T @ (q * Vt.sum(axis=1))
    W = (Vt.T * c) @ U.T
    W *= _row_scale(s)[:, None]
    return _svd_result(W, S, c)


def _eigh(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues and eigenvectors of the symmetric ``G`` (LAPACK dsyevd via numpy).

    numpy's, not scipy's: each wheel ships its own OpenBLAS, and alternating between the two in a hot
    loop is 3-4x slower with threaded BLAS (DESIGN.md section 4); with one thread they measured equal.
    """
    return np.linalg.eigh(G)


def _scale_rows(
    Ag: np.ndarray | sparse.csr_matrix, r: np.ndarray
) -> np.ndarray | sparse.csr_matrix:
    """diag(r) Ag; for CSR only the stored values are touched (cheaper than scaling a dense product)."""
    if sparse.issparse(Ag):
        out = Ag.copy()
        out.data *= np.repeat(r, np.diff(out.indptr))
        return out
    return Ag * r[:, None]


def _one_sided(
    A: sparse.csr_matrix, w: np.ndarray, E: np.ndarray, w_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the eigenvalues (ascending) and eigenvectors of H = A^T A with the modes below
    ONE_SIDED_RTOL w_max replaced by the SVD of A E over them: singular values S to ~eps S_max
    (relative eps S_max / S) where eigh gives w = S^2 to eps w_max (relative eps (S_max / S)^2,
    2e-5 at the smallest kept modes of a 2400-lenslet channel). W itself hardly depends on those
    modes (their weight is ~(S / lam)^2), but a pixel-side move does (an entering pixel's column
    has a part along them of O(1)): with eigh's values it was off by up to 3e-5 of max|W| against
    the exact solve on the new set, with these by ~1e-9 (docs/benchmarks.md). The rank decision
    stays eigh's (the same count of modes is dropped)."""
    w, E = w.copy(), E.copy()
    k = int(np.count_nonzero(w < ONE_SIDED_RTOL * w_max))
    if k:
        _, sv, Vt = np.linalg.svd(np.asarray(A @ E[:, :k]), full_matrices=False)
        E[:, :k] = E[:, :k] @ Vt[::-1].T
        w[:k] = sv[::-1] ** 2
    return w, E


def _gram(Ag, lam: float, floor: float, variant: str, keep_factor: bool = False) -> CRRWeights:
    """Exact shortcut through the eigendecomposition of the smaller Gram matrix."""
    n, m = Ag.shape
    is_sparse = sparse.issparse(Ag)
    sample_side = n <= m
    AgT = Ag.T.tocsr() if is_sparse else Ag.T
    G = Ag @ AgT if sample_side else AgT @ Ag
    G = G.toarray() if is_sparse else np.asarray(G)
    w, E = _eigh(G)
    w_eigh = w
    w_max = max(float(w[-1]), 0.0)
    thresh = floor * floor
    # Eigenvalues of G are accurate to ~eps * w_max: the rank is in doubt when one lies that close to
    # the floor, and the kept modes carry a relative error ~eps * w_max / w_min.
    band = 16.0 * EPS * w_max
    doubtful = bool(np.any(np.abs(w - thresh) <= band)) or (
        thresh == 0.0 and np.any(np.abs(w) <= band)
    )
    # w is ascending, so the kept modes are a suffix: slicing keeps E a view (no 10 MB copy)
    first = int(np.count_nonzero((w < thresh) | (w <= band)))
    E_all = E
    E, w = E[:, first:], w[first:]
    if w.size == 0:
        est = np.inf if doubtful else 0.0
        return CRRWeights(np.zeros((m, n)), "gram", 0, 1.0, est)
    S = np.sqrt(w)
    c, q = _factors(S, lam, variant)
    cond = float(S[-1] / S[0])
    amp = _amplification(S, c, 2)
    est = float(EPS * amp)
    if doubtful:
        # a mode at the floor may be kept here and dropped by the SVD (or the reverse): W differs by
        # that mode's share, c(floor) / max(c): 1 for the code variant
        c_floor = _factors(np.array([max(floor, band**0.5)]), lam, variant)[0][0]
        est = max(est, float(c_floor / np.max(c)))
    factor = None
    if sample_side:
        # V = Ag^T E / S; W = D V diag(c) E^T = D Ag^T E diag(c / S) E^T; s = V diag(q) V^T 1.
        t = Ag @ np.ones(m)
        s = AgT @ (E @ ((q / (S * S)) * (E.T @ t)))
        if keep_factor and variant == "code" and first == 0 and not doubtful:
            A_csr = Ag if is_sparse else sparse.csr_matrix(Ag)
            factor = GramFactor(A_csr, w.copy(), E.copy(), np.asarray(s).ravel().copy(), lam)
        E *= np.sqrt(c / S)  # E is not needed unscaled any more
        M = E @ E.T  # one symmetric rank-k update (BLAS syrk)
        W = _scale_rows(AgT, _row_scale(np.asarray(s).ravel())) @ M
    else:
        # V = E; U^T = diag(1/S) E^T Ag^T; W = D E diag(c / S) E^T Ag^T; s = E diag(q) E^T 1.
        s = E @ (q * E.sum(axis=0))
        # a rank in doubt too: the move from it reports its floor share (near-floor modes), which
        # covers the exact solve on the new set deciding that mode the other way (c(floor) of W)
        if keep_factor and variant == "paper":
            A_csr = Ag if is_sparse else sparse.csr_matrix(Ag)
            w_f, E_f = _one_sided(A_csr, w_eigh, E_all, w_max)
            factor = GramFactor(A_csr, w_f[first:], E_f, s.copy(), lam, side="pixel")
        E *= np.sqrt(c / S)
        M = E @ E.T  # symmetric, so (Ag M)^T = M Ag^T
        W = np.asarray((Ag @ M).T if is_sparse else M @ AgT)
        # the row scale D comes last: applied to M before the product it would act on M's rows,
        # which the sparse transpose turns into columns (the bug of issue #9)
        W *= _row_scale(s)[:, None]
    W = np.ascontiguousarray(W)
    return CRRWeights(W, "gram", int(S.size), cond, est, float(np.sqrt(amp)), factor)
