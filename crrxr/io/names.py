"""Every name of the RSS data model in one place (DESIGN.md section 2), plus the table validation uses.

Readers and writers (validation, the simulator, MaNGA ingest, the engine) import these constants
instead of spelling the strings, so that a rename is one edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Dimensions.
DIM_SPECTRUM = "spectrum"
DIM_WAVELENGTH = "wavelength"
DIM_EXPOSURE = "exposure"

# Coordinates.
WAVELENGTH = "wavelength"
EXPOSURE = "exposure"
SPECTRUM = "spectrum"
FIBER = "fiber"

# Data variables.
EXPOSURE_INDEX = "exposure_index"
FLUX = "flux"
IVAR = "ivar"
MASK = "mask"
XPOS = "xpos"
YPOS = "ypos"
SEEING_FWHM = "seeing_fwhm"
# Optional line-spread function: Gaussian sigma (Angstrom) per sample, before pixelization (MaNGA
# LSFPRE) and after it (MaNGA LSFPOST). The build propagates each one present into the cube.
LSF_SIGMA = "lsf_sigma"
LSF_SIGMA_POST = "lsf_sigma_post"
LSF_VARIABLES: tuple[str, ...] = (LSF_SIGMA, LSF_SIGMA_POST)

# Dataset attrs.
ATTR_IFU_RA = "ifu_ra"  # deg
ATTR_IFU_DEC = "ifu_dec"  # deg
ATTR_PARAMSPEC = "crrxr_paramspec"  # reconstruction parameters (crrxr.params codec), optional
ATTR_PARAMS = "crrxr_params"
ATTR_RSS_SCHEMA = "crrxr_rss_schema"  # "crrxr.rss/<version>"; optional, checked when present
ATTR_FIBER_RADIUS = (
    "fiber_radius_arcsec"  # fiber/lenslet top-hat radius, optional hint for the engine
)
ATTR_TRUTH_SPEC = "crrxr_truth_paramspec"  # simulator truth (crrxr.params codec, own spec)
ATTR_TRUTH = "crrxr_truth"
ATTR_HISTORY = "history"
ATTR_UNITS = "units"

RSS_SCHEMA_NAME = "crrxr.rss"
RSS_SCHEMA_VERSION = 1
RSS_SCHEMA_ID = f"{RSS_SCHEMA_NAME}/{RSS_SCHEMA_VERSION}"
KNOWN_RSS_SCHEMAS = (RSS_SCHEMA_ID,)

# Per fiber. One string each, parsed alike by astropy (generic and FITS formats) and by UDUNITS
# (CF); the cube uses the same strings (crrxr.io.cube) and so does the FITS BUNIT.
FLUX_UNITS = "10^-17 erg/(Angstrom cm2 s)"
IVAR_UNITS = "10^34 Angstrom2 cm4 s2/erg2"  # FLUX_UNITS ** -2


@dataclass(frozen=True)
class VariableSpec:
    """Expected dims, allowed dtypes and units of one RSS variable or coordinate.

    ``dtypes`` lists the accepted numpy dtypes exactly (native byte order is not required);
    ``integer_kinds`` accepts any integer dtype of those kinds instead (ids and indices).
    ``units`` is the expected unit (astropy string) or None when any unit is fine.
    """

    name: str
    dims: tuple[str, ...]
    dtypes: tuple[str, ...] = ()
    integer_kinds: str = ""
    units: str | None = None
    coord: bool = False
    long_name: str = ""

    def accepts(self, dtype: np.dtype) -> bool:
        dtype = np.dtype(dtype)
        if self.integer_kinds:
            return dtype.kind in self.integer_kinds
        return any(dtype == np.dtype(d) for d in self.dtypes)

    def describe_dtype(self) -> str:
        if self.integer_kinds:
            kinds = {"i": "signed", "u": "unsigned"}
            return (
                " or ".join(f"any {kinds[k]} integer" for k in self.integer_kinds)
                + " (int64 preferred)"
            )
        return " or ".join(np.dtype(d).name for d in self.dtypes)


_SW = (DIM_SPECTRUM, DIM_WAVELENGTH)

# The RSS schema. The mask must be exactly uint32: MaNGA's signed int32 masks are mapped onto
# crrxr's own bits at ingest, and a float mask (xarray's CF decoding) would hide the bits.
RSS_VARIABLES: tuple[VariableSpec, ...] = (
    VariableSpec(
        WAVELENGTH,
        (DIM_WAVELENGTH,),
        ("f8",),
        units="Angstrom",
        coord=True,
        long_name="wavelength (strictly increasing)",
    ),
    VariableSpec(
        EXPOSURE, (DIM_EXPOSURE,), integer_kinds="iu", coord=True, long_name="exposure id"
    ),
    VariableSpec(
        SPECTRUM,
        (DIM_SPECTRUM,),
        integer_kinds="iu",
        coord=True,
        long_name="row id (one fiber in one exposure)",
    ),
    VariableSpec(
        FIBER,
        (DIM_SPECTRUM,),
        integer_kinds="iu",
        coord=True,
        long_name="fiber id within the bundle",
    ),
    VariableSpec(
        EXPOSURE_INDEX, (DIM_SPECTRUM,), integer_kinds="iu", long_name="index into the exposure dim"
    ),
    VariableSpec(FLUX, _SW, ("f4", "f8"), long_name="flux per fiber"),
    VariableSpec(IVAR, _SW, ("f4", "f8"), long_name="inverse variance of flux; 0 = no data"),
    VariableSpec(MASK, _SW, ("u4",), long_name="crrxr RSS mask bits"),
    VariableSpec(
        XPOS,
        _SW,
        ("f8",),
        units="arcsec",
        long_name="fiber centre, +x = West, relative to the IFU centre",
    ),
    VariableSpec(
        YPOS,
        _SW,
        ("f8",),
        units="arcsec",
        long_name="fiber centre, +y = North, relative to the IFU centre",
    ),
    VariableSpec(
        SEEING_FWHM,
        (DIM_EXPOSURE,),
        ("f8",),
        units="arcsec",
        long_name="seeing FWHM at seeing.lambda_ref_angstrom",
    ),
)
# Optional variables: checked like the others when present, never required.
RSS_OPTIONAL_VARIABLES: tuple[VariableSpec, ...] = (
    VariableSpec(
        LSF_SIGMA,
        _SW,
        ("f4", "f8"),
        units="Angstrom",
        long_name="line-spread function Gaussian sigma before pixelization (MaNGA LSFPRE)",
    ),
    VariableSpec(
        LSF_SIGMA_POST,
        _SW,
        ("f4", "f8"),
        units="Angstrom",
        long_name="line-spread function Gaussian sigma after pixelization (MaNGA LSFPOST)",
    ),
)
RSS_SPECS: dict[str, VariableSpec] = {v.name: v for v in RSS_VARIABLES + RSS_OPTIONAL_VARIABLES}
RSS_COORDS: tuple[str, ...] = tuple(v.name for v in RSS_VARIABLES if v.coord)
RSS_DATA_VARS: tuple[str, ...] = tuple(v.name for v in RSS_VARIABLES if not v.coord)
# Variables with a wavelength dimension: chunked along wavelength, written region by region.
RSS_SPECTRAL_VARS: tuple[str, ...] = (FLUX, IVAR, MASK, XPOS, YPOS)
