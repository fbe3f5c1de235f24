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

Paper variant, pixel-side route (more samples than pixels: lenslets). With H = A^T A =
E diag(w) E^T over the r kept modes, U = A E diag(1/S) and g(x) = x^{1/2} / (x + lam^2),

    W = diag(1/s) g(H) A^T = diag(1/s) A^T U diag(g(w)) U^T,   s = H^{1/2} 1,

so W is a function of the sample-side G = A A^T, which the change moves by G' = G + Z C Z^T as
above. G has a null space here (rank r < m), so everything is written in the basis B = [U, Q] of
span(G'), Q the directions of the entering columns' part outside span(U) whose singular values
reach the floor (the others would make modes an exact solve drops, so they are dropped too):
G' = B M' B^T with M' = diag(w, 0) + Y C Y^T, Y = B^T Z, and

    W' = diag(1/s') A'^T B g(M') B^T,   s' = A'^T B M'^{+1/2} B^T A' 1,
    g(M') = (M' + lam^2)^{-1} M'^{1/2},

the first factor by Woodbury at t = lam, M'^{1/2} = diag(S, 0) + (2/pi) int t^2 R Y N^{-1} Y^T R dt
(N(t) = C + Y^T R(t) Y) and M'^{+1/2} A'1 by the resolvent integral, both by the same trapezoidal
rule (tails in closed form) and the first compressed as above. Leaving pixels give M' a null
space, null(A'^T B): the rows A'^T B annihilate it, so in this order the errors of M'^{1/2} there,
which (M' + lam^2)^{-1} amplifies by 1 / lam^2, never reach W. The capacitance's leaving block
-I + E_L diag(w / (w + t^2)) E_L^T is written without its cancellation as t -> 0. The node's
dropped modes (below the floor) make its solve the exact one of A_r = U diag(S) E^T, and the move
the exact solve of A_r with the columns changed, every mode kept: an exact solve on the new set
keeps or drops its modes near the floor by their own values, so the two differ by about the weight
of such modes, c(floor) = floor^2 / (floor^2 + lam^2), or more (``floor_share``, FLOOR_SPREAD
floor / lam, from measurements; :mod:`crrxr.core.reuse` adds it to the bounds of the channels it
serves). Measured on 2400-lenslet channels (2158 pixels, 1-5 pixels changed): 0.06-0.27 s against
2.0-2.5 s for a solve; W within ~1e-11 of the exact solve where no mode is near the floor (tests),
and within 0.0072 floor / lam of max|W| at floors 1e-7 to 3e-6 (at 1e-6: 2.0e-5 sigma in flux and
2.9e-7 in variance over the pixels the cube keeps; docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, sparse

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
#: A paper-variant move's floor share over floor / lam: W differed from exact solves on the new set
#: by up to 4.3e-7, 7.2e-6 and 3.6e-6 of max|W| on 2400-lenslet channels at floors 1e-7, 1e-6 and
#: 3e-6 with lam 1e-3, i.e. up to 0.0072 floor / lam (the weight of a mode at the floor,
#: c(floor) = floor^2 / (floor^2 + lam^2), did not follow: 43 c(floor) at 1e-7). An empirical
#: model for floors far below lam only: on the tests' 109-lenslet array at floors of 8e-3 it was
#: exceeded 1.2-8x, and :data:`crrxr.core.reuse.FLOOR_SHARE_MAX` refuses such moves.
FLOOR_SPREAD = 0.01


@dataclass(frozen=True)
class PixelChange:
    """Weights (n_new, m) on the new pixel set (rows in the new set's order, columns the factor's
    samples); error: the quadrature's estimated relative error; condition: the effective condition
    of the new solve (code variant: sqrt of the estimated largest over smallest eigenvalue of G');
    floor_share: for the paper variant, where modes near the singular-value floor exist (the node
    dropped some, or the new set may have some), FLOOR_SPREAD floor / lam: the exact solve on the
    new set keeps or drops them by their own values, so W may differ from it by up to about that
    share of max|W| (measured, docs/benchmarks.md); else 0."""

    weights: np.ndarray
    error: float
    condition: float
    floor_share: float = 0.0


def _power_smallest(apply_inverse, size: int) -> float:
    """Smallest eigenvalue of a symmetric positive definite matrix from POWER_STEPS of power
    iteration on its inverse (``apply_inverse``: x -> M^{-1} x); 0 where that breaks down."""
    x = np.ones(size) / np.sqrt(size)
    mu = 0.0
    for _ in range(POWER_STEPS):
        y = apply_inverse(x)
        mu = float(np.linalg.norm(y))
        if not np.isfinite(mu) or mu <= 0:
            return 0.0
        x = y / mu
    return 1.0 / mu


def _smallest_eigenvalue(w: np.ndarray, Zw: np.ndarray, S0: np.ndarray) -> float:
    """Smallest eigenvalue of G' from power iteration on (G')^{-1} = diag(1/w) - Zw S0^{-1} Zw^T
    (eigen-coordinates of G; Zw = diag(1/w) E^T Z)."""
    inv_w = 1.0 / w
    S0_inv = np.linalg.inv(S0)
    return _power_smallest(lambda x: inv_w * x - Zw @ (S0_inv @ (Zw.T @ x)), w.size)


def change_pixels(
    factor: GramFactor,
    W: np.ndarray,
    A_new: sparse.csr_matrix,
    old: np.ndarray,
    floor: float = 1e-6,
) -> PixelChange | None:
    """The factor's solve moved to another pixel set.

    factor: the exact solve on the old set (its A (m, n_old)): the code variant's sample-side
    factor or the paper variant's pixel-side one; W (n_old, m) its weights; A_new (m, n_new) the
    kernel matrix of the same samples, positions and seeing over the new set; old (n_new,) each new
    pixel's column in the old set, -1 for a pixel that enters; floor: the solve's singular-value
    floor. Returns None where the update does not apply: for the code variant, G' not positive
    definite or the new solve close to dropping a mode (smallest eigenvalue of G' within
    POWER_MARGIN of the floor squared or of rounding); for the paper variant, the smallest
    eigenvalue with the entering pixels within POWER_MARGIN of rounding (modes near the floor carry
    c(floor) of W there: reported as ``floor_share`` instead).
    """
    if factor.side == "pixel":
        return _move_pixel_side(factor, W, A_new, old, floor)
    return _move_sample_side(factor, W, A_new, old, floor)


def _move_sample_side(
    factor: GramFactor,
    W: np.ndarray,
    A_new: sparse.csr_matrix,
    old: np.ndarray,
    floor: float = 1e-6,
) -> PixelChange | None:
    """:func:`change_pixels` for the code variant's sample-side factor (module docstring)."""
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


def _entering_floor(w: np.ndarray, Up: np.ndarray, Yb: np.ndarray) -> float:
    """Smallest eigenvalue of M_u = diag(w, 0) + [Up; Yb] [Up; Yb]^T (r + q square: the old set
    plus the entering pixels, in the basis B; a lower bound on the nonzero ones of M' by
    interlacing, H' being a principal submatrix of H_u), by power iteration on M_u^{-1}: the
    Schur complement of T = diag(w) + Up Up^T is Yb K^{-1} Yb^T with K = I + Up^T diag(1/w) Up."""
    if Yb.shape[0] == 0:
        return float(w[0])  # diag(w) + Up Up^T: no eigenvalue below w's
    Uw = Up / w[:, None]
    K = np.eye(Up.shape[1]) + Up.T @ Uw

    def t_inv(v: np.ndarray) -> np.ndarray:
        return v / w - Uw @ np.linalg.solve(K, Up.T @ (v / w))

    try:
        sc = linalg.cho_factor(Yb @ np.linalg.solve(K, Yb.T))
    except np.linalg.LinAlgError:
        return 0.0
    r = w.size

    def solve(y: np.ndarray) -> np.ndarray:
        x2 = linalg.cho_solve(sc, y[r:] - Yb @ (Up.T @ t_inv(y[:r])))
        return np.concatenate([t_inv(y[:r] - Up @ (Yb.T @ x2)), x2])

    return _power_smallest(solve, r + Yb.shape[0])


def _move_pixel_side(
    factor: GramFactor,
    W: np.ndarray,
    A_new: sparse.csr_matrix,
    old: np.ndarray,
    floor: float,
) -> PixelChange | None:
    """:func:`change_pixels` for the paper variant's pixel-side factor (module docstring, "Paper
    variant"): everything in the basis B = [U, Q] of span(G') (d = r + k_+ columns)."""
    A, w, s, lam = factor.A, factor.w, factor.s, factor.lam
    m, n = A.shape
    r = w.size  # kept modes; the node's solve is the exact one of A_r = U diag(S) E^T
    E, E_drop = factor.E[:, n - r :], factor.E[:, : n - r]
    lam2 = lam * lam
    old = np.asarray(old, dtype=np.intp)
    kept = old >= 0
    added = np.flatnonzero(~kept)
    removed = np.setdiff1d(np.arange(n), old[kept])
    ka, kr = added.size, removed.size
    k = ka + kr
    A_new = sparse.csr_matrix(A_new)
    S = np.sqrt(w)
    # entering kernel columns: their part in span(U) (U = A E / S), and the rest
    Zp = A_new[:, added].toarray()
    Up = (E.T @ np.asarray(A.T @ Zp)) / S[:, None]  # (r, ka)
    P = Zp - np.asarray(A @ (E @ (Up / S[:, None])))
    P -= np.asarray(A @ (E @ ((E.T @ np.asarray(A.T @ P)) / w[:, None])))  # twice is enough
    # directions below the floor are dropped, as an exact solve drops the modes they would make
    Qs, sv, Vt = np.linalg.svd(P, full_matrices=False)
    new_dir = sv >= floor
    Qp, Yb = Qs[:, new_dir], sv[new_dir, None] * Vt[new_dir]  # (m, q), B^T Z_+ below U: (q, ka)
    EL = E[removed]  # (kr, r): a leaving pixel's column of A_r is U diag(S) E^T e_j
    Um = S[:, None] * EL.T
    EL_drop = E_drop[removed]
    mu_lb = _entering_floor(w, Up, Yb)
    w_max = float(w[-1]) + float(np.square(Zp).sum())  # Weyl
    if not mu_lb > POWER_MARGIN * 16.0 * np.finfo(float).eps * w_max:
        return None  # an entering pixel's own direction is lost in rounding
    condition = float(np.sqrt((w_max + lam2) / (mu_lb + lam2)))
    # modes near the floor: the exact solve on the new set keeps or drops them by their own
    # values, this update by the node's; they carry c(floor) = floor^2 / (floor^2 + lam^2) of W
    near_floor = r < n or not new_dir.all() or mu_lb <= POWER_MARGIN * floor * floor
    floor_share = FLOOR_SPREAD * floor / lam if near_floor and lam > 0 else 0.0
    rows_old = old[kept]
    if k == 0:
        return PixelChange(np.ascontiguousarray(W[old]), 0.0, condition, floor_share)

    q = Yb.shape[0]
    d = r + q
    d0 = np.concatenate([w, np.zeros(q)])
    Y = np.zeros((d, k))
    Y[:r, :ka], Y[:r, ka:], Y[r:, :ka] = Up, Um, Yb
    C = np.concatenate([np.ones(ka), -np.ones(kr)])

    def capacitance(t2: np.ndarray, RY: np.ndarray) -> np.ndarray:
        """N(t) = C + Y^T R(t) Y for each t^2 (N,), RY = R(t) Y (N, d, k); its leaving block
        -I + E_L diag(w / (w + t^2)) E_L^T = -E_L,drop E_L,drop^T - t^2 E_L diag(1 / (w + t^2))
        E_L^T written without the cancellation (the full E is orthogonal)."""
        Nt = np.transpose(Y[None], (0, 2, 1)) @ RY
        Nt += np.diag(C)[None]
        if kr:
            EL_t = EL[None] / (w[None, None, :] + t2[:, None, None])
            Nt[:, ka:, ka:] = -t2[:, None, None] * (EL_t @ EL.T) - (EL_drop @ EL_drop.T)[None]
        return Nt

    # M'^{1/2} - M^{1/2} = (2/pi) int t^2 R Y N^{-1} Y^T R dt and M'^{+1/2} t~ = (2/pi) int R' t~ dt
    u = log_nodes(min(float(w[0]), mu_lb) / POWER_MARGIN, w_max, STEP, TAIL)
    t2 = np.exp(2.0 * u)
    RY = Y[None] / (d0[None, :, None] + t2[:, None, None])  # (N, d, k)
    Nt = capacitance(t2, RY)
    lam_n, Q_n = np.linalg.eigh(Nt)
    if not np.all(np.abs(lam_n) > 0):
        return None
    cols = (RY @ Q_n) / np.sqrt(np.abs(lam_n))[:, None, :]
    cols *= np.sqrt(2.0 / np.pi * STEP * np.exp(3.0 * u))[:, None, None]  # t^2 dt = t^3 du
    sign = np.sign(lam_n)
    # tails: below the first node the integrands are flat in t (their sum is the first node's term
    # over e^h - 1); above the last, t^2 R Y N^{-1} Y^T R -> Y C Y^T / t^2 and R' t~ -> t~ / t^2
    low, high = 1.0 / np.expm1(STEP), STEP * np.exp(-u[-1]) / np.expm1(STEP)
    cols = np.concatenate([cols, cols[:1] * np.sqrt(low), (Y * np.sqrt(2.0 / np.pi * high))[None]])
    sign = np.concatenate([sign, sign[:1], C[None]])
    cols3 = np.ascontiguousarray(np.transpose(cols, (1, 0, 2)))  # (d, N + 2, k)
    Ysk, sgn = cols3.reshape(d, -1), sign.ravel()
    Qr, B, _, _ = compressed_range(Ysk, k, RANGE_RTOL, RANK_PER_PIXEL)
    lam_k, V = np.linalg.eigh((B * sgn) @ B.T)
    keep = np.abs(lam_k) > KEEP_RTOL * np.abs(lam_k).max(initial=0.0)
    Qe, lam_k = Qr @ V[:, keep], lam_k[keep]  # M'^{1/2} = diag(S, 0) + Qe diag(lam_k) Qe^T

    # t~ = B^T A' 1 in B's coordinates, and M'^{+1/2} t~ by the same rule
    tt = np.concatenate([S * E.sum(axis=0) + Up.sum(axis=1) - Um.sum(axis=1), Yb.sum(axis=1)])
    Rt = tt[None] / (d0[None] + t2[:, None])  # (N, d)
    coef = np.linalg.solve(Nt, np.einsum("ndk,d->nk", RY, tt)[..., None])[..., 0]
    terms = Rt - np.einsum("ndk,nk->nd", RY, coef)  # R'(t) t~ at each node
    terms *= (2.0 / np.pi * STEP * np.exp(u))[:, None]  # dt = t du
    x_s = terms.sum(axis=0) + low * terms[0] + (2.0 / np.pi * high) * tt
    # quadrature error: rules h and 2h (every other node, twice the weight), regular nodes only
    x_2 = 2.0 * terms[::2].sum(axis=0)
    rel_s = float(np.linalg.norm(terms.sum(axis=0) - x_2) / np.linalg.norm(x_s))
    Yr, sr = cols3[:, :-2, :], sign[:-2]
    Y2, s2 = Yr[:, ::2, :].reshape(d, -1) * np.sqrt(2.0), sr[::2].ravel()
    Yr, sr = Yr.reshape(d, -1), sr.ravel()
    base = np.concatenate([S * tt[:r], np.zeros(q)])
    diff = Yr @ (sr * (Yr.T @ tt)) - Y2 @ (s2 * (Y2.T @ tt))
    rel_h = float(np.linalg.norm(diff) / max(float(np.linalg.norm(base)), np.finfo(float).tiny))

    def rows_of(X: np.ndarray) -> np.ndarray:
        """A'^T B X (n_new, c): rows of the new set, kept pixels E[o] S X_top (A^T Q = 0)."""
        out = np.empty((old.size, X.shape[1]))
        out[kept] = E[rows_old] @ (S[:, None] * X[:r])
        out[~kept] = Up.T @ X[:r] + Yb.T @ X[r:]
        return out

    def samples_of(X: np.ndarray) -> np.ndarray:
        """B X (m, c) = A E diag(1/S) X_top + Q X_bot."""
        return np.asarray(A @ (E @ (X[:r] / S[:, None]))) + Qp @ X[r:]

    s_new = rows_of(x_s[:, None])[:, 0]
    ok = np.isfinite(s_new) & (s_new != 0)
    scale = np.zeros(old.size)
    scale[ok] = 1.0 / s_new[ok]

    # g(M') = (M' + lam^2)^{-1} M'^{1/2}, Woodbury at t = lam for the first factor. In this order
    # the errors of M'^{1/2} along null(M') (leaving pixels), which (M' + lam^2)^{-1} amplifies by
    # 1 / lam^2, land in null(M') = null(A'^T B), which the rows A'^T B annihilate
    r_lam = 1.0 / (d0 + lam2)
    Fl = Y * r_lam[:, None]
    Nl_inv = np.linalg.inv(capacitance(np.array([lam2]), Fl[None])[0])
    RQ = Qe * r_lam[:, None] - Fl @ (Nl_inv @ (Fl.T @ Qe))  # (M' + lam^2)^{-1} Qe
    sqrt_d0 = np.concatenate([S, np.zeros(q)])
    left = rows_of(np.hstack([Fl, RQ]))
    left[:, :k] = -left[:, :k] @ Nl_inv
    left[:, k:] *= lam_k
    right = samples_of(np.hstack([sqrt_d0[:, None] * Fl, Qe]))
    # A'^T B g(diag(w, 0)) B^T: kept rows are s W of the old solve, entering ones from U
    H = W[np.where(kept, old, 0)]
    H *= s[np.where(kept, old, 0)][:, None]
    direct = ~kept
    direct[kept] = s[rows_old] == 0
    if direct.any():
        idx = np.flatnonzero(direct)
        top = np.empty((r, idx.size))  # B^T A' e_i, its span(U) part (the rest is not in g0)
        ent = ~kept[idx]
        top[:, ent] = Up[:, np.searchsorted(added, idx[ent])]
        top[:, ~ent] = S[:, None] * E[old[idx[~ent]]].T
        H[idx] = np.asarray(A @ (E @ (top / (w + lam2)[:, None]))).T
    H += left @ right.T
    H *= scale[:, None]
    err = max(rel_s, rel_h)
    return PixelChange(np.ascontiguousarray(H), err * err, condition, floor_share)
