"""An IFU observation: fibers, exposures (dithers, seeing, DAR) and noiseless fiber fluxes per channel.

Rows (``spectrum``) are exposure-major: spectrum s = e * n_fibers + f. Exposure ids start at 1 (so
that ids and positions differ, as in real data); fiber ids are 0-based positions in the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crrxr.core.kernel import seeing_at

from .atmosphere import dar_shift, direction
from .extended import ExtendedRenderer
from .kernels import KernelModel
from .scenes import Scene
from .wavegrid import channel_edges

# Independent random streams: SeedSequence(seed, spawn_key=(STREAM_X, ...)).
STREAM_JITTER, STREAM_SEEING, STREAM_DAR, STREAM_DEAD, STREAM_NOISE, STREAM_BADPIX = range(6)


def stream(seed: int, *key: int) -> np.random.Generator:
    """The random generator of stream ``key`` for ``seed`` (independent of every other key)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=tuple(key))))


@dataclass(frozen=True)
class Observation:
    """Geometry and conditions of a simulated IFU observation (arcsec, Angstrom)."""

    fiber_x: np.ndarray  # (n_fibers,)
    fiber_y: np.ndarray
    wavelength: np.ndarray  # (n_wave,)
    dither_x: np.ndarray  # (n_exposures,)
    dither_y: np.ndarray
    seeing_ref: np.ndarray  # (n_exposures,) FWHM at kernel.lambda_ref
    dar_pa: np.ndarray  # (n_exposures,) deg E of N: direction of the blue-ward DAR shift
    dar_amplitude: float  # arcsec between 3600 and 10000 A; 0 = no DAR
    dar_reference: float
    kernel: KernelModel = field(default_factory=KernelModel)

    @property
    def n_fibers(self) -> int:
        return self.fiber_x.size

    @property
    def n_exposures(self) -> int:
        return self.dither_x.size

    @property
    def n_spectra(self) -> int:
        return self.n_fibers * self.n_exposures

    @property
    def exposure_index(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_exposures), self.n_fibers)

    @property
    def fiber_id(self) -> np.ndarray:
        return np.tile(np.arange(self.n_fibers), self.n_exposures)

    def dar(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
        """DAR offsets (dx, dy) of channels [k0, k1) per exposure, shape (n_exposures, n)."""
        shift = dar_shift(self.wavelength[k0:k1], self.dar_amplitude, self.dar_reference)
        ux, uy = direction(self.dar_pa)
        return ux[:, None] * shift[None, :], uy[:, None] * shift[None, :]

    def positions(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
        """xpos, ypos (n_spectra, k1 - k0): fiber + dither + DAR."""
        ddx, ddy = self.dar(k0, k1)
        e, f = self.exposure_index, self.fiber_id
        x = self.fiber_x[f, None] + self.dither_x[e, None] + ddx[e]
        y = self.fiber_y[f, None] + self.dither_y[e, None] + ddy[e]
        return x, y

    def fwhm(self, k0: int, k1: int) -> np.ndarray:
        """Seeing FWHM (n_spectra, k1 - k0) in arcsec."""
        per_exp = seeing_at(
            self.seeing_ref[:, None],
            self.wavelength[None, k0:k1],
            self.kernel.lambda_ref,
            self.kernel.exponent,
        )
        return per_exp[self.exposure_index]

    def fwhm_range(self) -> tuple[float, float]:
        w = self.wavelength[[0, -1]]
        f = seeing_at(
            self.seeing_ref[:, None], w[None, :], self.kernel.lambda_ref, self.kernel.exponent
        )
        return float(f.min()), float(f.max())

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) of every fiber position at every wavelength (DAR is monotonic)."""
        xs, ys = [], []
        for k in (0, self.wavelength.size - 1):
            x, y = self.positions(k, k + 1)
            xs.append(x)
            ys.append(y)
        x, y = np.concatenate(xs), np.concatenate(ys)
        return float(x.min()), float(x.max()), float(y.min()), float(y.max())


class FluxModel:
    """Noiseless fiber fluxes (1e-17 erg/s/cm^2/A per fiber) of ``scenes`` seen through ``obs``.

    Point sources are exact: f = pi R^2 K(|p - s|; FWHM) f_lambda(s). Extended components go through
    :class:`ExtendedRenderer` (tabulated once here; see its accuracy notes).
    """

    def __init__(
        self, obs: Observation, scenes: list[Scene], *, pixel: float = 0.1, node_step: float = 0.02
    ):
        self.obs = obs
        self.points = [p for s in scenes for p in s.point_sources()]
        comps = [c for s in scenes for c in s.extended()]
        self.extended = None
        if comps:
            self.extended = ExtendedRenderer(
                comps,
                obs.kernel,
                fwhm_range=obs.fwhm_range(),
                bounds=obs.bounds(),
                pixel=pixel,
                node_step=node_step,
            )
        self.edges = channel_edges(obs.wavelength)

    def block(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flux, xpos, ypos) of channels [k0, k1), each (n_spectra, k1 - k0), float64."""
        obs = self.obs
        x, y = obs.positions(k0, k1)
        fwhm = obs.fwhm(k0, k1)
        wave = obs.wavelength[k0:k1]
        flux = np.zeros_like(x)
        area = np.pi * obs.kernel.fiber_radius**2
        for p in self.points:
            r = np.hypot(x - p.x, y - p.y)
            flux += area * obs.kernel(r, fwhm) * p.spectrum(wave)[None, :]
        if self.extended is not None:
            per_unit = self.extended.evaluate(x, y, fwhm)
            lo, hi = self.edges[k0:k1], self.edges[k0 + 1 : k1 + 1]
            for comp, values in zip(self.extended.components, per_unit):
                flux += values * comp.spectrum(wave, lo, hi)[None, :]
        return flux, x, y
