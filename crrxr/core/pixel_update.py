"""CRR weights of one channel on another solved-pixel set, from its exact solve on its own set: a
low-rank update instead of a new eigendecomposition (issue #14: weight reuse across selection
changes).

The code variant's sample-side gram route (:mod:`crrxr.core.crr`) gives, for the kernel matrix A
(m usable samples x n selected pixels) and G = A A^T = E diag(w) E^T,

    W = diag(1/s) A^T G^{-1/2},   s = A^T (G^{-1/2} + lam^2 G^{-3/2}) A 1.

Pixels entering the selection add their kernel columns Z_+ to A, pixels leaving remove theirs, Z_-:
G' = G + Z C Z^T with Z = [Z_+, Z_-] (m x r) and C = diag(+1, ..., -1, ...). With the resolvent
R(t) = (G + t^2)^{-1} = E diag(1 / (w + t^2)) E^T, Woodbury's identity and
x^{-1/2} = (2/pi) int_0^inf dt / (x + t^2) give exactly

    (G')^{-1/2} = G^{-1/2} - E K E^T,
    K = (2/pi) int_0^inf F(t) M(t)^{-1} F(t)^T dt,  F(t) = diag(1 / (w + t^2)) E^T Z,
    M(t) = C + Z^T R(t) Z   (r x r, symmetric, indefinite where pixels leave),

and (G')^{-1} = G^{-1} - G^{-1} Z M(0)^{-1} Z^T G^{-1} for s. The integral is taken by the same
trapezoidal rule in log t as :mod:`crrxr.core.sample_removal` (error ~exp(-pi^2 / step), the same
error estimate from the rule with twice the step), M(t)^{-1} per node by its eigendecomposition,
and K compressed to its numerical rank by the same randomized range finder. G' is positive
definite exactly when M(0) has as many negative eigenvalues as pixels leave (Haynsworth inertia
additivity); its smallest eigenvalue (by power iteration on (G')^{-1}, diagonal plus rank r in the
eigenbasis of G) sets the quadrature's lower end and the condition reported.

Measured against exact solves on the new set (127 x 9 MaNGA channels, condition 6e3, 1-8 pixels
changed): W within 3e-11 to 1.4e-10 relative, 18-99 ms against ~350 ms for a solve
(docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from crrxr.core.sample_removal import STEP, GramFactor, compressed_range, log_nodes

#: Power iterations for the smallest eigenvalue of G' (its estimate only sets the quadrature's lower
#: end, with a factor POWER_MARGIN to spare, and the condition reported).
POWER_STEPS = 60
POWER_MARGIN = 4.0
#: Quadrature range beyond the spectrum, in e-folds of t. Above it the integrand falls as t^-3
#: (M(t) -> C), so the tail is ~exp(-3 TAIL); below it the integrand is flat and its sum is added
#: in closed form, leaving ~exp(-2 TAIL) relative to that sum.
TAIL = 10.0
#: Relative cut on the eigenvalues of K, and on the singular values of the quadrature's factor
#: (the range of K kept); rank expected per changed pixel at that cut (the sketch grows when the
#: spectrum shows more). W comes out within ~1e-10 relative of the exact solve on the new set
#: (127 x 9 MaNGA channels, 1-8 pixels changed); cuts of 1e-9 / 1e-5 left errors of up to 8e-6
#: (K's leading eigenvalues largely cancel against G^{-1/2}), so these stay strict.
KEEP_RTOL = 1e-11
RANGE_RTOL = 1e-7
RANK_PER_PIXEL = 40


@dataclass(frozen=True)
class PixelChange:
    """Weights (n_new, m) on the new pixel set (rows in the new set's order, columns the factor's
    samples); error: the quadrature's estimated relative error; condition: sqrt of the estimated
    largest over smallest eigenvalue of G' (the code variant's effective condition)."""

    weights: np.ndarray
    error: float
    condition: float


def _smallest_eigenvalue(w: np.ndarray, Zw: np.ndarray, S0: np.ndarray) -> float:
    """Smallest eigenvalue of G' from power iteration on (G')^{-1} = diag(1/w) - Zw S0^{-1} Zw^T
    (eigen-coordinates of G; Zw = diag(1/w) E^T Z)."""
    inv_w = 1.0 / w
    S0_inv = np.linalg.inv(S0)
    x = np.ones(w.size) / np.sqrt(w.size)
    mu = 0.0
    for _ in range(POWER_STEPS):
        y = inv_w * x - Zw @ (S0_inv @ (Zw.T @ x))
        mu = float(np.linalg.norm(y))
        if not np.isfinite(mu) or mu <= 0:
            return 0.0
        x = y / mu
    return 1.0 / mu


def change_pixels(
    factor: GramFactor,
    W: np.ndarray,
    A_new: sparse.csr_matrix,
    old: np.ndarray,
    floor: float = 1e-6,
) -> PixelChange | None:
    """The factor's solve moved to another pixel set.

    factor: the exact solve on the old set (its A (m, n_old)); W (n_old, m) its weights;
    A_new (m, n_new) the kernel matrix of the same samples, positions and seeing over the new set;
    old (n_new,) each new pixel's column in the old set, -1 for a pixel that enters; floor: the
    solve's singular-value floor. Returns None where the update does not apply: G' not positive
    definite, or its smallest eigenvalue within POWER_MARGIN of where the exact solve would drop a
    mode (below floor^2, or within rounding of 0).
    """
    A, w, E, s, lam = factor.A, factor.w, factor.E, factor.s, factor.lam
    m = w.size
    old = np.asarray(old, dtype=np.intp)
    kept = old >= 0
    added = np.flatnonzero(~kept)
    removed = np.setdiff1d(np.arange(A.shape[1]), old[kept])
    A_new = sparse.csr_matrix(A_new)
    Z = np.hstack([A_new[:, added].toarray(), A[:, removed].toarray()])
    C = np.concatenate([np.ones(added.size), -np.ones(removed.size)])
    r = C.size
    Zh = E.T @ Z  # (m, r) in eigen-coordinates
    Zw = Zh / w[:, None]
    S0 = np.diag(C) + Zh.T @ Zw  # M(0)
    if r and np.count_nonzero(np.linalg.eigvalsh(S0) < 0) != removed.size:
        return None  # G' is not positive definite
    w_min = _smallest_eigenvalue(w, Zw, S0) if r else float(w[0])
    w_max = float(w[-1]) + float(np.square(Z[:, : added.size]).sum())  # Weyl
    if not w_min > POWER_MARGIN * max(floor * floor, 16.0 * np.finfo(float).eps * w_max):
        return None
    phi = 1.0 / np.sqrt(w)

    if r:
        u = log_nodes(min(float(w[0]), w_min) / POWER_MARGIN, w_max, STEP, TAIL)
        F = Zh[None, :, :] / (w[None, :, None] + np.exp(2.0 * u)[:, None, None])  # (N, m, r)
        M = np.transpose(Zh[None, :, :], (0, 2, 1)) @ F  # (N, r, r)
        M += np.diag(C)[None]
        # below the first node the integrand is flat in t: the rule's missing nodes sum to
        # h e^u0 / (e^h - 1) times its t = 0 value, F(0) M(0)^{-1} F(0)^T
        F = np.concatenate([Zw[None], F])
        M = np.concatenate([S0[None], M])
        weight = np.exp(u)
        weight = np.concatenate([[weight[0] / np.expm1(STEP)], weight])
        lam_m, Q_m = np.linalg.eigh(M)
        Y = (F @ Q_m) / np.sqrt(np.abs(lam_m))[:, None, :]  # (N + 1, m, r)
        Y *= np.sqrt(2.0 / np.pi * STEP * weight)[:, None, None]  # dt = t du
        sign = np.sign(lam_m)  # (N + 1, r)
        Y3 = np.ascontiguousarray(np.transpose(Y, (1, 0, 2)))  # (m, N + 1, r)
        Y, sign = Y3.reshape(m, -1), sign.ravel()
        Q, B, _, _ = compressed_range(Y, r, RANGE_RTOL, RANK_PER_PIXEL)
        lam_k, V = np.linalg.eigh((B * sign) @ B.T)
        keep = np.abs(lam_k) > KEEP_RTOL * np.abs(lam_k).max(initial=0.0)
        Qe, lam_k = Q @ V[:, keep], lam_k[keep]  # K = Qe diag(lam_k) Qe^T
    else:
        Y3, Y, sign = np.zeros((m, 0, 0)), np.zeros((m, 0)), np.zeros(0)
        Qe, lam_k = np.zeros((m, 0)), np.zeros(0)

    def inv_sqrt(z: np.ndarray) -> np.ndarray:  # (G')^{-1/2} z in eigen-coordinates
        return phi * z - Qe @ (lam_k * (Qe.T @ z))

    n_new = A_new.shape[1]
    v_hat = E.T @ np.asarray(A_new @ np.ones(n_new)).ravel()
    a = v_hat / w
    inv_v = a - Zw @ np.linalg.solve(S0, Zw.T @ v_hat) if r else a  # (G')^{-1} v
    z = E @ (inv_sqrt(v_hat) + lam * lam * inv_sqrt(inv_v))
    s_new = np.asarray(A_new.T @ z).ravel()
    ok = np.isfinite(s_new) & (s_new != 0)
    scale = np.zeros(n_new)
    scale[ok] = 1.0 / s_new[ok]
    # A_new^T G^{-1/2}: kept pixels' rows are s W of the old solve, the others from E directly
    rows = np.where(kept, old, 0)
    direct = ~kept | (s[rows] == 0)
    H = W[rows]  # a gather of whole rows, then fixed where direct
    H *= s[rows][:, None]
    if direct.any():
        H[direct] = ((A_new[:, np.flatnonzero(direct)].T @ E) * phi) @ E.T
    T = E @ Qe  # (m, q)
    H -= (np.asarray(A_new.T @ T) * lam_k) @ T.T
    H *= scale[:, None]
    # quadrature error on (G')^{-1/2} v: rules h and 2h (every other node, twice the weight)
    if r:
        # the regular nodes only (the t -> 0 sum is the same under both rules to O(h))
        Yr, sr = Y3[:, 1:, :], sign.reshape(-1, r)[1:]
        Y2, s2 = Yr[:, ::2, :].reshape(m, -1) * np.sqrt(2.0), sr[::2].ravel()
        Yr, sr = Yr.reshape(m, -1), sr.ravel()
        diff = Yr @ (sr * (Yr.T @ v_hat)) - Y2 @ (s2 * (Y2.T @ v_hat))
        base = inv_sqrt(v_hat)
        rel = float(np.linalg.norm(diff) / max(float(np.linalg.norm(base)), np.finfo(float).tiny))
    else:
        rel = 0.0
    return PixelChange(np.ascontiguousarray(H), rel * rel, float(np.sqrt(w_max / w_min)))
