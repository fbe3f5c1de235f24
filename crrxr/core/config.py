"""Plain configuration of the core solvers (the engine builds it from a ``ParameterStore``).

Field names mirror the reconstruction parameter keys (docs/contracts.md sections 1 and 3); the
defaults are the paper's (Liu, Blanton & Law 2020) and the authors' code where the paper is silent.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from crrxr.core.masks import RSS_ALL_BITS

METHODS = ("crr", "shepard")
VARIANTS = ("code", "paper")
SOLVERS = ("auto", "svd", "gram")
WINGS = ("flux", "peak")


# Largest accepted crr.lambda. Above it the flux normalisation R = Q / (Q 1) can break down: with the
# default "code" variant the row sums of Q approach 0 for some pixels, and a point source of flux 100
# came back with pixels from -131 to +159 at lambda = 3e-2 (issue #9). Measured change of a point
# source image against lambda = 1e-3, max over the image / peak, over 8 geometries (MaNGA 19-61 fibers
# x 1-9 exposures at 0.5-1.0" pixels, lenslets): <= 2% at 3e-3, up to 35% at 1e-2 (19 x 9, 0.5"),
# 67x the peak at 2e-2 (docs/benchmarks.md, tests/test_core_lambda.py).
LAMBDA_MAX = 3e-3


# DEADFIBER: a pixel is flagged where dead samples would carry at least this share of its Shepard
# interpolation weight (the DRP's weights: Gaussian sigma = shepard_sigma out to shepard_rlim, every
# sample counted as if usable), i.e. where a dead fiber would have been a major contributor
# (MaNGA's "major contributing fiber is in the dead fibers list").
DEADFIBER_SHARE = 0.1


class ConfigError(ValueError):
    """A :class:`CoreConfig` value is out of range or not one of the allowed choices."""


@dataclass(frozen=True)
class CoreConfig:
    """Parameters of one reconstruction (lengths in arcsec).

    method: ``"crr"`` or ``"shepard"``. pixel_scale: output pixel side. lam: Tikhonov lambda in units
    of singular values of N~ A with A = K p^2. sv_floor: singular values below are dropped.
    variant: ``"code"`` (R from regularized singular values) or ``"paper"``. solver: ``"auto"``,
    ``"svd"`` (literal) or ``"gram"`` (exact shortcut). select_radius: pixels farther than this from
    every sample are not solved. truncation_radius: kernel is zero beyond. fiber_radius: top-hat
    radius. shepard_sigma / shepard_rlim: Shepard's Gaussian width and cut. sigma_ratio / wing_ratio /
    wing: double-Gaussian seeing model. bad_bits: RSS mask bits that make a sample unusable.
    lowcov_threshold: LOWCOV when diag(W N~ W^T) > threshold x median of the nonzero values.
    deadfiber_share: DEADFIBER where dead samples would carry >= this share (0, 1] of the pixel's
    Shepard weight.
    reuse_tolerance: > 0 lets the engine interpolate CRR weights between exact node channels with
    this certified flux error bound (noise-sigma units; :mod:`crrxr.core.reuse`); 0 = exact.
    """

    method: str = "crr"
    pixel_scale: float = 0.75
    lam: float = 1e-3
    sv_floor: float = 1e-6
    variant: str = "code"
    solver: str = "auto"
    select_radius: float = 1.6
    truncation_radius: float = 4.0
    fiber_radius: float = 1.0
    shepard_sigma: float = 0.7
    shepard_rlim: float = 1.6
    sigma_ratio: float = 2.0
    wing_ratio: float = 1.0 / 9.0
    wing: str = "flux"
    bad_bits: int = RSS_ALL_BITS
    lowcov_threshold: float = 2.0
    deadfiber_share: float = DEADFIBER_SHARE
    reuse_tolerance: float = 0.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name, allowed in (
            ("method", METHODS),
            ("variant", VARIANTS),
            ("solver", SOLVERS),
            ("wing", WINGS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                problems.append(f"{name}={value!r} is not one of {allowed}")
        positive = (
            "pixel_scale",
            "select_radius",
            "truncation_radius",
            "fiber_radius",
            "shepard_sigma",
            "shepard_rlim",
            "sigma_ratio",
            "lowcov_threshold",
            "deadfiber_share",
        )
        non_negative = ("lam", "sv_floor", "wing_ratio", "reuse_tolerance")
        for name in positive + non_negative:
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
            ):
                problems.append(f"{name}={value!r} must be a finite number")
            elif name in positive and value <= 0:
                problems.append(f"{name}={value!r} must be > 0")
            elif value < 0:
                problems.append(f"{name}={value!r} must be >= 0")
        if isinstance(self.deadfiber_share, numbers.Real) and self.deadfiber_share > 1:
            problems.append(
                f"deadfiber_share={self.deadfiber_share!r} must be <= 1 (a share of the pixel's "
                "Shepard weight)"
            )
        if isinstance(self.lam, numbers.Real) and self.lam > LAMBDA_MAX:
            problems.append(
                f"lam={self.lam!r} is above {LAMBDA_MAX:g}, where the CRR flux normalisation breaks "
                "down (docs/benchmarks.md); use a smaller crr.lambda (the paper's is 1e-3)"
            )
        if (
            isinstance(self.bad_bits, bool)
            or not isinstance(self.bad_bits, numbers.Integral)
            or not 0 <= self.bad_bits < 2**32
        ):
            problems.append(f"bad_bits={self.bad_bits!r} must be an integer bit mask in [0, 2**32)")
        if problems:
            raise ConfigError("invalid CoreConfig: " + "; ".join(problems))

    @property
    def flux_factor(self) -> float:
        """Per-fiber to per-spaxel conversion pixel_scale^2 / (pi fiber_radius^2)."""
        return self.pixel_scale**2 / (math.pi * self.fiber_radius**2)

    @property
    def neighbour_radius(self) -> float:
        """Largest sample-pixel distance any part of the solve looks at (arcsec)."""
        return max(self.truncation_radius, self.select_radius, self.shepard_rlim)
