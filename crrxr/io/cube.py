"""The cube store layout (docs/contracts.md section 4): names, the lazy template, band and pair choice.

Every name of a cube variable, coordinate or dimension lives here; the engine writes the template with
``to_zarr(compute=False)`` and fills it region by region (zarr chunks aligned with wavelength chunks).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dask.array as da
import numpy as np
import xarray as xr

from crrxr.core.masks import CUBE_BITS
from crrxr.io.names import FLUX_UNITS as RSS_FLUX_UNITS
from crrxr.io.names import IVAR_UNITS as RSS_IVAR_UNITS

# --- names (the single place they are spelled) ------------------------------------------------
WAVELENGTH = "wavelength"
X = "x"
Y = "y"
BAND = "band"
PAIR = "pair"
WAVELENGTH_CHUNK = "wavelength_chunk"

FLUX = "flux"
IVAR = "ivar"
MASK = "mask"
CHUNK_DONE = "chunk_done"
CHANNEL_FAILED = "channel_failed"
CHANNEL_EXACT = "channel_exact"
REUSE_BOUND = "reuse_bound"
PSF = "psf"
CORRELATION = "correlation"
BAND_WAVELENGTH = "band_wavelength"
BAND_INDEX = "band_index"
PAIR_I = "pair_i"
PAIR_J = "pair_j"
# Optional: cube line-spread function (Gaussian sigma, Angstrom), present when the RSS has one.
LSF_SIGMA = "lsf_sigma"  # before pixelization (MaNGA LSFPRE)
LSF_SIGMA_POST = "lsf_sigma_post"  # after pixelization (MaNGA LSFPOST)
LSF_VARIABLES: tuple[str, ...] = (LSF_SIGMA, LSF_SIGMA_POST)

#: Variables written per wavelength chunk (region along ``wavelength``).
CHUNK_VARIABLES: tuple[str, ...] = (FLUX, IVAR, MASK, CHANNEL_FAILED, CHANNEL_EXACT, REUSE_BOUND)
#: Variables written per band (one zarr chunk per band).
BAND_VARIABLES: tuple[str, ...] = (PSF, CORRELATION)
DATA_VARIABLES: tuple[str, ...] = (
    FLUX,
    IVAR,
    MASK,
    CHANNEL_FAILED,
    CHANNEL_EXACT,
    REUSE_BOUND,
    CHUNK_DONE,
    PSF,
    CORRELATION,
    BAND_WAVELENGTH,
    BAND_INDEX,
)

# Attribute names.
ATTR_PARAMSPEC = "crrxr_paramspec"
ATTR_PARAMS = "crrxr_params"
ATTR_VERSION = "crrxr_version"
ATTR_FINGERPRINT = "crrxr_params_fingerprint"
ATTR_HISTORY = "history"
ATTR_RSS_IDENTITY = "rss_identity"
ATTR_WCS = "wcs"
ATTR_FAILED = "failed_channels"
ATTR_WAVE_CHUNK = "wave_chunk"
ATTR_SKY_POSITION = "sky_position"  # why there is no celestial WCS (absent when there is one)
#: RSS attrs copied unchanged into the cube (survey identity read at ingest, e.g. PLATEIFU).
CARRIED_RSS_ATTRS: tuple[str, ...] = ("manga_source", "instrument")

# Units: one string each for the Zarr ``units`` attr and the FITS BUNIT, parsed by astropy.units.Unit
# in both its generic and FITS formats and by UDUNITS (CF). Flux is per spaxel: the spaxel is the unit of area of the
# image, so it does not appear in the unit (the long_name says so).
FLUX_UNITS = RSS_FLUX_UNITS  # per spaxel here, per fiber in the RSS: the same unit string
IVAR_UNITS = RSS_IVAR_UNITS  # FLUX_UNITS ** -2

#: Name of the band used when none of the configured band wavelengths lies in the RSS range.
CENTER_BAND = "center"


def canonical_json(obj: object) -> str:
    """Canonical JSON text (sorted keys, no NaN/Inf) for structured attrs stored through zarr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class BandSelection:
    """Channels at which the PSF image and the correlation matrix are stored."""

    names: tuple[str, ...]
    index: np.ndarray  # (n_band,) i8 channel index into wavelength
    wavelength: np.ndarray  # (n_band,) f8 Angstrom of that channel


