"""One wavelength channel end to end: samples -> kernel matrix -> weights -> image, ivar, masks.

Units: fiber fluxes are per fiber; the image is per spaxel, ``flux_factor = p^2 / (pi r_fiber^2)``
times W f, and ``ivar = 1 / diag(W N W^T) / flux_factor^2`` with N the real sample variances (0 where
undefined). The factor is applied here: callers must not apply it again.

Masks (MaNGA DRP3PIXMASK): NOCOV for pixels outside the solve (CRR: no sample position, usable or
not, within ``select_radius``; Shepard: no usable sample within ``shepard_rlim``); LOWCOV for solved
pixels whose coverage diag(W N~ W^T) exceeds ``lowcov_threshold`` x the median of its nonzero values
or is 0; DEADFIBER where samples flagged RSS_DEADFIBER would carry >= ``deadfiber_share`` of the
pixel's Shepard weight (:func:`dead_fiber_pixels`);
DONOTUSE = NOCOV | LOWCOV, and ivar = 0 wherever DONOTUSE is set (flux is kept). When no pixel can be solved (the grid misses every sample, or no sample
of the channel is usable) the result is all-masked: flux 0, ivar 0 and NOCOV | DONOTUSE everywhere
(plus DEADFIBER where a dead fiber reaches).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from crrxr.core import masks
from crrxr.core.config import CoreConfig
from crrxr.core.covariance import ivar_from_variance, pair_correlation
from crrxr.core.crr import solve_crr
from crrxr.core.grid import Grid
from crrxr.core.kernel import KernelTable, radial_kernel
from crrxr.core.neighbours import NeighbourCache
from crrxr.core.shepard import shepard_weights_sparse


class InputError(ValueError):
    """Per-sample inputs are inconsistent or invalid (shapes, NaN positions, negative ivar, ...)."""


@dataclass(frozen=True)
class SliceResult:
    """One reconstructed channel; images are (ny, nx), indexed [iy, ix].

    flux: per spaxel. ivar: inverse variance of flux. mask: u4 DRP3PIXMASK bits. rho: correlation
    coefficients of the requested pixel pairs or None. psf: image of a unit point source at (0, 0)
    or None. coverage: diag(W N~ W^T) (weights units, no flux factor). solver: route used ("svd",
    "gram", "shepard" or "none" when nothing was solved).
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    rho: np.ndarray | None = None
    psf: np.ndarray | None = None
    coverage: np.ndarray | None = None
    solver: str = "none"


def usable_samples(
    flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, bad_bits: int
) -> np.ndarray:
    """ivar > 0, finite flux and no bad bit (any shape)."""
    return (
        (ivar > 0)
        & np.isfinite(flux)
        & ((np.asarray(mask).astype(np.uint64) & np.uint64(bad_bits)) == 0)
    )


def validate_samples(xpos, ypos, fwhm, flux, ivar, mask, config: CoreConfig, ndim: int):
    """Check shapes and values; return float/uint arrays, the usable and the dead-fiber masks."""
    names = ("xpos", "ypos", "flux", "ivar", "mask")
    arrays = [np.asarray(a) for a in (xpos, ypos, flux, ivar, mask)]
    shape = arrays[0].shape
    for name, a in zip(names, arrays):
        if a.ndim != ndim:
            raise InputError(
                f"{name} must have {ndim} dimension(s) (samples{', channels' if ndim == 2 else ''}), got shape {a.shape}"
            )
        if a.shape != shape:
            raise InputError(f"{name} has shape {a.shape}, expected {shape} like xpos")
    if shape[0] == 0 or (ndim == 2 and shape[1] == 0):
        raise InputError(
            f"no samples to reconstruct (input shape {shape}); pass at least one sample and channel"
        )
    x, y, f, iv = (np.asarray(a, dtype=float) for a in (arrays[0], arrays[1], arrays[2], arrays[3]))
    m = arrays[4]
    if not np.issubdtype(m.dtype, np.integer):
        raise InputError(f"mask must hold integer bit flags, got dtype {m.dtype}")
    fw = np.asarray(fwhm, dtype=float)
    if ndim == 2 and fw.ndim == 1:
        fw = fw[:, None]
    try:
        fw = np.broadcast_to(fw, shape)
    except ValueError:
        raise InputError(
            f"fwhm with shape {np.shape(fwhm)} does not broadcast to the samples' shape {shape}"
        ) from None
    if np.any(np.isnan(iv)) or np.any(iv < 0) or np.any(np.isinf(iv)):
        raise InputError("ivar must be finite and >= 0 (use ivar = 0 to mark missing data)")
    usable = usable_samples(f, iv, m, config.bad_bits)
    bad_pos = usable & ~(np.isfinite(x) & np.isfinite(y))
    if bad_pos.any():
        raise InputError(
            f"{int(bad_pos.sum())} usable sample(s) have NaN/inf positions; give finite xpos/ypos or mask them"
        )
    bad_fw = usable & ~(np.isfinite(fw) & (fw > 0))
    if bad_fw.any():
        raise InputError(
            f"{int(bad_fw.sum())} usable sample(s) have a non-positive or non-finite seeing FWHM"
        )
    dead = (m.astype(np.uint64) & np.uint64(masks.RSS_DEADFIBER)) != 0
    return x, y, fw, f, iv, usable, dead


