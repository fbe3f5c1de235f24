"""Differential atmospheric refraction (DAR) with the Edlen (1966) refractivity of standard air.

The apparent position of a source moves towards the zenith by R(lambda) ~ (n(lambda) - 1) tan z. Only
the wavelength dependence matters here: the shift of an exposure is
    d(lambda) = amplitude * (n(lambda) - n(lambda_ref)) / (n(3600 A) - n(10000 A)),
so that |d(3600) - d(10000)| = amplitude (arcsec) and d(lambda_ref) = 0.
"""

from __future__ import annotations

import numpy as np

DAR_BLUE = 3600.0  # Angstrom: the amplitude is the shift between these two wavelengths
DAR_RED = 10000.0
DAR_REFERENCE = 5000.0


def refractivity(wavelength: np.ndarray) -> np.ndarray:
    """(n - 1) of dry air at 15 C, 101325 Pa (Edlen 1966) at ``wavelength`` (Angstrom, vacuum)."""
    sigma2 = (1e4 / np.asarray(wavelength, dtype=float)) ** 2  # (vacuum wavenumber in 1/um)^2
    return 1e-8 * (8342.13 + 2406030.0 / (130.0 - sigma2) + 15997.0 / (38.9 - sigma2))


def dar_shift(
    wavelength: np.ndarray, amplitude: float = 1.0, reference: float = DAR_REFERENCE
) -> np.ndarray:
    """Scalar DAR shift (arcsec) along the parallactic direction at ``wavelength`` (Angstrom).

    Positive in the blue (bluer light is refracted more), zero at ``reference``; the difference
    between 3600 and 10000 A equals ``amplitude``.
    """
    norm = refractivity(np.array(DAR_BLUE)) - refractivity(np.array(DAR_RED))
    return amplitude * (refractivity(wavelength) - refractivity(np.array(reference))) / norm


def direction(position_angle_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vector (x, y) of a position angle in degrees East of North (+y North, +x West)."""
    pa = np.deg2rad(np.asarray(position_angle_deg, dtype=float))
    return -np.sin(pa), np.cos(pa)
