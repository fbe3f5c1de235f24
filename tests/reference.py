"""Independent references for the tests: the documented equations written out plainly.

Nothing here imports crrxr. Kernel (Liu et al. 2020 Eqs. 26-27 and the authors' code): a double
Gaussian seeing (sigma1 = FWHM / 2.355 / 1.05, sigma2 = 2 sigma1, the outer one 1/9 of the inner
one's flux) convolved with a top hat of radius r_fib, i.e. P(|Z + r| <= r_fib) / (pi r_fib^2) with
Z Gaussian: the Rice CDF (scipy.stats.rice). Seeing law FWHM(l) = FWHM(5400) (l / 5400)^-0.2. CRR:
SVD of N~ A, S* = S/(S^2+lam^2), Q, R (rows summing to 1), A+ and W = R A+ N~ (Eqs. 10-23), pixels
within 1.6" of any sample position, kernel zero beyond 4". Shepard: Gaussian weights sigma 0.7" out
to 1.6", normalised per pixel. Per-spaxel output = p^2 / (pi r_fib^2) x W f; ivar = 1 / diag(W N W^T)
/ factor^2.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def seeing(fwhm_ref, wavelength, lambda_ref: float = 5400.0, exponent: float = -0.2):
    """Seeing FWHM (arcsec) at ``wavelength`` (Angstrom)."""
    return np.asarray(fwhm_ref, float) * (np.asarray(wavelength, float) / lambda_ref) ** exponent


def kernel(r, fwhm: float, radius: float = 1.0) -> np.ndarray:
    """Double Gaussian x top hat at radii ``r`` (arcsec), arcsec^-2, unit integral."""
    r = np.asarray(r, float)
    s1 = fwhm / 2.355 / 1.05
    out = np.zeros_like(r)
    for frac, s in ((0.9, s1), (0.1, 2 * s1)):
        out = out + frac * stats.rice.cdf(radius / s, r / s)
    return out / (np.pi * radius**2)


def paper_weights(A: np.ndarray, good: np.ndarray, lam=1e-3, floor=1e-6, variant="code"):
    """W (n_pixels, n_samples) from Eqs. 10-23 literally; also the condition number of N~ A."""
    Nt = np.diag(np.asarray(good, float))
    U, S, Vt = np.linalg.svd(Nt @ A, full_matrices=False)
    k = S >= floor
    U, S, V = U[:, k], S[k], Vt[k].T
    a_plus = V @ np.diag(S / (S**2 + lam**2)) @ U.T
    q = (S**2 + lam**2) / S if variant == "code" else S
    Q = V @ np.diag(q) @ V.T
    R = np.zeros_like(Q)
    for j in range(Q.shape[0]):
        if Q[j].sum() != 0:
            R[j] = Q[j] / Q[j].sum()
    return R @ a_plus @ Nt, float(S[0] / S[-1])


def reconstruct_channel(
    x, y, fwhm, flux, ivar, good, px, py, pixel, method="crr", radius=1.0, lam=1e-3
):
    """One channel over the flat pixel centres (px, py): (image, ivar, solved, W, lowcov); ivar is 0
    where the spaxel is DONOTUSE (not solved, or LOWCOV)."""
    r = np.hypot(x[:, None] - px[None], y[:, None] - py[None])
    if method == "crr":
        solved = (r <= 1.6).any(axis=0)  # every sample position, usable or not
        rs = r[:, solved]
        A = np.stack([kernel(rs[i], fwhm[i], radius) for i in range(x.size)]) * pixel**2
        A[rs >= 4.0] = 0.0
        W = np.zeros((px.size, x.size))
        W[solved] = paper_weights(A, good, lam)[0]
    else:
        w = np.where(good[:, None] & (r < 1.6), np.exp(-0.5 * (r / 0.7) ** 2), 0.0)
        total = w.sum(axis=0)
        solved = total > 0
        W = (w / np.where(solved, total, 1.0)).T
    factor = pixel**2 / (np.pi * radius**2)
    var = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
    f = np.where(good, flux, 0.0)
    image = factor * W @ f
    v = (W**2) @ var
    iv = np.where(v > 0, 1.0 / np.where(v > 0, v, 1.0), 0.0) / factor**2
    # LOWCOV (Eq. 25): coverage diag(W N~ W^T) above 2 x the median of its nonzero solved values, or 0
    cover = (W**2) @ np.asarray(good, float)
    c = cover[solved]
    lowcov = np.zeros(px.size, bool)
    lowcov[solved] = (c == 0) | (c > 2.0 * np.median(c[c > 0]))
    iv[lowcov | ~solved] = 0.0  # documented policy: no ivar in DONOTUSE spaxels
    return image, iv, solved, W, lowcov