def dead_fiber_pixels(
    sample: np.ndarray,
    pixel: np.ndarray,
    dist: np.ndarray,
    dead: np.ndarray,
    n_pixels: int,
    config: CoreConfig,
) -> np.ndarray:
    """DEADFIBER pixels (n_pixels,) bool from neighbour pairs (sample, pixel, distance in arcsec).

    A pixel is flagged where the dead samples would carry at least ``config.deadfiber_share`` of its
    Shepard weight exp(-d^2 / (2 shepard_sigma^2)) for d < shepard_rlim, summed over every sample
    position (dead or not): a dead fiber would have been a major contributor to that pixel.
    """
    if not dead.any():
        return np.zeros(n_pixels, dtype=bool)
    near = dist < config.shepard_rlim
    s, p, d = sample[near], pixel[near], dist[near]
    w = np.exp(-0.5 * (d / config.shepard_sigma) ** 2)
    total = np.bincount(p, weights=w, minlength=n_pixels)
    lost = np.bincount(p, weights=w * dead[s], minlength=n_pixels)
    return (total > 0) & (lost >= config.deadfiber_share * total)


class ChannelSolver:
    """Solves channels on one grid with one config, reusing kernel tables and neighbour lists.

    Neighbour pairs are recomputed only when the positions change; the weights are reused when
    positions, seeing and the usable set are all identical to the previous channel's.
    """

    #: keep the eigendecomposition behind W where sample removal can use it (weight reuse)
    keep_factor: bool = False

    def __init__(self, grid: Grid, config: CoreConfig) -> None:
        if abs(grid.pixel_scale - config.pixel_scale) > 1e-9 * config.pixel_scale:
            raise InputError(
                f"grid pixel scale {grid.pixel_scale} differs from config.pixel_scale {config.pixel_scale}; make them equal"
            )
        self.grid = grid
        self.config = config
        self.table = KernelTable(
            config.truncation_radius,
            config.fiber_radius,
            config.sigma_ratio,
            config.wing_ratio,
            config.wing,
        )
        self._pairs = NeighbourCache(grid, config.neighbour_radius)
        self._geom_key: tuple[np.ndarray, np.ndarray] | None = None
        self._geom: tuple | None = None
        self._weights_key: tuple | None = None
        self._weights: tuple | None = None

    # -- geometry -------------------------------------------------------------------------------
    def _geometry(self, x: np.ndarray, y: np.ndarray, dead: np.ndarray):
        if (
            self._geom_key is not None
            and np.array_equal(self._geom_key[0], x, equal_nan=True)
            and np.array_equal(self._geom_key[1], y, equal_nan=True)
            and np.array_equal(self._geom_key[2], dead)
        ):
            return self._geom
        cfg = self.config
        s, p, d = self._pairs(x, y)
        selected = np.zeros(self.grid.size, dtype=bool)
        selected[p[d <= cfg.select_radius]] = True
        deadpix = dead_fiber_pixels(s, p, d, dead, self.grid.size, cfg)
        self._geom_key = (x.copy(), y.copy(), dead.copy())
        self._geom = (s, p, d, selected, deadpix)
        return self._geom

    # -- weights --------------------------------------------------------------------------------
    def kernel_matrix(self, x, y, fw, usable, geom=None):
        """Sparse CSR kernel matrix of the usable samples over the selected pixels, A = K p^2.

        Returns (A (n_usable, n_selected), selected flat pixel indices, usable sample indices).
        """
        if geom is None:
            geom = self._geometry(x, y, np.zeros(x.size, dtype=bool))
        s, p, d, selected, _ = geom
        cfg = self.config
        sel_idx = np.flatnonzero(selected)
        colmap = np.full(self.grid.size, -1, dtype=np.intp)
        colmap[sel_idx] = np.arange(sel_idx.size)
        rowmap = np.full(usable.size, -1, dtype=np.intp)
        use_idx = np.flatnonzero(usable)
        rowmap[use_idx] = np.arange(use_idx.size)
        k = usable[s] & (d < cfg.truncation_radius) & selected[p]
        rows, cols, dist = rowmap[s[k]], colmap[p[k]], d[k]
        # seeing of the usable samples only: unusable ones may carry any value
        vals = self.table.by_sample(dist, rows, fw[use_idx]) * cfg.pixel_scale**2
        indptr = np.zeros(use_idx.size + 1, dtype=np.intp)
        np.cumsum(np.bincount(rows, minlength=use_idx.size), out=indptr[1:])
        A = sparse.csr_matrix((vals, cols, indptr), shape=(use_idx.size, sel_idx.size))
        return A, sel_idx, use_idx

    def _crr_weights(self, x, y, fw, usable, geom):
        cfg = self.config
        key = (x, y, fw, usable)
        if self._weights_key is not None and all(
            np.array_equal(a, b, equal_nan=True) for a, b in zip(self._weights_key, key)
        ):
            return self._weights
        Ag, sel_idx, use_idx = self.kernel_matrix(x, y, fw, usable, geom)
        # every channel chooses its route from its own matrix alone: a decision carried over from
        # earlier channels would make the cube depend on where chunks start (issue #9)
        sol = solve_crr(
            Ag,
            lam=cfg.lam,
            floor=cfg.sv_floor,
            variant=cfg.variant,
            solver=cfg.solver,
            keep_factor=self.keep_factor,
        )
        out = (
            sel_idx,
            use_idx,
            sol.weights,
            sol.solver,
            sol.error_estimate,
            sol.effective_condition,
            sol.factor,
        )
        self._weights_key = tuple(a.copy() for a in key)
        self._weights = out
        return out

    def _shepard_weights(self, usable, geom):
        s, p, d, _, _ = geom
        cfg = self.config
        W = shepard_weights_sparse(
            s, p, d, usable, self.grid.size, cfg.shepard_sigma, cfg.shepard_rlim
        )
        solved = np.asarray(W.getnnz(axis=1) > 0)
        sel_idx = np.flatnonzero(solved)
        use_idx = np.flatnonzero(usable)
        Wsub = W[sel_idx][:, use_idx].tocsr()
        return sel_idx, use_idx, Wsub, "shepard", None, None, None

    def weights(self, x, y, fw, usable, dead):
        """(solved flat pixel indices, usable sample indices, W, route, error estimate or None,
        effective condition or None, factor or None): the last three are the CRR route's (None for
        Shepard; the factor only with :attr:`keep_factor`, :class:`crrxr.core.crr.CRRWeights`).

        W (n_solved, n_usable) maps usable sample fluxes to pixels before the flux factor; the
        error estimate is the CRR route's bound, the effective condition that of the kept modes
        weighted by their share of W (:class:`crrxr.core.crr.CRRWeights`).
        :meth:`solve` uses exactly this.
        """
        geom = self._geometry(x, y, dead)
        if self.config.method == "crr":
            return self._crr_weights(x, y, fw, usable, geom)
        return self._shepard_weights(usable, geom)

    # -- channel --------------------------------------------------------------------------------
    def solve(
        self, x, y, fw, flux, ivar, usable, dead, *, pairs=None, psf: bool = False
    ) -> SliceResult:
        """Reconstruct one validated channel (1-D arrays of n_samples)."""
        cfg = self.config
        grid = self.grid
        sel_idx, use_idx, W, solver = self.weights(x, y, fw, usable, dead)[:4]
        deadpix = self._geometry(x, y, dead)[4]
        factor = cfg.flux_factor
        npix = grid.size
        f = flux[use_idx]
        var = 1.0 / ivar[use_idx]
        image = np.zeros(npix)
        ivar_img = np.zeros(npix)
        cover = np.zeros(npix)
        if sel_idx.size:
            image[sel_idx] = factor * np.asarray(W @ f).ravel()
            # diag(W N W^T) and diag(W N~ W^T) in one pass over W^2
            W2 = W.multiply(W) if sparse.issparse(W) else np.square(W)
            stats = np.asarray(W2 @ np.column_stack([var, np.ones_like(var)]))
            ivar_img[sel_idx] = ivar_from_variance(stats[:, 0]) / factor**2
            cover[sel_idx] = stats[:, 1]
        # a channel without any usable sample is all NOCOV (not LOWCOV), like a pixel nothing reaches
        mask = self._mask(sel_idx if use_idx.size else sel_idx[:0], cover, deadpix)
        # ivar > 0 means "usable": none in DONOTUSE (NOCOV or LOWCOV) spaxels (docs/contracts.md)
        ivar_img[(mask & masks.DONOTUSE) != 0] = 0.0
        rho = None
        if pairs is not None:
            rho = self._rho(pairs, sel_idx, W, var)
        psf_img = None
        if psf:
            psf_img = np.zeros(npix)
            if sel_idx.size:
                fp = self._point_source_fluxes(x[use_idx], y[use_idx], fw[use_idx])
                psf_img[sel_idx] = factor * np.asarray(W @ fp).ravel()
            psf_img = psf_img.reshape(grid.shape)
        return SliceResult(
            image.reshape(grid.shape),
            ivar_img.reshape(grid.shape),
            mask.reshape(grid.shape),
            rho,
            psf_img,
            cover.reshape(grid.shape),
            solver if sel_idx.size else "none",
        )

    def _mask(self, sel_idx: np.ndarray, cover: np.ndarray, deadpix: np.ndarray) -> np.ndarray:
        npix = self.grid.size
        mask = np.full(npix, masks.NOCOV, dtype=np.uint32)
        mask[sel_idx] = 0
        c = cover[sel_idx]
        nonzero = c[c > 0]
        low = c == 0
        if nonzero.size:
            low |= c > self.config.lowcov_threshold * np.median(nonzero)
        mask[sel_idx[low]] |= masks.LOWCOV
        mask[deadpix] |= masks.DEADFIBER
        mask[(mask & (masks.NOCOV | masks.LOWCOV)) != 0] |= masks.DONOTUSE
        return mask

    def _rho(self, pairs, sel_idx, W, var) -> np.ndarray:
        i, j = (np.asarray(a, dtype=np.intp).ravel() for a in pairs)
        if i.shape != j.shape:
            raise InputError(
                f"correlation_pairs must be two arrays of equal length, got {i.shape} and {j.shape}"
            )
        npix = self.grid.size
        if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= npix):
            raise InputError(f"correlation_pairs hold flat pixel indices outside 0..{npix - 1}")
        rho = np.zeros(i.size)
        pos = np.full(npix, -1, dtype=np.intp)
        pos[sel_idx] = np.arange(sel_idx.size)
        a, b = pos[i], pos[j]
        ok = (a >= 0) & (b >= 0)
        if ok.any():
            rho[ok] = pair_correlation(W, var, a[ok], b[ok])
        return rho

    def _point_source_fluxes(self, x, y, fw) -> np.ndarray:
        """Fluxes pi r_fib^2 K_i(|p_i|) of a unit point source at (0, 0) (exact kernel)."""
        cfg = self.config
        r = np.hypot(x, y)
        out = np.zeros(r.size)
        for value in np.unique(fw):
            k = fw == value
            out[k] = radial_kernel(
                r[k], value, cfg.fiber_radius, cfg.sigma_ratio, cfg.wing_ratio, cfg.wing
            )
        return np.pi * cfg.fiber_radius**2 * out


def reconstruct_slice(
    xpos: np.ndarray,
    ypos: np.ndarray,
    fwhm: np.ndarray | float,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    grid: Grid,
    config: CoreConfig | None = None,
    *,
    correlation_pairs: tuple[np.ndarray, np.ndarray] | None = None,
    psf: bool = False,
) -> SliceResult:
    """Reconstruct one channel from per-sample arrays of shape (n_samples,).

    xpos, ypos: arcsec relative to the IFU centre. fwhm: seeing FWHM (arcsec) of each sample at this
    wavelength (scalar or (n_samples,)). flux: per fiber; ivar: its inverse variance (0 = no data);
    mask: RSS bits. ``correlation_pairs`` = (i, j) flat pixel indices -> ``rho``; ``psf`` -> the image
    of a unit point source at (0, 0). Raises :class:`InputError` (a ValueError) on bad input.
    """
    config = config if config is not None else CoreConfig(pixel_scale=grid.pixel_scale)
    x, y, fw, f, iv, usable, dead = validate_samples(
        xpos, ypos, fwhm, flux, ivar, mask, config, ndim=1
    )
    solver = ChannelSolver(grid, config)
    return solver.solve(x, y, fw, f, iv, usable, dead, pairs=correlation_pairs, psf=psf)
