"""Line-spread function of a reconstructed cube from the per-sample LSF of the RSS.

A cube spaxel k is a linear combination of the samples, f_k = sum_j W_kj f_j, with the weights W of
the channel (CRR or Shepard; the flux factor cancels below). If sample j sees a line through a
Gaussian LSF of dispersion sigma_j, the spaxel sees the line profile sum_j W_kj G(sigma_j) /
sum_j W_kj, whose second moment is

    sigma_k^2 = sum_j W_kj sigma_j^2 / sum_j W_kj.

This is how the MaNGA DRP builds its cube LSF extensions (LSFPRE/LSFPOST; Law et al. 2021, AJ 161,
52): the squared fiber dispersions are resampled onto the cube with the same weights as the flux
and normalised by the resampled unit image. The same weights W are used here, so the LSF matches
the flux pixel by pixel; it is NaN where no sample reaches the pixel or the moment is not positive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike

from crrxr.core.config import CoreConfig
from crrxr.core.grid import Grid
from crrxr.core.slice import ChannelSolver, InputError, validate_samples

__all__ = ["combine_lsf", "cube_lsf_block"]


def combine_lsf(weights: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """sqrt(W sigma^2 / W 1) for a dense (n_pixel, n_sample) weight matrix; NaN where undefined."""
    w = np.asarray(weights, dtype=np.float64)
    s2 = np.square(np.asarray(sigma, dtype=np.float64))
    return _ratio_sqrt(w @ s2, w.sum(axis=1))


def _ratio_sqrt(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(num), np.nan)
    ok = (den > 0) & np.isfinite(num) & np.isfinite(den)
    moment = np.divide(num, den, out=np.zeros_like(out), where=ok)
    ok &= moment > 0
    out[ok] = np.sqrt(moment[ok])
    return out


def cube_lsf_block(
    samples: Mapping[str, ArrayLike],
    names: Iterable[str],
    fwhm: np.ndarray,
    grid: Grid,
    config: CoreConfig,
) -> dict[str, np.ndarray]:
    """Cube LSF (n_chan, ny, nx) in Angstrom for each of ``names`` present in ``samples``.

    ``samples`` maps xpos, ypos, flux, ivar, mask and the LSF sigma arrays (Angstrom) to
    (n_samples, n_chan) arrays (e.g. the RSS slice of a chunk); ``fwhm`` is the seeing of
    :func:`crrxr.core.reconstruct_block`. The flux only selects the usable samples, as in the flux
    solve; the weights are recomputed per channel and shared by every sigma array. A usable sample
    without a finite positive sigma is an :class:`InputError`.
    """
    sigmas = {n: np.asarray(samples[n]) for n in names if n in samples}
    if not sigmas:
        return {}
    xpos, ypos, flux, ivar, mask = (
        np.asarray(samples[k]) for k in ("xpos", "ypos", "flux", "ivar", "mask")
    )
    x, y, fw, _f, iv, usable, dead = validate_samples(
        xpos, ypos, fwhm, flux, ivar, mask, config, ndim=2
    )
    squared = {}
    for name, s in sigmas.items():
        s = np.asarray(s, dtype=np.float64)
        if s.shape != x.shape:
            raise InputError(f"{name} has shape {s.shape}, expected {x.shape} like xpos")
        bad = usable & ~(np.isfinite(s) & (s > 0))
        if bad.any():
            raise InputError(
                f"{name}: {int(bad.sum())} usable sample(s) have a non-positive or non-finite LSF "
                "sigma; give every usable sample a sigma in Angstrom (or drop the variable)"
            )
        squared[name] = np.where(usable, s * s, 0.0)
    n_chan = x.shape[1]
    ny, nx = grid.shape
    out = {name: np.full((n_chan, ny, nx), np.nan) for name in squared}
    solver = ChannelSolver(grid, config)
    ones = np.ones(x.shape[0])
    for c in range(n_chan):
        args = tuple(np.ascontiguousarray(a[:, c]) for a in (x, y, fw))
        try:
            den = solver.solve(*args, ones, iv[:, c], usable[:, c], dead[:, c]).flux
            for name, s2 in squared.items():
                num = solver.solve(*args, s2[:, c], iv[:, c], usable[:, c], dead[:, c]).flux
                out[name][c] = _ratio_sqrt(num, den)
        except InputError:
            raise
        except Exception:  # noqa: BLE001 - a failed solve leaves the channel NaN, as its flux
            solver = ChannelSolver(grid, config)
    return out
