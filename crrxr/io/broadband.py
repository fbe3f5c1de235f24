"""Broadband images of a cube through the SDSS filter curves (speclite ``sdss2010-*``).

Each image is the AB flux of every spaxel through the filter, in nanomaggies per spaxel:

    maggies = sum_k F_k S(l_k) l_k dl_k / sum_k F_AB(l_k) S(l_k) l_k dl_k,   F_AB = 3631 Jy c / l^2,

with F_k the cube flux density (``FLUX_SCALE`` erg/s/cm^2/Angstrom), S the filter response
interpolated at the cube wavelengths l_k (zero outside the curve) and dl_k the trapezoid weights of
the cube's wavelength grid: the photon-counting AB magnitude that speclite's ``get_ab_maggies``
computes. The cube is read one wavelength chunk at a time. A band is made only when the cube covers
at least ``MIN_COVERAGE`` of the filter's photon-weighted response (MaNGA's 3622-10354 A covers
g, r, i, z; another instrument gets the bands its range covers).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["BANDS", "Band", "band_weights", "broadband_images", "covered_bands"]

BANDS: tuple[str, ...] = ("g", "r", "i", "z")
FILTER_FAMILY = "sdss2010"
FLUX_SCALE = 1e-17  # erg/s/cm^2/Angstrom per unit of cube flux
MIN_COVERAGE = 0.95
_C_ANGSTROM = 2.99792458e18  # speed of light, Angstrom/s
_AB_FNU = 3631e-23  # erg/s/cm^2/Hz


@dataclass(frozen=True)
class Band:
    """One filter on the cube's grid: per-channel weights such that image = weights @ flux."""

    name: str  # "g", "r", ...
    weights: np.ndarray  # (n_chan,) nanomaggies per unit of cube flux, per channel
    coverage: float  # fraction of the filter's photon-weighted response inside the cube range
    effective_wavelength: float  # Angstrom, speclite's value


def _trapezoid_widths(wavelength: np.ndarray) -> np.ndarray:
    w = np.asarray(wavelength, dtype=np.float64)
    if w.size < 2:
        return np.ones_like(w)
    d = np.diff(w)
    return np.concatenate([[d[0] / 2], (d[:-1] + d[1:]) / 2, [d[-1] / 2]])


def band_weights(wavelength: np.ndarray, band: str) -> Band:
    """The :class:`Band` of SDSS filter ``band`` on the cube grid ``wavelength`` (Angstrom)."""
    from speclite import filters

    curve = filters.load_filter(f"{FILTER_FAMILY}-{band}")
    fw = np.asarray(curve.wavelength, dtype=np.float64)
    fr = np.asarray(curve.response, dtype=np.float64)
    w = np.asarray(wavelength, dtype=np.float64)
    s = np.interp(w, fw, fr, left=0.0, right=0.0)
    dl = _trapezoid_widths(w)
    photon = s * w * dl
    ab = _AB_FNU * _C_ANGSTROM / w**2  # erg/s/cm^2/Angstrom
    den = float(np.sum(photon * ab))
    total = float(np.trapezoid(fr * fw, fw))
    inside = (fw >= w[0]) & (fw <= w[-1])
    covered = float(np.trapezoid((fr * fw)[inside], fw[inside])) if inside.sum() > 1 else 0.0
    weights = photon * FLUX_SCALE / den * 1e9 if den > 0 else np.zeros_like(w)
    return Band(band, weights, covered / total, float(curve.effective_wavelength.value))


def covered_bands(
    wavelength: np.ndarray, bands: Iterable[str] = BANDS, min_coverage: float = MIN_COVERAGE
) -> list[Band]:
    """The bands whose response the cube range covers to at least ``min_coverage``."""
    out = [band_weights(wavelength, b) for b in bands]
    return [b for b in out if b.coverage >= min_coverage]


def broadband_images(
    chunks: Iterator[tuple[slice, np.ndarray]], bands: list[Band], shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Accumulate (ny, nx) images in nanomaggies from ``(channel slice, flux (n, ny, nx))`` chunks.

    Non-finite flux (pixels nothing reaches) counts as zero.
    """
    images = {b.name: np.zeros(shape) for b in bands}
    for region, flux in chunks:
        f = np.nan_to_num(np.asarray(flux, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        for b in bands:
            images[b.name] += np.tensordot(b.weights[region], f, axes=(0, 0))
    return images
