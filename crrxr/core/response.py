"""The response of the samples to point sources: the exact kernel at each sample's position and seeing.

A point source of total flux F at s gives sample i the flux F pi R^2 K_i(|p_i - s|) (K: the kernel of
:mod:`crrxr.core.kernel`, unit integral, arcsec^-2; R: the fiber radius), and a flat background of
surface brightness b gives b pi R^2. Mapped through a channel's weights
(:class:`crrxr.core.weights.ChannelWeights`) this is the model of the source in the cube: the
reconstruction's own response, free of PSF-model bias.
"""

from __future__ import annotations

import numpy as np

from crrxr.core.config import CoreConfig
from crrxr.core.kernel import double_gaussian_components, tophat_gaussian


def point_source_fluxes(
    xpos: np.ndarray,
    ypos: np.ndarray,
    fwhm: np.ndarray,
    sources: list[tuple[float, float, float]],
    config: CoreConfig,
    background: float = 0.0,
) -> np.ndarray:
    """Fluxes (n_samples,) per fiber of point sources ``[(x, y, flux), ...]`` (arcsec, total flux)
    plus a flat ``background`` (flux per arcsec^2), for samples at ``xpos``, ``ypos`` (arcsec) with
    seeing ``fwhm`` (arcsec, (n_samples,))."""
    x = np.asarray(xpos, dtype=float)
    y = np.asarray(ypos, dtype=float)
    fw = np.broadcast_to(np.asarray(fwhm, dtype=float), x.shape)
    R = config.fiber_radius
    area = np.pi * R**2
    # both Gaussian widths scale with the FWHM: the components at FWHM 1, scaled per sample
    (f1, s1), (f2, s2) = double_gaussian_components(
        1.0, config.sigma_ratio, config.wing_ratio, config.wing
    )
    out = np.full(x.shape, area * float(background))
    for sx, sy, flux in sources:
        r = np.hypot(x - sx, y - sy)
        k = f1 * tophat_gaussian(r, s1 * fw, R) + f2 * tophat_gaussian(r, s2 * fw, R)
        out += area * flux * k
    return out