def select_bands(
    wavelength: np.ndarray, band_wavelengths: Sequence[float], band_names: Sequence[str]
) -> BandSelection:
    """Nearest channel to each band wavelength inside the RSS range (Angstrom).

    Bands outside ``[wavelength[0], wavelength[-1]]`` are dropped (a channel at the edge would be
    mislabelled); if none is inside, one band named ``center`` at the middle channel is used.
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    if len(band_wavelengths) != len(band_names):
        raise ValueError(
            f"{len(band_wavelengths)} correlation wavelengths but {len(band_names)} band names; "
            "set output.correlation_wavelengths_angstrom and output.correlation_bands to match"
        )
    names, index = [], []
    for name, wl in zip(band_names, band_wavelengths):
        if wavelength[0] <= wl <= wavelength[-1]:
            names.append(str(name))
            index.append(int(np.argmin(np.abs(wavelength - wl))))
    if not names:
        names, index = [CENTER_BAND], [len(wavelength) // 2]
    idx = np.asarray(index, dtype=np.int64)
    return BandSelection(tuple(names), idx, wavelength[idx])


def _pair_offsets(pixel_scale: float, max_sep: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (dy, dx) of the upper triangle within ``max_sep`` arcsec."""
    r = int(np.floor(max_sep / pixel_scale + 1e-9))
    dy, dx = np.mgrid[0 : r + 1, -r : r + 1]
    keep = (dx * dx + dy * dy) * pixel_scale**2 <= max_sep**2 + 1e-9
    keep &= (dy > 0) | (dx >= 0)  # upper triangle: j >= i in flat order
    return dy[keep], dx[keep]


def count_correlation_pairs(nx: int, ny: int, pixel_scale: float, max_sep: float) -> int:
    """len(correlation_pairs(...)) without building them."""
    dy, dx = _pair_offsets(pixel_scale, max_sep)
    return int(np.sum(np.clip(ny - dy, 0, None) * np.clip(nx - np.abs(dx), 0, None)))


def correlation_pairs(
    nx: int, ny: int, pixel_scale: float, max_sep: float
) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel index pairs (i <= j, ``iy * nx + ix``) separated by at most ``max_sep`` arcsec.

    Returns two (n_pair,) int32 arrays sorted by (i, j); the diagonal (i == j) is included.
    """
    dy, dx = _pair_offsets(pixel_scale, max_sep)
    iy, ix = np.mgrid[0:ny, 0:nx]
    pi, pj = [], []
    for oy, ox in zip(dy, dx):
        ok = (iy + oy < ny) & (ix + ox >= 0) & (ix + ox < nx)
        i = (iy * nx + ix)[ok]
        pi.append(i)
        pj.append(i + oy * nx + ox)
    i = np.concatenate(pi)
    j = np.concatenate(pj)
    order = np.lexsort((j, i))
    return i[order].astype(np.int32), j[order].astype(np.int32)


def mask_attrs() -> dict[str, object]:
    """CF flag attributes of the cube ``mask`` (MaNGA DRP3PIXMASK values, uint32 like the data)."""
    return {
        "long_name": "MaNGA DRP3PIXMASK quality bits",
        "flag_masks": np.asarray(list(CUBE_BITS.values()), dtype=np.uint32),
        "flag_meanings": " ".join(CUBE_BITS),
    }


def to_cf_dataset(ds: xr.Dataset) -> xr.Dataset:
    """A copy of a cube Dataset ready for ``to_netcdf`` under CF: ``flag_masks`` cast to the type
    of their variable (JSON attrs in Zarr hold plain integers) and string coordinates as fixed-width
    character arrays (CF has no variable-length strings)."""
    out = ds.copy()
    for name, var in out.variables.items():
        if "flag_masks" in var.attrs:
            var.attrs["flag_masks"] = np.asarray(var.attrs["flag_masks"], dtype=var.dtype)
        if var.dtype.kind in "OUT" or str(var.dtype).startswith("StringDType"):
            values = np.array([str(v) for v in np.asarray(var.values).ravel()], dtype="S")
            out = out.assign_coords({name: (var.dims, values.reshape(var.shape), var.attrs)})
            out[name].encoding["dtype"] = "S1"
    return out


def carried_attrs(rss_attrs: Mapping[str, object]) -> dict[str, object]:
    """The RSS attrs a cube keeps (:data:`CARRIED_RSS_ATTRS`), for the export's header."""
    return {k: rss_attrs[k] for k in CARRIED_RSS_ATTRS if k in rss_attrs}


