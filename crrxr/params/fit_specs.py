"""Parameter specs of the fitted models (PSF, point source, binary), declared once.

Fits (:mod:`crrxr.fit`) store their values under these keys and the simulator's truth
(:mod:`crrxr.simulate.truth`) uses the same fields, so a fit and the truth it should recover share
names, units and bounds. Each model has its own system id and a :class:`DerivedResolver` factory
for its derived keys (nothing registered at import).

Positions are arcsec in the cube/RSS frame (+x West, +y North); position angles are degrees East of
North; fluxes are the total flux density of a source, 1e-17 erg/s/cm2/Angstrom.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .field import ParamField
from .resolver import DerivedResolver
from .spec import ParamSpec

FLUX_UNITS = "1e-17 erg / (s cm2 Angstrom)"
SURFACE_UNITS = "1e-17 erg / (s cm2 Angstrom arcsec2)"

PSF_SYSTEM = "crrxr.fit.psf"
SOURCE_SYSTEM = "crrxr.fit.source"
BINARY_SYSTEM = "crrxr.fit.binary"


def _pos(prefix: str, what: str) -> list[ParamField]:
    return [
        ParamField(f"{prefix}.x_arcsec", "arcsec", default=0.0, doc=f"{what} x (+ West)"),
        ParamField(f"{prefix}.y_arcsec", "arcsec", default=0.0, doc=f"{what} y (+ North)"),
    ]


def psf_spec() -> ParamSpec:
    """The reconstructed PSF: the kernel model (seeing x fiber top hat) fitted to an image."""
    F = ParamField
    return ParamSpec(
        [
            F(
                "psf.seeing_fwhm_arcsec",
                "arcsec",
                default=1.2,
                bounds="(0, 20]",
                doc="seeing FWHM of the kernel model that fits the image",
            ),
            *_pos("psf", "centre"),
            F("psf.amplitude", FLUX_UNITS, default=1.0, doc="total flux of the fitted kernel"),
            F(
                "psf.fwhm_arcsec",
                "arcsec",
                kind="derived",
                doc="FWHM of the fitted kernel image (the reconstructed PSF's FWHM)",
                depends_on=("psf.seeing_fwhm_arcsec",),
            ),
            F(
                "psf.strehl",
                "",
                kind="derived",
                doc="pseudo-Strehl: image peak / peak of the fitted kernel (context: image peak)",
                depends_on=("psf.seeing_fwhm_arcsec", "psf.amplitude"),
            ),
        ],
        name="psf_fit",
        system_id=PSF_SYSTEM,
    )


def source_spec() -> ParamSpec:
    """One point source on a flat background."""
    F = ParamField
    return ParamSpec(
        [
            *_pos("source", "position"),
            F("source.flux", FLUX_UNITS, default=1.0, doc="total flux density"),
            F("source.background", SURFACE_UNITS, default=0.0, doc="flat background"),
        ],
        name="source_fit",
        system_id=SOURCE_SYSTEM,
    )


def binary_spec() -> ParamSpec:
    """Two point sources: primary position, separation, position angle, contrast, total flux."""
    F = ParamField
    derived = ("binary.x_arcsec", "binary.y_arcsec", "binary.separation_arcsec")
    return ParamSpec(
        [
            *_pos("binary", "primary"),
            F("binary.separation_arcsec", "arcsec", default=2.0, bounds="[0, inf)"),
            F(
                "binary.position_angle_deg",
                "deg",
                default=0.0,
                doc="of the secondary, East of North",
            ),
            F("binary.contrast", "", default=0.5, bounds="[0, inf)", doc="secondary / primary"),
            F("binary.flux_total", FLUX_UNITS, default=1.0, doc="primary + secondary"),
            F(
                "binary.secondary_x_arcsec",
                "arcsec",
                kind="derived",
                depends_on=(*derived, "binary.position_angle_deg"),
            ),
            F(
                "binary.secondary_y_arcsec",
                "arcsec",
                kind="derived",
                depends_on=(*derived, "binary.position_angle_deg"),
            ),
            F(
                "binary.flux_primary",
                FLUX_UNITS,
                kind="derived",
                depends_on=("binary.flux_total", "binary.contrast"),
            ),
            F(
                "binary.flux_secondary",
                FLUX_UNITS,
                kind="derived",
                depends_on=("binary.flux_total", "binary.contrast"),
            ),
        ],
        name="binary_fit",
        system_id=BINARY_SYSTEM,
    )


def psf_resolver(kernel_fwhm, kernel_peak) -> DerivedResolver:
    """Resolver of the PSF spec. ``kernel_fwhm(seeing)`` -> FWHM of the kernel image (arcsec);
    ``kernel_peak(seeing)`` -> per-spaxel peak of a unit-flux kernel image. Context ``peak``: the
    image maximum (for ``psf.strehl``)."""
    r = DerivedResolver(PSF_SYSTEM)

    @r.register_transform("psf.fwhm_arcsec", depends_on=("psf.seeing_fwhm_arcsec",))
    def _fwhm(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> float:
        return float(kernel_fwhm(p["psf.seeing_fwhm_arcsec"]))

    @r.register_transform(
        "psf.strehl", depends_on=("psf.seeing_fwhm_arcsec", "psf.amplitude"), context=("peak",)
    )
    def _strehl(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> float:
        model_peak = p["psf.amplitude"] * kernel_peak(p["psf.seeing_fwhm_arcsec"])
        return float(ctx["peak"] / model_peak) if model_peak > 0 else math.nan

    return r


def source_resolver() -> DerivedResolver:
    """Resolver of the source spec (no derived keys)."""
    return DerivedResolver(SOURCE_SYSTEM)


def binary_resolver() -> DerivedResolver:
    """Resolver of the binary spec: the secondary's position and the two fluxes."""
    r = DerivedResolver(BINARY_SYSTEM)
    geo = (
        "binary.x_arcsec",
        "binary.y_arcsec",
        "binary.separation_arcsec",
        "binary.position_angle_deg",
    )

    @r.register_transform("binary.secondary_x_arcsec", depends_on=geo)
    def _x2(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> float:
        pa = math.radians(p["binary.position_angle_deg"])
        return float(p["binary.x_arcsec"] - p["binary.separation_arcsec"] * math.sin(pa))

    @r.register_transform("binary.secondary_y_arcsec", depends_on=geo)
    def _y2(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> float:
        pa = math.radians(p["binary.position_angle_deg"])
        return float(p["binary.y_arcsec"] + p["binary.separation_arcsec"] * math.cos(pa))

    @r.register_transform(
        "binary.flux_primary", depends_on=("binary.flux_total", "binary.contrast")
    )
    def _f1(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> float:
        return float(p["binary.flux_total"] / (1.0 + p["binary.contrast"]))

    @r.register_transform(
        "binary.flux_secondary", depends_on=("binary.flux_total", "binary.contrast")
    )
    def _f2(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> float:
        c = p["binary.contrast"]
        return float(p["binary.flux_total"] * c / (1.0 + c))

    return r
