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
:func:`crrxr.core.reconstruct_block` computes it (``lsf=``) from the weights of each channel's flux
solve, so the LSF costs no second solve.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse

from crrxr.core.slice import InputError

__all__ = ["combine_lsf", "lsf_from_sums", "squared_lsf"]


def combine_lsf(weights: np.ndarray | sparse.spmatrix, sigma: np.ndarray) -> np.ndarray:
    """sqrt(W sigma^2 / W 1) for an (n_pixel, n_sample) weight matrix (dense or sparse) and sample
    dispersions ``sigma`` (n_sample,); NaN where undefined."""
    s2 = np.square(np.asarray(sigma, dtype=np.float64))
    num = np.asarray(weights @ s2).ravel()
    den = np.asarray(weights @ np.ones_like(s2)).ravel()
    return lsf_from_sums(num, den)


def lsf_from_sums(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """sqrt(num / den) per pixel from num = W sigma^2 (Angstrom^2) and den = W 1 over the usable
    samples (any common scale); NaN where undefined (den <= 0, or the moment not positive)."""
    out = np.full(np.shape(num), np.nan)
    ok = (den > 0) & np.isfinite(num) & np.isfinite(den)
    moment = np.divide(num, den, out=np.zeros_like(out), where=ok)
    ok &= moment > 0
    out[ok] = np.sqrt(moment[ok])
    return out


def squared_lsf(name: str, sigma: ArrayLike, usable: np.ndarray) -> np.ndarray:
    """``sigma`` (Angstrom, shaped like ``usable``) as float64, checked: every usable sample needs a
    finite positive dispersion (an :class:`InputError` names the variable otherwise)."""
    s = np.asarray(sigma, dtype=np.float64)
    if s.shape != usable.shape:
        raise InputError(f"{name} has shape {s.shape}, expected {usable.shape} like xpos")
    bad = usable & ~(np.isfinite(s) & (s > 0))
    if bad.any():
        raise InputError(
            f"{name}: {int(bad.sum())} usable sample(s) have a non-positive or non-finite LSF "
            "sigma; give every usable sample a sigma in Angstrom (or drop the variable)"
        )
    return s