def no_sky_position_note() -> str:
    """The ``sky_position`` attr of a cube whose RSS has no IFU centre."""
    return (
        "unknown: the RSS has no ifu_ra/ifu_dec, so the cube has no celestial WCS; x/y are arcsec "
        "offsets from the IFU centre. Give the centre to export-fits (--ifu-ra DEG --ifu-dec DEG) "
        "or set the RSS attrs ifu_ra/ifu_dec before building"
    )


def write_lsf(store_path: str, region: slice, lsf: Mapping[str, np.ndarray], dtype: str) -> None:
    """Write the cube LSF arrays of one wavelength chunk (``region`` of channels) into the store."""
    if not lsf:
        return
    import zarr

    group = zarr.open_group(store_path, mode="r+")
    for name, values in lsf.items():
        group[name][region] = np.asarray(values).astype(dtype)


def n_wave_chunks(n_channels: int, wave_chunk: int) -> int:
    return -(-n_channels // wave_chunk)


def cube_template(
    wavelength: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    wave_chunk: int,
    bands: BandSelection,
    pairs: tuple[np.ndarray, np.ndarray],
    attrs: Mapping[str, object],
    *,
    flux_units: str = FLUX_UNITS,
    dtype: str = "float32",
    lsf: Sequence[str] = (),
) -> tuple[xr.Dataset, dict[str, dict]]:
    """The lazy cube Dataset (all data variables dask zeros, never computed) and its zarr encoding.

    ``wavelength`` (n_chan,) Angstrom; ``x``, ``y`` pixel centres (arcsec); zarr chunks are
    ``(wave_chunk, ny, nx)`` for flux/ivar/mask, ``wave_chunk`` for ``channel_failed``, one element
    per chunk for ``chunk_done`` and one band per chunk for ``psf``/``correlation``. ``lsf``: the
    :data:`LSF_VARIABLES` to add (chunked like flux).
    """
    from astropy import units as u

    wavelength = np.asarray(wavelength, dtype=np.float64)
    nw, ny, nx = len(wavelength), len(y), len(x)
    if wave_chunk < 1:
        raise ValueError(f"wave_chunk must be >= 1, got {wave_chunk}")
    wc = min(int(wave_chunk), nw)
    nchunk = n_wave_chunks(nw, wc)
    nb = len(bands.names)
    pair_i, pair_j = pairs
    npair = len(pair_i)
    cube = (WAVELENGTH, Y, X)

    def zeros(shape, dt, chunks):
        return da.zeros(shape, dtype=dt, chunks=chunks)

    data_vars = {
        FLUX: (
            cube,
            zeros((nw, ny, nx), dtype, (wc, ny, nx)),
            {
                "units": flux_units,
                "long_name": "reconstructed flux density per spaxel",
                "cell_methods": "x: y: sum (over the spaxel area)",
            },
        ),
        IVAR: (
            cube,
            zeros((nw, ny, nx), dtype, (wc, ny, nx)),
            {
                "units": IVAR_UNITS
                if flux_units == FLUX_UNITS
                else (u.Unit(flux_units) ** -2).to_string("fits"),
                "long_name": "inverse variance of flux (covariance diagonal)",
            },
        ),
        MASK: (cube, zeros((nw, ny, nx), np.uint32, (wc, ny, nx)), mask_attrs()),
        CHANNEL_FAILED: (
            (WAVELENGTH,),
            zeros((nw,), np.uint8, (wc,)),
            {"long_name": "1 where the channel's solve failed (pixels DONOTUSE)"},
        ),
        CHANNEL_EXACT: (
            (WAVELENGTH,),
            zeros((nw,), np.uint8, (wc,)),
            {
                "long_name": "1 where the channel's weights were solved exactly, 0 where interpolated"
            },
        ),
        REUSE_BOUND: (
            (WAVELENGTH,),
            zeros((nw,), np.float32, (wc,)),
            {
                "units": "1",
                "long_name": "bound on |flux - exact flux| of interpolated weights, in units of "
                "each spaxel's noise sigma (0: solved exactly)",
            },
        ),
        CHUNK_DONE: (
            (WAVELENGTH_CHUNK,),
            zeros((nchunk,), np.uint8, (1,)),
            {
                "long_name": "completion ledger: 1 once every output of the wavelength chunk is written",
                ATTR_WAVE_CHUNK: wc,
            },
        ),
        PSF: (
            (BAND, Y, X),
            zeros((nb, ny, nx), dtype, (1, ny, nx)),
            {
                "units": "1",
                "long_name": "reconstructed image of a unit point source at the IFU centre "
                "(fraction of its flux per spaxel)",
            },
        ),
        CORRELATION: (
            (BAND, PAIR),
            zeros((nb, npair), np.float64, (1, max(npair, 1))),
            {"long_name": "correlation coefficient between pixels pair_i and pair_j"},
        ),
        BAND_WAVELENGTH: (
            (BAND,),
            bands.wavelength.astype(np.float64),
            {"units": "Angstrom", "long_name": "wavelength of the band's channel"},
        ),
        BAND_INDEX: (
            (BAND,),
            bands.index.astype(np.int64),
            {"long_name": "channel index of the band into wavelength"},
        ),
    }
    coords = {
        WAVELENGTH: (
            WAVELENGTH,
            wavelength,
            {
                "units": "Angstrom",
                "long_name": "wavelength (vacuum/air as the RSS)",
                "standard_name": "radiation_wavelength",
                "axis": "Z",
            },
        ),
        X: (
            X,
            np.asarray(x, dtype=np.float64),
            {
                "units": "arcsec",
                "long_name": "pixel centre offset from the IFU centre, +x = West",
                "axis": "X",
            },
        ),
        Y: (
            Y,
            np.asarray(y, dtype=np.float64),
            {
                "units": "arcsec",
                "long_name": "pixel centre offset from the IFU centre, +y = North",
                "axis": "Y",
            },
        ),
        BAND: (
            BAND,
            np.asarray(bands.names, dtype=object),
            {"long_name": "band name (PSF and correlation channels)"},
        ),  # variable-length strings (zarr v3 "string")
        PAIR_I: (
            PAIR,
            pair_i.astype(np.int32),
            {"long_name": "flat pixel index iy * nx + ix (i <= j)"},
        ),
        PAIR_J: (
            PAIR,
            pair_j.astype(np.int32),
            {"long_name": "flat pixel index iy * nx + ix (j >= i)"},
        ),
    }
    for name in lsf:
        if name not in LSF_VARIABLES:
            raise ValueError(f"unknown LSF variable {name!r}; expected one of {LSF_VARIABLES}")
        data_vars[name] = (
            cube,
            zeros((nw, ny, nx), dtype, (wc, ny, nx)),
            {
                "units": "Angstrom",
                "long_name": "line-spread function Gaussian sigma "
                + ("after" if name == LSF_SIGMA_POST else "before")
                + " pixelization (weights applied to the samples' sigma^2)",
            },
        )
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))
    nan = np.float32(np.nan) if np.dtype(dtype) == np.float32 else np.nan
    encoding = {
        FLUX: {"chunks": (wc, ny, nx), "fill_value": nan},
        IVAR: {"chunks": (wc, ny, nx), "fill_value": nan},
        MASK: {"chunks": (wc, ny, nx), "fill_value": 0},
        CHANNEL_FAILED: {"chunks": (wc,), "fill_value": 0},
        CHANNEL_EXACT: {"chunks": (wc,), "fill_value": 0},
        REUSE_BOUND: {"chunks": (wc,), "fill_value": np.float32(np.nan)},
        CHUNK_DONE: {"chunks": (1,), "fill_value": 0},
        PSF: {"chunks": (1, ny, nx), "fill_value": nan},
        CORRELATION: {"chunks": (1, max(npair, 1)), "fill_value": np.nan},
        **{name: {"chunks": (wc, ny, nx), "fill_value": nan} for name in lsf},
    }
    return ds, encoding
