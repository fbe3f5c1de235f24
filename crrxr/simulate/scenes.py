"""Sky scenes: point sources, a binary, a Sersic disk galaxy with an emission-line map.

Coordinates in arcsec relative to the IFU centre, +x West, +y North; position angles in degrees
East of North (East = -x). Flux densities f_lambda in 1e-17 erg/s/cm^2/A (line fluxes in
1e-17 erg/s/cm^2). A scene exposes ``point_sources()`` (treated exactly), ``extended()`` (surface
brightness maps integrated numerically, see :mod:`crrxr.simulate.extended`) and ``truth()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from scipy import special

from .atmosphere import direction

SPEED_OF_LIGHT_KMS = 299792.458
HALPHA_VACUUM = 6564.61  # Angstrom
PIVOT = 5400.0  # Angstrom: flux normalisation wavelength of continua


def power_law(wave: np.ndarray, flux: float, index: float) -> np.ndarray:
    """f_lambda = flux * (wave / 5400 A)^index (index 0: flat)."""
    return flux * (np.asarray(wave, dtype=float) / PIVOT) ** index


@dataclass(frozen=True)
class ExtendedComponent:
    """A separable piece of an extended scene: S(x, y) * spectrum(lambda).

    ``surface_brightness(x, y)`` in arcsec^-2 integrates to 1 over the plane; ``spectrum(wave, lo, hi)``
    gives the total f_lambda of the component at channel centres ``wave`` with edges ``lo``/``hi``.
    ``extent`` is a radius (arcsec) around (x0, y0) beyond which S is negligible (< 1e-6 of the flux).
    """

    name: str
    surface_brightness: Callable[[np.ndarray, np.ndarray], np.ndarray]
    spectrum: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    x0: float
    y0: float
    extent: float


class Scene(Protocol):
    def point_sources(self) -> list[PointSource]: ...
    def extended(self) -> list[ExtendedComponent]: ...
    def truth(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PointSource:
    """An unresolved source at (x, y) with f_lambda = flux (lambda / 5400 A)^spectral_index."""

    x: float = 0.0
    y: float = 0.0
    flux: float = 100.0
    spectral_index: float = 0.0

    def spectrum(self, wave: np.ndarray) -> np.ndarray:
        return power_law(wave, self.flux, self.spectral_index)

    def point_sources(self) -> list[PointSource]:
        return [self]

    def extended(self) -> list[ExtendedComponent]:
        return []

    def truth(self) -> dict[str, Any]:
        return {"kind": "point", **asdict(self)}


@dataclass(frozen=True)
class Binary:
    """Two point sources: the primary at (x, y), the secondary ``separation`` arcsec away along
    ``position_angle`` (deg East of North) with flux ``contrast`` x the primary's."""

    separation: float = 2.0
    position_angle: float = 30.0
    contrast: float = 0.5
    flux: float = 100.0
    x: float = 0.0
    y: float = 0.0
    spectral_index: float = 0.0
    secondary_spectral_index: float = 0.0

    def __post_init__(self) -> None:
        if not (self.separation >= 0 and self.contrast >= 0):
            raise ValueError(
                f"binary separation and contrast must be >= 0, got {self.separation}, {self.contrast}"
            )

    @property
    def secondary_position(self) -> tuple[float, float]:
        ux, uy = direction(self.position_angle)
        return float(self.x + self.separation * ux), float(self.y + self.separation * uy)

    def point_sources(self) -> list[PointSource]:
        x2, y2 = self.secondary_position
        return [
            PointSource(self.x, self.y, self.flux, self.spectral_index),
            PointSource(x2, y2, self.flux * self.contrast, self.secondary_spectral_index),
        ]

    def extended(self) -> list[ExtendedComponent]:
        return []

    def truth(self) -> dict[str, Any]:
        x2, y2 = self.secondary_position
        return {"kind": "binary", **asdict(self), "secondary_x": x2, "secondary_y": y2}


def sersic_b(n: float) -> float:
    """b_n with Gamma(2n) gamma(2n, b_n) = Gamma(2n)/2: r_eff encloses half of the light."""
    return float(special.gammaincinv(2.0 * n, 0.5))


