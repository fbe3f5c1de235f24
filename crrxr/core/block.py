"""A block of consecutive channels: what the engine calls per wavelength chunk.

Kernel tables (per seeing FWHM), neighbour lists (while positions do not change) and whole weight
matrices (while positions, seeing and the usable set do not change) are reused across the block.
A channel whose solve raises gets flux 0, ivar 0, mask NOCOV|DONOTUSE and ``failed=True`` with the
message; invalid input (shapes, NaN positions of usable samples, negative ivar) raises
:class:`~crrxr.core.slice.InputError` for the whole block before anything is solved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from crrxr.core import masks
from crrxr.core.config import CoreConfig
from crrxr.core.grid import Grid
from crrxr.core.lsf import combine_lsf, squared_lsf
from crrxr.core.slice import ChannelSolver, InputError, validate_samples


@dataclass(frozen=True)
class BlockResult:
    """Reconstructed channels of one block; images (n_chan, ny, nx).

    flux per spaxel, ivar, mask (u4 DRP3PIXMASK); failed (n_chan,) bool; messages: one string per
    channel ("" where it succeeded); rho / psf: {channel offset: array} for the offsets in ``want``;
    solver: route used per channel; lsf: {name: (n_chan, ny, nx)} cube LSF (Angstrom, NaN where
    undefined) for each sample LSF array given to :func:`reconstruct_block`.
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    failed: np.ndarray
    messages: tuple[str, ...]
    rho: dict[int, np.ndarray] = field(default_factory=dict)
    psf: dict[int, np.ndarray] = field(default_factory=dict)
    solver: tuple[str, ...] = ()
    lsf: dict[str, np.ndarray] = field(default_factory=dict)


def reconstruct_block(
    xpos: np.ndarray,
    ypos: np.ndarray,
    fwhm: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    grid: Grid,
    config: CoreConfig | None = None,
    *,
    correlation_pairs: tuple[np.ndarray, np.ndarray] | None = None,
    want: Iterable[int] = (),
    lsf: Mapping[str, np.ndarray] | None = None,
) -> BlockResult:
    """Reconstruct (n_samples, n_chan) inputs channel by channel.

    ``fwhm``: seeing FWHM (arcsec) per sample and channel, (n_samples, n_chan) or (n_samples,) for a
    constant. ``want``: channel offsets whose correlation (for ``correlation_pairs``) and PSF image
    are returned. ``lsf``: sample LSF dispersions {name: (n_samples, n_chan) Angstrom}, each pushed
    through the channel's own flux weights (:func:`crrxr.core.lsf.combine_lsf`).
    """
    config = config if config is not None else CoreConfig(pixel_scale=grid.pixel_scale)
    x, y, fw, f, iv, usable, dead = validate_samples(
        xpos, ypos, fwhm, flux, ivar, mask, config, ndim=2
    )
    n_chan = x.shape[1]
    want_set = set()
    for w in want:
        w = int(w)
        if not 0 <= w < n_chan:
            raise InputError(f"want offset {w} is outside the block's channels 0..{n_chan - 1}")
        want_set.add(w)
    ny, nx = grid.shape
    out_flux = np.zeros((n_chan, ny, nx))
    out_ivar = np.zeros((n_chan, ny, nx))
    out_mask = np.zeros((n_chan, ny, nx), dtype=np.uint32)
    failed = np.zeros(n_chan, dtype=bool)
    messages = [""] * n_chan
    solvers = ["none"] * n_chan
    rho: dict[int, np.ndarray] = {}
    psf: dict[int, np.ndarray] = {}
    lsf_in = {name: squared_lsf(name, s, usable) for name, s in (lsf or {}).items()}
    out_lsf = {name: np.full((n_chan, ny, nx), np.nan) for name in lsf_in}
    solver = ChannelSolver(grid, config)
    for c in range(n_chan):
        wanted = c in want_set
        try:
            xc, yc, fc = (np.ascontiguousarray(a[:, c]) for a in (x, y, fw))
            res = solver.solve(
                xc,
                yc,
                fc,
                f[:, c],
                iv[:, c],
                usable[:, c],
                dead[:, c],
                pairs=correlation_pairs if wanted and correlation_pairs is not None else None,
                psf=wanted,
            )
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any solver failure marks the channel, never the block
            failed[c] = True
            messages[c] = f"channel {c}: {type(exc).__name__}: {exc}"
            out_mask[c] = masks.NOCOV | masks.DONOTUSE
            solver = ChannelSolver(grid, config)  # drop anything cached from the failed channel
            continue
        out_flux[c], out_ivar[c], out_mask[c] = res.flux, res.ivar, res.mask
        if lsf_in:  # the weights just used (cached in the solver): no second solve
            sel_idx, use_idx, W = solver.weights(xc, yc, fc, usable[:, c], dead[:, c])[:3]
            for name, s in lsf_in.items():
                out_lsf[name][c].flat[sel_idx] = combine_lsf(W, s[use_idx, c])
        solvers[c] = res.solver
        if wanted:
            if res.rho is not None:
                rho[c] = res.rho
            if res.psf is not None:
                psf[c] = res.psf
    return BlockResult(
        out_flux, out_ivar, out_mask, failed, tuple(messages), rho, psf, tuple(solvers), out_lsf
    )
