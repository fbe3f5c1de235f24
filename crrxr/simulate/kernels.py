"""The reconstruction kernel of :mod:`crrxr.core.kernel`, vectorised over per-sample seeing FWHM.

``core.kernel.radial_kernel`` takes one FWHM; the simulator needs a different FWHM per exposure and
channel. Both Gaussian widths are proportional to the FWHM and the flux fractions do not depend on it,
so the components of FWHM = 1 scaled by the FWHM give the same kernel, evaluated with core's own
``tophat_gaussian`` (the exact Rice CDF) on broadcast arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crrxr.core.kernel import double_gaussian_components, tophat_gaussian


@dataclass(frozen=True)
class KernelModel:
    """Seeing model parameters (the ``seeing.*`` and ``kernel.fiber_radius_arcsec`` keys)."""

    fiber_radius: float = 1.0
    sigma_ratio: float = 2.0
    wing_ratio: float = 1.0 / 9.0
    wing: str = "flux"
    lambda_ref: float = 5400.0
    exponent: float = -0.2

    def __call__(self, r: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
        """Kernel (arcsec^-2) at radii ``r`` for seeing ``fwhm`` (arcsec); arrays broadcast."""
        (f1, s1), (f2, s2) = double_gaussian_components(
            1.0, self.sigma_ratio, self.wing_ratio, self.wing
        )
        fwhm = np.asarray(fwhm, dtype=float)
        return f1 * tophat_gaussian(r, s1 * fwhm, self.fiber_radius) + f2 * tophat_gaussian(
            r, s2 * fwhm, self.fiber_radius
        )

    def outer_sigma(self, fwhm: float) -> float:
        """Width (arcsec) of the broader Gaussian component at seeing ``fwhm``."""
        (_, s1), (_, s2) = double_gaussian_components(
            1.0, self.sigma_ratio, self.wing_ratio, self.wing
        )
        return max(s1, s2) * fwhm
