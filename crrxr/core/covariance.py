"""Propagated covariance of a linear reconstruction G = W f (Liu et al. 2020 Eqs. 24-25).

C = W N W^T with N = diag(var) the real sample variances; the coverage is diag(W N~ W^T) with N~ the
0/1 mask of usable samples. ``W`` is (n_pixels, n_samples), dense or scipy sparse; ``var`` holds the
variance of each column (0 for samples that do not enter).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def propagated_variance(W: np.ndarray | sparse.spmatrix, var: np.ndarray) -> np.ndarray:
    """diag(W diag(var) W^T), shape (n_pixels,)."""
    var = np.asarray(var, dtype=float)
    if sparse.issparse(W):
        return np.asarray(W.multiply(W) @ var).ravel()
    return np.square(W) @ var


def coverage(W: np.ndarray | sparse.spmatrix, good: np.ndarray | None = None) -> np.ndarray:
    """diag(W N~ W^T), shape (n_pixels,); ``good`` (n_samples,) bool defaults to every column."""
    n = W.shape[1]
    g = np.ones(n) if good is None else np.asarray(good, dtype=float)
    return propagated_variance(W, g)


def ivar_from_variance(variance: np.ndarray) -> np.ndarray:
    """1 / variance where variance > 0 and finite, else 0."""
    variance = np.asarray(variance, dtype=float)
    out = np.zeros_like(variance)
    ok = np.isfinite(variance) & (variance > 0)
    out[ok] = 1.0 / variance[ok]
    return out


def pair_covariance(
    W: np.ndarray | sparse.spmatrix,
    var: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    batch: int = 4096,
) -> np.ndarray:
    """C_ij = sum_k W_ik var_k W_jk for the row pairs (i, j), shape (n_pairs,)."""
    i = np.asarray(i, dtype=np.intp)
    j = np.asarray(j, dtype=np.intp)
    var = np.asarray(var, dtype=float)
    if sparse.issparse(W):
        Wr = W.tocsr()
        Wv = Wr.multiply(var[None, :]).tocsr()
        return np.asarray(Wv[i].multiply(Wr[j]).sum(axis=1)).ravel()
    out = np.empty(i.size)
    Wv = W * var[None, :]
    for start in range(0, i.size, batch):
        sl = slice(start, start + batch)
        out[sl] = np.einsum("pk,pk->p", Wv[i[sl]], W[j[sl]])
    return out


def pair_correlation(
    W: np.ndarray | sparse.spmatrix, var: np.ndarray, i: np.ndarray, j: np.ndarray
) -> np.ndarray:
    """rho_ij = C_ij / sqrt(C_ii C_jj) for the row pairs (i, j); 0 where a variance is 0."""
    d = propagated_variance(W, var)
    c = pair_covariance(W, var, i, j)
    den = np.sqrt(d[np.asarray(i, dtype=np.intp)] * d[np.asarray(j, dtype=np.intp)])
    return np.divide(c, den, out=np.zeros_like(c), where=den > 0)


def correlation_matrix(
    W: np.ndarray | sparse.spmatrix, var: np.ndarray, tol: float = 0.0
) -> sparse.csr_matrix:
    """Full correlation matrix as a sparse upper triangle (diagonal included), entries |rho| > tol.

    Dense (n_pixels x n_pixels) work: meant for tests and small grids.
    """
    Wd = W.toarray() if sparse.issparse(W) else np.asarray(W, dtype=float)
    C = (Wd * np.asarray(var, dtype=float)[None, :]) @ Wd.T
    d = np.sqrt(np.clip(np.diag(C), 0.0, None))
    den = np.outer(d, d)
    rho = np.divide(C, den, out=np.zeros_like(C), where=den > 0)
    rho = np.triu(rho)
    rho[np.abs(rho) <= tol] = 0.0
    return sparse.csr_matrix(rho)
