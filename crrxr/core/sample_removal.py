"""CRR weights with a few more samples masked, from the exact solve of the same channel without
that mask: a low-rank update instead of a new eigendecomposition (issue #14, masked samples).

The code variant's sample-side gram route (:mod:`crrxr.core.crr`) gives, for the kernel matrix A
(m good samples x n pixels) and G = A A^T = E diag(w) E^T,

    W = diag(1/s) A^T G^{-1/2},   s = A^T (G^{-1/2} + lam^2 G^{-3/2}) A 1.

Masking the samples J keeps the rows K of A and the principal submatrix G_KK. With the resolvent
R(t) = (G + t^2)^{-1} = E diag(1 / (w + t^2)) E^T, the block-inverse formula and
x^{-1/2} = (2/pi) int_0^inf dt / (x + t^2) give exactly

    (G_KK)^{-1/2} = [G^{-1/2}]_KK - E_K Y Y^T E_K^T,
    Y Y^T = (2/pi) int_0^inf F(t) R_JJ(t)^{-1} F(t)^T dt,   F(t) = diag(1 / (w + t^2)) E_J^T,

a correction of rank k = |J| per quadrature node in the eigenbasis of G, and
(G_KK)^{-1} = [G^{-1}]_KK - [G^{-1}]_KJ ([G^{-1}]_JJ)^{-1} [G^{-1}]_JK for s. The integral is taken
by the trapezoidal rule in u = log t: the integrand is analytic in the strip |Im u| < pi/2 (its
poles sit at t^2 = -w and t^2 = -(eigenvalues of G_KK)), so the error falls as exp(-pi^2 / h); the
tails beyond ``TAIL`` e-folds of the spectrum contribute ~exp(-TAIL). Eigenvalues of G_KK interlace
with those of G (none smaller than min w), so the update is used only where no mode was dropped
and the removed solve would itself keep every mode. The quadrature's error is estimated by its
difference from the rule with twice the step, squared (the rule's error is about the square of the
coarser one's; at coarse steps the estimate exceeded the actual error 10-1000x); the rank of Y is
cut where its singular values fall below 1e-7 of the largest (Y Y^T to 1e-14).

Measured against exact solves without the samples (127 x 9 MaNGA channels, condition 3.7e3-1.1e4,
1-6 samples removed): largest relative error of W 1e-11 to 3e-10 (the exact solve's own estimate:
3e-9 to 2.5e-8); ~9 ms for one sample and ~25 ms for three, against ~300 ms for the exact solve
(docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

#: Step of the trapezoidal rule in log t (error ~exp(-pi^2 / STEP)).
STEP = 0.3
#: Quadrature range beyond the spectrum, in e-folds of t at each end (tail ~exp(-TAIL)).
TAIL = 24.0
#: Relative cut on the singular values of Y (Y Y^T kept to its square, 1e-14: below the gram
#: route's own error).
RANK_RTOL = 1e-7
#: Rank expected per removed sample at RANK_RTOL (measured ~30 on MaNGA channels); the sketch
#: grows when the spectrum shows more.
RANK_PER_SAMPLE = 40


@dataclass(frozen=True)
class GramFactor:
    """What a gram solve leaves behind for low-rank updates of its weights.

    side "sample" (code variant, sample-side route): A (m, n) CSR kernel matrix of the good samples
    (arcsec^2-weighted kernel, pixel_scale^2 included); w (m,) ascending eigenvalues of G = A A^T,
    all kept; E (m, m) its eigenvectors; s (n,) the row sums of Q (W = diag(1/s) A^T G^{-1/2}).
    side "pixel" (paper variant, pixel-side route, m > n; modes below the floor may have been
    dropped, the rank may be in doubt): w (r,) the kept eigenvalues of H = A^T A (ascending), E
    (n, n) all its eigenvectors (the kept ones last; the modes below
    :data:`crrxr.core.crr.ONE_SIDED_RTOL` w_max from the SVD of A E over them), s (n,) =
    H_r^{1/2} 1 with H_r the kept modes' part (W = diag(1/s) g(H_r) A^T, g(x) = x^{1/2} /
    (x + lam^2)). lam: the regularization. Only the sample side supports :func:`remove_samples`;
    both support :func:`crrxr.core.pixel_update.change_pixels`.
    """

    A: sparse.csr_matrix
    w: np.ndarray
    E: np.ndarray
    s: np.ndarray
    lam: float
    side: str = "sample"


def log_nodes(w_min: float, w_max: float, step: float = STEP, tail: float = TAIL) -> np.ndarray:
    """Nodes u = log t of the trapezoidal rule for int_0^inf dt / (x + t^2) over the spectrum
    [w_min, w_max] of x, ``tail`` e-folds beyond it at each end."""
    return np.arange(0.5 * np.log(w_min) - tail, 0.5 * np.log(w_max) + tail + step / 2, step)


def _correction(E_J: np.ndarray, w: np.ndarray, step: float) -> np.ndarray:
    """Y (m, N k) with Y Y^T the quadrature of (2/pi) int F R_JJ^{-1} F^T dt (module docstring)."""
    u = log_nodes(float(w[0]), float(w[-1]), step)
    F = E_J.T[None, :, :] / (w[None, :, None] + np.exp(2.0 * u)[:, None, None])  # (N, m, k)
    R = E_J[None, :, :] @ F  # (N, k, k), R_JJ(t): positive definite
    inv_l = np.linalg.inv(np.linalg.cholesky(R))  # (N, k, k)
    Yt = inv_l @ np.transpose(F, (0, 2, 1))  # (N, k, m): L^{-1} F^T
    Yt *= np.sqrt(2.0 / np.pi * step * np.exp(u))[:, None, None]  # dt = t du
    return Yt.reshape(-1, w.size).T


def compressed_range(
    Y: np.ndarray, k: int, rtol: float = RANK_RTOL, per: int = RANK_PER_SAMPLE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(Q, B, lam, V): Q (m, p) orthonormal with Y Y^T = Q (B B^T) Q^T to ~rtol^2 of its norm,
    B = Q^T Y, and the eigendecomposition B B^T = V diag(lam) V^T (ascending). p starts at
    per * k + 8 (k: the update's rank) and doubles while the sketch shows rank beyond it: a
    randomized range finder with a fixed seed, so the result is reproducible."""
    m, cols = Y.shape
    p = min(per * k + 8, cols, m)
    rng = np.random.default_rng(0)
    while True:
        Q = np.linalg.qr(Y @ rng.standard_normal((cols, p)))[0]  # (m, p): range of Y
        B = Q.T @ Y  # (p, cols)
        lam, V = np.linalg.eigh(B @ B.T)
        if p >= min(cols, m) or lam[0] <= rtol**2 * lam[-1]:
            return Q, B, lam, V
        p = min(2 * p, cols, m)


