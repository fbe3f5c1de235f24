"""The cube's stored correlations as :class:`astropy.nddata.Covariance`, and the variance of any
weighted sum of spaxels (an aperture, a binned spectrum) at the band channels.

The store keeps, at each band channel, the correlation coefficient rho_ij of every spaxel pair
within ``output.correlation_max_sep_arcsec`` (pairs farther apart count as uncorrelated) and the
variance on the diagonal as ``1 / ivar``; C_ij = rho_ij sigma_i sigma_j (units: flux^2).
"""

from __future__ import annotations

import numpy as np
from astropy.nddata import Covariance
from scipy import sparse

from crrxr.io import cube as C
from crrxr.io.cube_reader import CubeView


def band_position(cube: CubeView, band: str | int) -> int:
    """Position of ``band`` (a name such as ``"r"`` or an index) along the ``band`` dim."""
    names = [str(b) for b in cube.dataset[C.BAND].values]
    if isinstance(band, str):
        if band not in names:
            raise ValueError(f"band {band!r} is not stored; the cube has {', '.join(names)}")
        return names.index(band)
    if not 0 <= int(band) < len(names):
        raise ValueError(f"band index {band} outside 0..{len(names) - 1}")
    return int(band)


def band_covariance_matrix(cube: CubeView, band: str | int) -> sparse.csr_matrix:
    """The symmetric (n_pix, n_pix) covariance of the band's channel (flat ``iy * nx + ix``)."""
    ds = cube.dataset
    b = band_position(cube, band)
    ch = int(ds[C.BAND_INDEX].values[b])
    ivar = np.asarray(ds[C.IVAR].isel(wavelength=ch).values, dtype=float).ravel()
    sig = np.sqrt(np.divide(1.0, ivar, out=np.zeros_like(ivar), where=ivar > 0))
    i = ds[C.PAIR_I].values.astype(np.intp)
    j = ds[C.PAIR_J].values.astype(np.intp)
    rho = np.asarray(ds[C.CORRELATION].isel(band=b).values, dtype=float)
    c = rho * sig[i] * sig[j]
    off = (i != j) & np.isfinite(c) & (c != 0)
    n = ivar.size
    upper = sparse.csr_matrix((c[off], (i[off], j[off])), shape=(n, n))
    return (upper + upper.T + sparse.diags(sig**2)).tocsr()


def band_covariance(cube: CubeView, band: str | int) -> Covariance:
    """The band channel's covariance as :class:`astropy.nddata.Covariance` (data shape (ny, nx))."""
    ny, nx = cube.grid.shape
    return Covariance(
        array=band_covariance_matrix(cube, band), data_shape=(ny, nx), assume_symmetric=True
    )


def weighted_sum_variance(
    cube: CubeView, weights: np.ndarray, band: str | int, *, naive: bool = False
) -> float:
    """Variance of sum(weights * flux) at the band channel; ``weights`` (ny, nx). With
    ``naive=True``: the sum of weights^2 / ivar alone (what ignoring the correlations gives)."""
    w = np.asarray(weights, dtype=float).ravel()
    C_ = band_covariance_matrix(cube, band)
    if w.size != C_.shape[0]:
        raise ValueError(f"weights have {w.size} spaxels, the cube {C_.shape[0]}")
    if naive:
        return float(w**2 @ C_.diagonal())
    return float(w @ (C_ @ w))


def aperture_weights(cube: CubeView, radius: float, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """(ny, nx) 0/1 weights of the spaxels whose centres lie within ``radius`` arcsec of (x0, y0)."""
    xx, yy = cube.grid.centres()
    inside = np.hypot(xx - x0, yy - y0) <= radius
    return inside.reshape(cube.grid.shape).astype(float)
