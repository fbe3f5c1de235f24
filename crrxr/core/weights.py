"""The weights of one reconstructed channel as an object: G = flux_factor * W f.

``W`` (n_solved_pixels, n_used_samples) maps the fluxes of the channel's usable samples to its solved
pixels. It is computed by the engine's own code path (:meth:`crrxr.core.slice.ChannelSolver.weights`,
the function :func:`crrxr.core.reconstruct_block` calls per channel), so ``apply`` reproduces the
cube's flux and ``variance`` its ivar. Fits (the point-source response), quality measures, Monte-Carlo
tests and cross-channel reuse use this object instead of re-deriving the weights.

Units: ``apply`` returns per-spaxel flux (the flux factor p^2 / (pi r_fiber^2) is applied, like the
cube); ``variance`` / ``covariance`` return per-spaxel variances (factor^2 applied).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from crrxr.core.config import CoreConfig
from crrxr.core.covariance import ivar_from_variance, pair_covariance
from crrxr.core.grid import Grid
from crrxr.core.slice import ChannelSolver, InputError, validate_samples


@dataclass(frozen=True)
class ChannelWeights:
    """Linear weights of one channel.

    matrix: W as scipy CSR, (n_solved_pixels, n_used_samples), before the flux factor.
    pixels: (n_solved_pixels,) flat pixel indices ``iy * nx + ix`` of W's rows.
    samples: (n_used_samples,) indices into the channel's sample arrays of W's columns.
    shape: grid shape (ny, nx). n_samples: length of the channel's sample arrays.
    route: ``svd``, ``gram``, ``shepard`` or ``none`` (nothing solved).
    error_bound: relative error bound of the CRR route (eps cond^2 for gram, eps cond for SVD);
    None for Shepard. flux_factor: p^2 / (pi r_fiber^2) (per fiber -> per spaxel).
    """

    matrix: sparse.csr_matrix
    pixels: np.ndarray
    samples: np.ndarray
    shape: tuple[int, int]
    n_samples: int
    route: str
    error_bound: float | None
    flux_factor: float

    @property
    def n_pixels(self) -> int:
        """Pixels of the whole grid (ny * nx)."""
        return int(self.shape[0] * self.shape[1])

    def _check(self, values: np.ndarray, name: str) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if values.shape[0] != self.n_samples:
            raise InputError(
                f"{name} has {values.shape[0]} samples but the weights were built for {self.n_samples}"
            )
        return values

    def apply(self, flux: np.ndarray) -> np.ndarray:
        """Image per spaxel (ny, nx) of per-fiber fluxes ``flux`` (n_samples,) or (n_samples, k) ->
        (k, ny, nx). Unsolved pixels are 0; unused samples are ignored."""
        f = self._check(flux, "flux")
        used = f[self.samples]
        vals = self.flux_factor * np.asarray(self.matrix @ used)
        if f.ndim == 1:
            out = np.zeros(self.n_pixels)
            out[self.pixels] = vals.ravel()
            return out.reshape(self.shape)
        out = np.zeros((self.n_pixels, f.shape[1]))
        out[self.pixels] = vals
        return out.T.reshape((f.shape[1],) + tuple(self.shape))

    def variance(self, var: np.ndarray) -> np.ndarray:
        """diag(W N W^T) factor^2 per spaxel (ny, nx) for sample variances ``var`` (n_samples,);
        0 at unsolved pixels."""
        v = self._check(var, "var")[self.samples]
        out = np.zeros(self.n_pixels)
        out[self.pixels] = (
            self.flux_factor**2 * np.asarray(self.matrix.multiply(self.matrix) @ v).ravel()
        )
        return out.reshape(self.shape)

    def ivar(self, var: np.ndarray) -> np.ndarray:
        """1 / :meth:`variance` (0 where the variance is 0), (ny, nx): what the cube stores."""
        return ivar_from_variance(self.variance(var))

    def covariance(
        self, var: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None = None
    ) -> np.ndarray | sparse.csr_matrix:
        """Covariance C = factor^2 W N W^T of the pixels.

        With ``pairs=(i, j)`` (flat pixel indices): the (n_pairs,) entries C_ij (0 where a pixel is
        unsolved). Without: the full (n_pixels, n_pixels) matrix as CSR (meant for small grids).
        """
        v = self._check(var, "var")[self.samples]
        if pairs is None:
            M = self.full_matrix()[:, self.samples]
            return (M.multiply(v[None, :]).tocsr() @ M.T).tocsr()
        i, j = (np.asarray(a, dtype=np.intp).ravel() for a in pairs)
        if i.shape != j.shape:
            raise InputError(f"pairs must be two equal-length arrays, got {i.shape} and {j.shape}")
        pos = np.full(self.n_pixels, -1, dtype=np.intp)
        pos[self.pixels] = np.arange(self.pixels.size)
        a, b = pos[i], pos[j]
        ok = (a >= 0) & (b >= 0)
        out = np.zeros(i.size)
        if ok.any():
            out[ok] = self.flux_factor**2 * pair_covariance(self.matrix, v, a[ok], b[ok])
        return out

    def full_matrix(self) -> sparse.csr_matrix:
        """factor * W on the whole grid and all samples: CSR (n_pixels, n_samples), so that
        ``full_matrix() @ flux`` is the flattened image."""
        coo = self.matrix.tocoo()
        return sparse.csr_matrix(
            (self.flux_factor * coo.data, (self.pixels[coo.row], self.samples[coo.col])),
            shape=(self.n_pixels, self.n_samples),
        )


def _make(grid: Grid, config: CoreConfig, n_samples: int, parts) -> ChannelWeights:
    sel_idx, use_idx, W, route, bound = parts[:5]
    Wc = W.tocsr() if sparse.issparse(W) else sparse.csr_matrix(np.asarray(W))
    return ChannelWeights(
        Wc,
        np.asarray(sel_idx, dtype=np.intp),
        np.asarray(use_idx, dtype=np.intp),
        grid.shape,
        int(n_samples),
        route if sel_idx.size else "none",
        None if bound is None else float(bound),
        float(config.flux_factor),
    )


def channel_weights(
    xpos: np.ndarray,
    ypos: np.ndarray,
    fwhm: np.ndarray | float,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    grid: Grid,
    config: CoreConfig | None = None,
) -> ChannelWeights:
    """Weights of one channel from per-sample arrays (n_samples,), exactly as
    :func:`crrxr.core.reconstruct_slice` computes them (same validation, usable set and solver)."""
    return next(iter_channel_weights(xpos, ypos, fwhm, flux, ivar, mask, grid, config, ndim=1))


def iter_channel_weights(
    xpos: np.ndarray,
    ypos: np.ndarray,
    fwhm: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    grid: Grid,
    config: CoreConfig | None = None,
    *,
    ndim: int = 2,
) -> Iterator[ChannelWeights]:
    """Weights of each channel of (n_samples, n_chan) inputs, in order, through one
    :class:`ChannelSolver` as :func:`crrxr.core.reconstruct_block` does (kernel tables and weights
    reused across channels). ``fwhm`` may be (n_samples,) for a constant seeing."""
    config = config if config is not None else CoreConfig(pixel_scale=grid.pixel_scale)
    x, y, fw, f, iv, usable, dead = validate_samples(
        xpos, ypos, fwhm, flux, ivar, mask, config, ndim=ndim
    )
    solver = ChannelSolver(grid, config)
    if ndim == 1:
        yield _make(grid, config, x.size, solver.weights(x, y, fw, usable, dead))
        return
    for c in range(x.shape[1]):
        parts = solver.weights(
            np.ascontiguousarray(x[:, c]),
            np.ascontiguousarray(y[:, c]),
            np.ascontiguousarray(fw[:, c]),
            usable[:, c],
            dead[:, c],
        )
        yield _make(grid, config, x.shape[0], parts)