def _compress(Y: np.ndarray, k: int) -> np.ndarray:
    """Z (m, r) with Z Z^T = Y Y^T to ~RANK_RTOL^2 of its norm (:func:`compressed_range`)."""
    Q, _, lam, V = compressed_range(Y, k)
    keep = lam > RANK_RTOL**2 * lam[-1]
    return Q @ (V[:, keep] * np.sqrt(lam[keep]))


@dataclass(frozen=True)
class Removal:
    """W'' = diag(rowscale) W - U V: the weights without the samples ``drop``, as an update of the
    factor's own W (n, m), kept factored so that callers form only the rows they need.

    rowscale (n,); U (n, q); V (q, m); drop (k,) positions of the removed samples, whose columns
    of W'' are zero (:meth:`rows` zeroes them; products may instead zero the data at ``drop``);
    error: the quadrature's estimated relative error (:func:`remove_samples`).
    """

    rowscale: np.ndarray
    U: np.ndarray
    V: np.ndarray
    drop: np.ndarray
    error: float

    def rows(self, W: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows ``lo:hi`` of W'' (the columns ``drop`` zero), given the factor's W."""
        hi = W.shape[0] if hi is None else hi
        out = W[lo:hi] * self.rowscale[lo:hi, None]
        out -= self.U[lo:hi] @ self.V
        out[:, self.drop] = 0.0
        return out


def remove_samples(factor: GramFactor, drop: np.ndarray) -> Removal:
    """The factor's weights without its good samples ``drop`` ((k,) distinct positions in 0..m-1).

    The estimated relative error is the difference between the rules with steps h and 2h,
    squared: the rule converges as exp(-pi^2 / h), so its error is about the square of the coarser
    rule's (relative); the exact solve's own error aside.
    """
    if factor.side != "sample":
        raise ValueError("remove_samples needs a sample-side factor (code variant)")
    A, w, E, s, lam = factor.A, factor.w, factor.E, factor.s, factor.lam
    m, n = A.shape
    drop = np.asarray(drop, dtype=np.intp)
    k = drop.size
    E_J = E[drop]
    Y = _correction(E_J, w, STEP)
    Yc = _compress(Y, k)
    phi = 1.0 / np.sqrt(w)
    inv_w = 1.0 / w

    # Vectors are handled in eigen-coordinates x^ = E^T x; a sample-space vector zero on J stays
    # so under z^ -> z^ - E_J^T (E_J z^) (the projector on K), and E_K^T z_K = E^T z.
    def off_j(z: np.ndarray) -> np.ndarray:
        return z - E_J.T @ (E_J @ z)

    def inv_sqrt(z: np.ndarray) -> np.ndarray:  # (G_KK)^{-1/2} z, both zero on J
        return off_j(phi * z) - off_j(Yc @ (Yc.T @ z))

    v = np.asarray(A @ np.ones(n)).ravel()
    v[drop] = 0.0
    v_hat = E.T @ v
    a = inv_w * v_hat  # G^{-1} v; then (G_KK)^{-1} v by the block inverse (Schur complement)
    coef = np.linalg.solve((E_J * inv_w) @ E_J.T, E_J @ a)
    inv_v = a - inv_w * (E_J.T @ coef)
    base = inv_sqrt(v_hat)
    z = E @ (base + lam * lam * inv_sqrt(inv_v))
    z[drop] = 0.0
    s_new = np.asarray(A.T @ z).ravel()
    ok = np.isfinite(s_new) & (s_new != 0)
    scale = np.zeros(n)
    scale[ok] = 1.0 / s_new[ok]
    # W'' = diag(scale) (diag(s) W - A_J^T [G^{-1/2}]_J,K - A_K^T E_K Y Y^T E_K^T)
    EY = E @ Yc  # (m, r): the correction's factor in sample space, E_K Y = EY[K]
    EY[drop] = 0.0
    phi_J = (E_J * phi) @ E.T  # [G^{-1/2}]_J,:  (k, m)
    phi_J[:, drop] = 0.0
    U = np.hstack([A[drop].toarray().T, np.asarray(A.T @ EY)]) * scale[:, None]
    V = np.vstack([phi_J, EY.T])
    # quadrature error on (G_KK)^{-1/2} v: rules h and 2h (every other node, twice the weight)
    Y2 = Y.reshape(m, -1, k)[:, ::2, :].reshape(m, -1) * np.sqrt(2.0)
    diff = off_j(Y @ (Y.T @ v_hat) - Y2 @ (Y2.T @ v_hat))
    rel = float(np.linalg.norm(diff) / max(float(np.linalg.norm(base)), np.finfo(float).tiny))
    return Removal(s * scale, U, V, drop, rel * rel)
