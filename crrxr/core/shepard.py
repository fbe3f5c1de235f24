"""Shepard's method (MaNGA DRP standard; Liu et al. 2020 Eqs. 1-3).

W[j, i] = b_i exp(-r_ij^2 / (2 sigma^2)) / sum_k b_k exp(-r_kj^2 / (2 sigma^2)) for r_ij < rlim, with
b_i = 1 for usable samples and 0 otherwise. Rows of W sum to 1 over the usable samples within rlim;
pixels with none get an all-zero row.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def shepard_weights(
    r: np.ndarray, good: np.ndarray, sigma: float = 0.7, rlim: float = 1.6
) -> np.ndarray:
    """Dense Shepard weights ``W`` (n_pixels, n_samples) from distances ``r`` (n_samples, n_pixels), arcsec."""
    r = np.asarray(r, dtype=float)
    good = np.asarray(good, dtype=bool)
    if r.ndim != 2 or good.shape != (r.shape[0],):
        raise ValueError(
            f"r must be (n_samples, n_pixels) and good (n_samples,), got {r.shape} and {good.shape}"
        )
    _check_width(sigma, rlim)
    use = good[:, None] & np.isfinite(r) & (r < rlim)
    w = np.where(use, np.exp(-0.5 * (np.where(use, r, 0.0) / sigma) ** 2), 0.0)
    total = w.sum(axis=0)
    scale = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
    return (w * scale[None, :]).T


def shepard_weights_sparse(
    sample: np.ndarray,
    pixel: np.ndarray,
    dist: np.ndarray,
    good: np.ndarray,
    n_pixels: int,
    sigma: float = 0.7,
    rlim: float = 1.6,
) -> sparse.csr_matrix:
    """Sparse Shepard weights (n_pixels, n_samples) from neighbour pairs (sample, pixel, distance)."""
    good = np.asarray(good, dtype=bool)
    _check_width(sigma, rlim)
    keep = good[sample] & (dist < rlim)
    s, p, d = sample[keep], pixel[keep], dist[keep]
    w = np.exp(-0.5 * (d / sigma) ** 2)
    total = np.bincount(p, weights=w, minlength=n_pixels)
    w = w / total[p]
    return sparse.csr_matrix((w, (p, s)), shape=(n_pixels, good.size))


def _check_width(sigma: float, rlim: float) -> None:
    if not (np.isfinite(sigma) and sigma > 0 and np.isfinite(rlim) and rlim > 0):
        raise ValueError(
            f"Shepard sigma and rlim must be positive arcsec, got sigma={sigma!r}, rlim={rlim!r}"
        )