@dataclass(frozen=True)
class Galaxy:
    """A Sersic disk (exponential for ``sersic_n`` = 1) with an emission line.

    Continuum: total f_lambda ``flux`` at 5400 A times (lambda/5400)^spectral_index, Sersic profile of
    effective radius ``r_eff`` (semi-major axis), axis ratio ``axis_ratio``, major axis at
    ``position_angle`` (deg E of N). Line: total flux ``line_flux`` of a Gaussian at
    ``line_rest`` (1 + ``redshift``) with velocity dispersion ``sigma_kms``, in a ``line_map`` of
    ``"ring"`` (Gaussian ring of radius ``ring_radius`` and rms width ``ring_width``, elliptical radius)
    or ``"exponential"`` (scale length ``line_scale``, a radial gradient of the line-to-continuum ratio
    when it differs from the disk's). Both maps share the disk's centre, axis ratio and angle.
    """

    x: float = 0.0
    y: float = 0.0
    flux: float = 100.0
    spectral_index: float = 0.0
    sersic_n: float = 1.0
    r_eff: float = 3.0
    axis_ratio: float = 0.7
    position_angle: float = 30.0
    line_flux: float = 2000.0
    line_rest: float = HALPHA_VACUUM
    redshift: float = 0.02
    sigma_kms: float = 70.0
    line_map: str = "ring"
    ring_radius: float = 3.0
    ring_width: float = 1.0
    line_scale: float = 4.0

    def __post_init__(self) -> None:
        if self.line_map not in ("ring", "exponential"):
            raise ValueError(f"line_map must be 'ring' or 'exponential', got {self.line_map!r}")
        for name in ("r_eff", "axis_ratio", "sersic_n", "sigma_kms", "ring_width", "line_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Galaxy.{name} must be > 0, got {getattr(self, name)!r}")

    def _elliptical_radius(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ux, uy = direction(self.position_angle)  # major axis
        dx, dy = np.asarray(x) - self.x, np.asarray(y) - self.y
        major = dx * ux + dy * uy
        minor = -dx * uy + dy * ux
        return np.hypot(major, minor / self.axis_ratio)

    def disk(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        n, b = self.sersic_n, sersic_b(self.sersic_n)
        r = self._elliptical_radius(x, y)
        total = (
            2
            * np.pi
            * n
            * self.axis_ratio
            * self.r_eff**2
            * np.exp(b)
            * b ** (-2 * n)
            * special.gamma(2 * n)
        )
        return np.exp(-b * ((r / self.r_eff) ** (1.0 / n) - 1.0)) / total

    def line_surface_brightness(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = self._elliptical_radius(x, y)
        q = self.axis_ratio
        if self.line_map == "exponential":
            h = self.line_scale
            return np.exp(-r / h) / (2 * np.pi * q * h**2)
        R, w = self.ring_radius, self.ring_width
        # integral over the plane of exp(-(r-R)^2 / 2w^2) with r the elliptical radius
        total = (
            2
            * np.pi
            * q
            * (
                w**2 * np.exp(-(R**2) / (2 * w**2))
                + R * w * np.sqrt(np.pi / 2) * (1 + special.erf(R / (np.sqrt(2) * w)))
            )
        )
        return np.exp(-((r - R) ** 2) / (2 * w**2)) / total

    @property
    def line_center(self) -> float:
        return self.line_rest * (1.0 + self.redshift)

    @property
    def line_sigma(self) -> float:
        """Gaussian sigma of the line in Angstrom."""
        return self.line_center * self.sigma_kms / SPEED_OF_LIGHT_KMS

    def line_spectrum(self, wave: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Mean f_lambda of the line over each channel [lo, hi] (flux conserved on any grid)."""
        s = np.sqrt(2.0) * self.line_sigma
        frac = 0.5 * (
            special.erf((hi - self.line_center) / s) - special.erf((lo - self.line_center) / s)
        )
        return self.line_flux * frac / (hi - lo)

    def continuum_spectrum(self, wave: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return power_law(wave, self.flux, self.spectral_index)

    def point_sources(self) -> list[PointSource]:
        return []

    def extended(self) -> list[ExtendedComponent]:
        # radius enclosing all but ~1e-6 of the light (elliptical radius; the semi-major axis bounds it)
        n, b = self.sersic_n, sersic_b(self.sersic_n)
        r_disk = self.r_eff * (float(special.gammainccinv(2 * n, 1e-6)) / b) ** n
        r_line = (
            self.ring_radius + 6 * self.ring_width
            if self.line_map == "ring"
            else self.line_scale * 16.6
        )  # exp(-r/h)(1 + r/h) < 1e-6
        return [
            ExtendedComponent(
                "continuum", self.disk, self.continuum_spectrum, self.x, self.y, r_disk
            ),
            ExtendedComponent(
                "line", self.line_surface_brightness, self.line_spectrum, self.x, self.y, r_line
            ),
        ]

    def truth(self) -> dict[str, Any]:
        return {
            "kind": "galaxy",
            **asdict(self),
            "line_center": self.line_center,
            "line_sigma": self.line_sigma,
        }


SCENE_NAMES = ("point", "binary", "galaxy")


def make_scene(scene: str | Scene | Sequence[Scene]) -> list[Scene]:
    """A list of scene objects from a name (default parameters), one object or a sequence of them."""
    if isinstance(scene, str):
        factories = {"point": PointSource, "binary": Binary, "galaxy": Galaxy}
        if scene not in factories:
            raise ValueError(f"unknown scene {scene!r}; use one of {SCENE_NAMES} or scene objects")
        return [factories[scene]()]
    if isinstance(scene, Sequence):
        items = list(scene)
    else:
        items = [scene]
    for item in items:
        if not all(hasattr(item, a) for a in ("point_sources", "extended", "truth")):
            raise TypeError(f"{item!r} is not a scene (needs point_sources(), extended(), truth())")
    if not items:
        raise ValueError("the scene is empty; give at least one source")
    return items
