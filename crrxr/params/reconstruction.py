"""The reconstruction parameters (every number that shapes a cube) and their derived values.

``reconstruction_spec()`` builds the spec (system id ``crrxr.reconstruction``; the keys of
``docs/contracts.md`` section 1). ``reconstruction_resolver()`` returns a fresh
:class:`DerivedResolver` with the transforms below registered (nothing is registered at import).

Derived values and their inputs:

- ``grid.nside`` (odd): ``(ceil(L / p) // 2) * 2 + 1`` for the extent ``L`` and pixel ``p`` (the
  authors' code). With ``grid.extent_arcsec = 0`` (automatic) the extent comes from the fiber
  positions: ``L = 2 * max(max(|xpos|, |ypos|) + grid.margin_arcsec, p / 2)`` over the samples
  whose ``xpos`` and ``ypos`` are both finite, from the context arrays ``xpos``/``ypos`` (arcsec),
  the same rule as ``crrxr.core.grid.Grid.covering``; without them the transform raises
  :class:`MissingContextError` (the engine passes the RSS positions).
- ``grid.length_arcsec = nside * p``.
- ``output.flux_factor = p**2 / (pi * r_fiber**2)`` (per-fiber flux -> per-spaxel flux).
- ``seeing.fwhm_arcsec`` (exposure, wavelength) ``= seeing_fwhm_ref[e] * (wavelength / lambda_ref)
  ** exponent`` from the context arrays ``wavelength`` (Angstrom) and ``seeing_fwhm_ref`` (arcsec).
- ``seeing.sigma1_arcsec = FWHM / 2.355 / 1.05`` and ``seeing.sigma2_arcsec = sigma_ratio * sigma1``
  (the authors' code; the 1.05 widens the inner Gaussian so that the double Gaussian has the
  measured FWHM).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from crrxr.core.config import DEADFIBER_SHARE, LAMBDA_MAX

from .errors import MissingContextError, ParamValidationError, ResolveError
from .field import ParamField
from .resolver import DerivedResolver
from .spec import ParamSpec
from .store import ParameterStore

SYSTEM_ID = "crrxr.reconstruction"
SPEC_NAME = "reconstruction"
SCHEMA_VERSION = 1

# sigma1 = FWHM / FWHM_TO_SIGMA / INNER_WIDENING (the authors' code)
FWHM_TO_SIGMA = 2.355
INNER_WIDENING = 1.05
# SDSS g, r, i, z pivot wavelengths (Angstrom): default channels for stored correlation matrices
SDSS_GRIZ_ANGSTROM = (4702.50, 6176.58, 7496.12, 8946.71)
RSS_ALL_BAD_BITS = 0b11111  # NODATA | DEADFIBER | REJECT | NOSKY | SATURATED (crrxr.core.masks)

POSITIVE = "(0, inf)"
NON_NEGATIVE = "[0, inf)"


#: Keys added to the spec after cubes were first written, with the value every earlier build used
#: (a constant then). A cube or store written before a key existed is read with that value, so
#: fits see the settings it was built with and a resumed build finishes it as it began.
ADDED_KEYS: dict[str, Any] = {"mask.deadfiber_share": DEADFIBER_SHARE}


def with_added_keys(store: ParameterStore) -> ParameterStore:
    """``store`` (read from a cube's attrs) with the :data:`ADDED_KEYS` it lacks set to the value
    its build used."""
    missing = {k: v for k, v in ADDED_KEYS.items() if k not in store}
    return store.replace(missing) if missing else store


def reconstruction_spec() -> ParamSpec:
    """The reconstruction parameter spec (a new, immutable object on each call)."""
    F = ParamField
    fields = [
        F(
            "method",
            "",
            dtype="str",
            default="crr",
            choices=("crr", "shepard"),
            doc="Reconstruction method: CRR (Liu, Blanton & Law 2020) or Shepard's method (MaNGA DRP).",
        ),
        # -- output grid
        F(
            "grid.pixel_scale_arcsec",
            "arcsec",
            default=0.75,
            bounds=POSITIVE,
            doc="Output pixel (spaxel) size.",
        ),
        F(
            "grid.extent_arcsec",
            "arcsec",
            default=0.0,
            bounds=NON_NEGATIVE,
            doc="Side of the square output grid; 0 = automatic (all fiber positions + margin).",
        ),
        F(
            "grid.margin_arcsec",
            "arcsec",
            default=2.0,
            bounds=NON_NEGATIVE,
            doc="Margin added around the fiber positions for the automatic extent.",
        ),
        # -- CRR
        F(
            "crr.lambda",
            "",
            default=1e-3,
            bounds=f"[0, {LAMBDA_MAX!r}]",
            doc="Tikhonov regularization lambda (Eq. 19-20), in units of the singular values of N~ A "
            "(A = kernel x pixel^2). At most 3e-3: above it the flux normalisation breaks down "
            "(crrxr.core.config.LAMBDA_MAX, docs/benchmarks.md).",
        ),
        F(
            "crr.sv_floor",
            "",
            default=1e-6,
            bounds=NON_NEGATIVE,
            doc="Singular values below this floor are dropped.",
        ),
        F(
            "crr.variant",
            "",
            dtype="str",
            default="code",
            choices=("code", "paper"),
            doc="R from the regularized (authors' code) or unregularized (paper text) singular values.",
        ),
        F(
            "crr.solver",
            "",
            dtype="str",
            default="auto",
            choices=("auto", "svd", "gram"),
            doc="Linear algebra route: SVD of N~ A, the Gram-matrix eigendecomposition, or automatic.",
        ),
        F(
            "crr.reuse_tolerance",
            "",
            default=0.0,
            bounds=NON_NEGATIVE,
            doc="Weight reuse across wavelength (crrxr.core.reuse): largest certified |flux - exact| in "
            "units of each spaxel's noise sigma for channels whose weights are interpolated between "
            "exact node solves; 0 = solve every channel exactly.",
        ),
        F(
            "crr.select_radius_arcsec",
            "arcsec",
            default=1.6,
            bounds=POSITIVE,
            doc="Pixels farther than this from every sample are not solved (NOCOV).",
        ),
        # -- kernel
        F(
            "kernel.truncation_radius_arcsec",
            "arcsec",
            default=4.0,
            bounds=POSITIVE,
            doc="The kernel matrix A[i, j] is zero beyond this sample-pixel distance.",
        ),
        F(
            "kernel.fiber_radius_arcsec",
            "arcsec",
            default=1.0,
            bounds=POSITIVE,
            doc="Fiber (top-hat) radius convolved with the seeing.",
        ),
        # -- Shepard
        F(
            "shepard.sigma_arcsec",
            "arcsec",
            default=0.7,
            bounds=POSITIVE,
            doc="Gaussian width of Shepard's weights.",
        ),
        F(
            "shepard.rlim_arcsec",
            "arcsec",
            default=1.6,
            bounds=POSITIVE,
            doc="Shepard's weights are zero beyond this distance.",
        ),
        # -- seeing model
        F(
            "seeing.lambda_ref_angstrom",
            "Angstrom",
            default=5400.0,
            bounds=POSITIVE,
            doc="Wavelength at which the RSS seeing_fwhm is given.",
        ),
        F(
            "seeing.exponent",
            "",
            default=-0.2,
            bounds="[-2, 2]",
            doc="FWHM(lambda) = FWHM(ref) (lambda / ref)^exponent.",
        ),
        F(
            "seeing.sigma_ratio",
            "",
            default=2.0,
            bounds=POSITIVE,
            doc="sigma2 / sigma1 of the double-Gaussian seeing.",
        ),
        F(
            "seeing.wing_ratio",
            "",
            default=1.0 / 9.0,
            bounds=NON_NEGATIVE,
            doc="Outer / inner Gaussian ratio of the seeing.",
        ),
        F(
            "seeing.wing_convention",
            "",
            dtype="str",
            default="flux",
            choices=("flux", "peak"),
            doc="wing_ratio is a ratio of integrals (authors' code) or of central values (paper text).",
        ),
        # -- masks
        F(
            "mask.bad_bits",
            "",
            dtype="int64",
            default=RSS_ALL_BAD_BITS,
            bounds=(0, 2**32 - 1),
            doc="RSS mask bits that make a sample unusable (default: all crrxr RSS bits, 0b11111).",
        ),
        F(
            "mask.lowcov_threshold",
            "",
            default=2.0,
            bounds=POSITIVE,
            doc="LOWCOV where diag(W N~ W^T) > threshold x median of its nonzero values.",
        ),
        F(
            "mask.deadfiber_share",
            "",
            default=DEADFIBER_SHARE,
            bounds="(0, 1]",
            doc=(
                "DEADFIBER where samples flagged dead would carry >= this share of the pixel's "
                "Shepard weight (MaNGA's 'major contributing fiber is dead'); small values flag "
                "every pixel a dead fiber reaches."
            ),
        ),
        # -- outputs
        F(
            "output.correlation_wavelengths_angstrom",
            "Angstrom",
            shape=(-1,),
            default=SDSS_GRIZ_ANGSTROM,
            bounds=POSITIVE,
            doc="Wavelengths whose nearest channels get a stored correlation matrix and PSF image.",
        ),
        F(
            "output.correlation_bands",
            "",
            dtype="str",
            default="g,r,i,z",
            doc="Comma-separated band names, one per correlation wavelength.",
        ),
        F(
            "output.correlation_max_sep_arcsec",
            "arcsec",
            default=5.0,
            bounds=NON_NEGATIVE,
            doc="Pixel pairs up to this separation are stored in the sparse correlation.",
        ),
        F(
            "output.dtype",
            "",
            dtype="str",
            default="float32",
            choices=("float32", "float64"),
            doc="dtype of the flux and ivar cubes.",
        ),
        # -- engine
        F(
            "engine.wave_chunk",
            "",
            dtype="int64",
            default=64,
            bounds=(0, 1_000_000),
            doc="Wavelength channels per chunk (0 = from the memory budget).",
        ),
        # -- sky subtraction (crrxr.io.sky)
        F(
            "sky.enabled",
            "",
            dtype="bool",
            default=False,
            doc="Subtract a per-exposure sky before the solve (needs sky_fiber or sky in the RSS).",
        ),
        F(
            "sky.method",
            "",
            dtype="str",
            default="mean",
            choices=("mean", "median"),
            doc="Sky from the usable sky-fiber samples: inverse-variance weighted mean or median.",
        ),
        # -- derived
        F(
            "grid.nside",
            "",
            kind="derived",
            dtype="int64",
            depends_on=("grid.extent_arcsec", "grid.pixel_scale_arcsec", "grid.margin_arcsec"),
            bounds=(1, 1_000_000),
            doc="Pixels per side (odd): (ceil(extent / pixel) // 2) * 2 + 1; automatic extent from positions.",
        ),
        F(
            "grid.length_arcsec",
            "arcsec",
            kind="derived",
            bounds=POSITIVE,
            depends_on=("grid.nside", "grid.pixel_scale_arcsec"),
            doc="Side of the output grid: nside x pixel scale.",
        ),
        F(
            "output.flux_factor",
            "",
            kind="derived",
            bounds=POSITIVE,
            depends_on=("grid.pixel_scale_arcsec", "kernel.fiber_radius_arcsec"),
            doc="Per-fiber to per-spaxel flux factor: pixel^2 / (pi r_fiber^2).",
        ),
        F(
            "seeing.fwhm_arcsec",
            "arcsec",
            kind="derived",
            shape=(-1, -1),
            bounds=POSITIVE,
            depends_on=("seeing.lambda_ref_angstrom", "seeing.exponent"),
            doc="Seeing FWHM per (exposure, wavelength) from context seeing_fwhm_ref and wavelength.",
        ),
        F(
            "seeing.sigma1_arcsec",
            "arcsec",
            kind="derived",
            shape=(-1, -1),
            bounds=POSITIVE,
            depends_on=("seeing.fwhm_arcsec",),
            doc="Inner Gaussian sigma per (exposure, wavelength): FWHM / 2.355 / 1.05.",
        ),
        F(
            "seeing.sigma2_arcsec",
            "arcsec",
            kind="derived",
            shape=(-1, -1),
            bounds=POSITIVE,
            depends_on=("seeing.sigma1_arcsec", "seeing.sigma_ratio"),
            doc="Outer Gaussian sigma per (exposure, wavelength): sigma_ratio x sigma1.",
        ),
    ]
    return ParamSpec(fields, SPEC_NAME, SYSTEM_ID, SCHEMA_VERSION)


def check_reconstruction(store: Mapping[str, Any]) -> None:
    """Rules across keys that a single field cannot express; raises :class:`ParamValidationError`.

    - ``output.correlation_bands`` names one band per ``output.correlation_wavelengths_angstrom``.
    """
    if "output.correlation_bands" in store and "output.correlation_wavelengths_angstrom" in store:
        bands = [b.strip() for b in str(store["output.correlation_bands"]).split(",")]
        n_wave = np.asarray(store["output.correlation_wavelengths_angstrom"]).size
        if n_wave == 0 and bands == [""]:
            return
        if len(bands) != n_wave or not all(bands) or len(set(bands)) != len(bands):
            raise ParamValidationError(
                f"output.correlation_bands: {store['output.correlation_bands']!r} must name "
                f"{n_wave} distinct band(s), one per output.correlation_wavelengths_angstrom"
            )


def odd_nside(extent_arcsec: float, pixel_scale_arcsec: float) -> int:
    """``(ceil(L / p) // 2) * 2 + 1`` (authors' code); ``L / p`` within 1e-9 of an integer counts as
    that integer (``2.25 / 0.75`` is 3.0000000000000004 in floats), as in ``crrxr.core.grid``."""
    return (math.ceil(extent_arcsec / pixel_scale_arcsec - 1e-9) // 2) * 2 + 1


def _positive_1d(ctx: Mapping[str, Any], name: str, units: str) -> np.ndarray:
    arr = np.asarray(ctx[name], dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ResolveError(
            f"context {name!r} must be a non-empty 1-D array ({units}), got shape {arr.shape}"
        )
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ResolveError(f"context {name!r} ({units}) must be finite and > 0 everywhere")
    return arr


def reconstruction_resolver() -> DerivedResolver:
    """A fresh resolver for ``crrxr.reconstruction`` with the derived transforms registered."""
    r = DerivedResolver(SYSTEM_ID)

    @r.register_transform(
        "grid.nside",
        depends_on=("grid.extent_arcsec", "grid.pixel_scale_arcsec", "grid.margin_arcsec"),
    )
    def _nside(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> int:
        extent = p["grid.extent_arcsec"]
        if extent == 0:
            if "xpos" not in ctx or "ypos" not in ctx:
                raise MissingContextError(
                    f"[{SYSTEM_ID}] grid.nside: grid.extent_arcsec = 0 means automatic (from the fiber "
                    "positions); pass context={'xpos': ..., 'ypos': ...} (arcsec) or set "
                    "grid.extent_arcsec > 0"
                )
            x = np.asarray(ctx["xpos"], dtype=np.float64).ravel()
            y = np.asarray(ctx["ypos"], dtype=np.float64).ravel()
            if x.shape != y.shape:
                raise ResolveError(
                    f"grid.nside: context xpos {x.shape} and ypos {y.shape} differ in size"
                )
            ok = np.isfinite(x) & np.isfinite(y)
            if not ok.any():
                raise ResolveError("grid.nside: context xpos/ypos have no finite position")
            half = max(np.abs(x[ok]).max(), np.abs(y[ok]).max()) + p["grid.margin_arcsec"]
            extent = 2.0 * max(float(half), 0.5 * p["grid.pixel_scale_arcsec"])
        return odd_nside(extent, p["grid.pixel_scale_arcsec"])

    @r.register_transform(
        "grid.length_arcsec", depends_on=("grid.nside", "grid.pixel_scale_arcsec")
    )
    def _length(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> float:
        return float(p["grid.nside"] * p["grid.pixel_scale_arcsec"])

    @r.register_transform(
        "output.flux_factor", depends_on=("grid.pixel_scale_arcsec", "kernel.fiber_radius_arcsec")
    )
    def _flux_factor(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> float:
        return float(
            p["grid.pixel_scale_arcsec"] ** 2 / (math.pi * p["kernel.fiber_radius_arcsec"] ** 2)
        )

    @r.register_transform(
        "seeing.fwhm_arcsec",
        depends_on=("seeing.lambda_ref_angstrom", "seeing.exponent"),
        context=("wavelength", "seeing_fwhm_ref"),
    )
    def _fwhm(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> np.ndarray:
        wave = _positive_1d(ctx, "wavelength", "Angstrom")
        ref = _positive_1d(ctx, "seeing_fwhm_ref", "arcsec")
        scale = (wave / p["seeing.lambda_ref_angstrom"]) ** p["seeing.exponent"]
        return ref[:, None] * scale[None, :]

    @r.register_transform("seeing.sigma1_arcsec", depends_on=("seeing.fwhm_arcsec",))
    def _sigma1(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> np.ndarray:
        return (
            np.asarray(p["seeing.fwhm_arcsec"], dtype=np.float64) / FWHM_TO_SIGMA / INNER_WIDENING
        )

    @r.register_transform(
        "seeing.sigma2_arcsec", depends_on=("seeing.sigma1_arcsec", "seeing.sigma_ratio")
    )
    def _sigma2(p: Mapping[str, Any], ctx: Mapping[str, Any]) -> np.ndarray:
        return p["seeing.sigma_ratio"] * np.asarray(p["seeing.sigma1_arcsec"], dtype=np.float64)

    return r
