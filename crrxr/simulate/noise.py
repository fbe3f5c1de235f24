"""Noise, inverse variance, dead fibers and bad pixels of a simulated RSS.

Noise model (object + sky, Gaussian approximation to Poisson): a sample of noiseless flux f has
variance (max(f, 0) + sky) / s, with s photons per flux unit. S/N is defined as in Liu et al. (2020)
Eq. 28 for the brightest fiber-exposure's noiseless flux f_ref at the reference channel (nearest to
``ref_wavelength``): S/N = f_ref / sqrt((f_ref + sky) / s), with sky = ``sky_fraction`` x f_ref. ivar is
1 / variance exactly (the variance of the noise drawn), or 1 where ``snr`` is None (noiseless data).

Reproducibility: the noise and bad pixels of channel k come from their own random streams
SeedSequence(seed, spawn_key=(stream, k)), so the values do not depend on how channels are chunked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crrxr.core.masks import RSS_DEADFIBER, RSS_REJECT

from .observe import STREAM_BADPIX, STREAM_NOISE, stream

BAD_PIXEL_SPIKE = 10.0  # a bad pixel's flux gets + this x f_ref (a cosmic-ray-like outlier)


@dataclass(frozen=True)
class NoiseModel:
    seed: int
    snr: float | None
    f_ref: float  # brightest noiseless fiber flux at the reference channel
    sky_fraction: float = 0.1
    bad_pixel_fraction: float = 0.0
    dead_spectra: np.ndarray | None = None  # (n_spectra,) bool

    def __post_init__(self) -> None:
        if self.snr is not None and not (np.isfinite(self.snr) and self.snr > 0):
            raise ValueError(
                f"noise S/N must be a positive number (or None for no noise), got {self.snr!r}"
            )
        if self.snr is not None and not self.f_ref > 0:
            raise ValueError(
                "S/N is defined on the brightest fiber's flux, which is not positive here; "
                "use a scene with positive flux at the reference wavelength"
            )
        if not 0 <= self.bad_pixel_fraction < 1:
            raise ValueError(
                f"bad_pixel_fraction must be in [0, 1), got {self.bad_pixel_fraction!r}"
            )
        if not self.sky_fraction >= 0:
            raise ValueError(f"sky_fraction must be >= 0, got {self.sky_fraction!r}")
        if self.snr is not None and not self.sky_fraction > 0:
            raise ValueError(
                "with noise, sky_fraction must be > 0: samples without object flux would get "
                "zero variance (infinite ivar)"
            )

    @property
    def sky(self) -> float:
        return self.sky_fraction * self.f_ref

    @property
    def photons_per_unit(self) -> float | None:
        """s of the noise model (photons per flux unit), None without noise."""
        if self.snr is None:
            return None
        return self.snr**2 * (self.f_ref + self.sky) / self.f_ref**2

    def apply(self, clean: np.ndarray, k0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flux, ivar, mask) for channels k0.. of the noiseless ``clean`` (n_spectra, n_chan)."""
        n_spec, n_chan = clean.shape
        flux = clean.copy()
        mask = np.zeros(clean.shape, dtype=np.uint32)
        s = self.photons_per_unit
        if s is None:
            ivar = np.ones(clean.shape)
        else:
            var = (np.maximum(clean, 0.0) + self.sky) / s
            ivar = 1.0 / var
            for j in range(n_chan):
                flux[:, j] += np.sqrt(var[:, j]) * stream(
                    self.seed, STREAM_NOISE, k0 + j
                ).standard_normal(n_spec)
        if self.bad_pixel_fraction > 0:
            bad = np.empty(clean.shape, dtype=bool)
            for j in range(n_chan):
                bad[:, j] = (
                    stream(self.seed, STREAM_BADPIX, k0 + j).random(n_spec)
                    < self.bad_pixel_fraction
                )
            mask[bad] |= RSS_REJECT
            ivar[bad] = 0.0
            flux[bad] += BAD_PIXEL_SPIKE * self.f_ref
        if self.dead_spectra is not None and self.dead_spectra.any():
            mask[self.dead_spectra] |= RSS_DEADFIBER
            ivar[self.dead_spectra] = 0.0
            flux[self.dead_spectra] = 0.0
        return flux, ivar, mask
