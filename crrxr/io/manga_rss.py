"""MaNGA LOGRSS FITS -> crrxr RSS Zarr store, streamed one wavelength chunk at a time.

Layout read (MaNGA DRP datamodel, ``manga-PLATE-IFU-LOGRSS.fits[.gz]``):

* FLUX, IVAR, MASK, XPOS, YPOS: images of numpy shape (n_exp * n_fiber, n_wave), rows exposure-major
  (exposure e = rows ``e*n_fiber:(e+1)*n_fiber``); MASK holds MANGA_DRP2PIXMASK bits.
* WAVE: (n_wave,) Angstrom. OBSINFO: bintable with one row per exposure (SEEING, PSFFAC, EXPNUM).
* NEXP in the primary header; IFURA/IFUDEC in the FLUX (or primary) header.

XPOS/YPOS are copied unchanged: the DRP writes them in arcsec "in the -xfocal,yfocal frame, North up,
East left (+x = -RA, +y = +DEC)" (D. Law, mlsetifupositions.pro), which is crrxr's frame (+x = West).

Memory: an uncompressed file is memory-mapped and each chunk copies only its (n_rows, wave_chunk)
block of each image out of the map (``data[:, a:b]`` of the memory-mapped array, or
``ImageHDU.section`` for scaled images), so only one block per image is ever in the Python heap; the
touched pages of the map are file-backed page cache, which the kernel can drop at any time. astropy can read sections of a
gzip-compressed file, but only by decompressing from the start of the stream (a column block of a
row-major image touches every row, so every chunk would re-decompress the file up to the end of the
image: quadratic time); ``.data`` would hold the whole image. We therefore stream-decompress a
``.gz`` once to a temporary uncompressed file next to the output (disk, never memory; removed
afterwards) and memory-map that.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import shutil
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from astropy.io import fits

import crrxr
from crrxr.core.masks import RSS_BITS
from crrxr.io import names as N
from crrxr.io.atomic import atomic_output, remove_path, temporary_sibling
from crrxr.io.manga_masks import (
    DRP2_TO_RSS,
    DRP2PIXMASK_BITS,
    UnknownMaskBitsError,
    map_drp2pixmask,
)
from crrxr.io.rss import open_rss
from crrxr.io.schema import SchemaError

__all__ = ["MangaFormatError", "RssLayout", "ingest_manga_rss", "read_rss_layout"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = ("FLUX", "IVAR", "MASK", "XPOS", "YPOS")
# Optional LSF images (Gaussian sigma, Angstrom) and the RSS variables they become.
LSF_EXTENSIONS: dict[str, str] = {"LSFPRE": N.LSF_SIGMA, "LSFPOST": N.LSF_SIGMA_POST}
# Primary-header keys kept in the ``manga_source`` attr (carried into the cube and its export).
SOURCE_KEYS: tuple[str, ...] = (
    "PLATEIFU",
    "PLATEID",
    "IFUDSGN",
    "MANGAID",
    "OBJRA",
    "OBJDEC",
    "IFURA",
    "IFUDEC",
    "VERSDRP2",
    "VERSDRP3",
    "EBVGAL",
    "SRVYMODE",
    "DRP2QUAL",
    "MNGTARG1",
    "MNGTARG2",
    "MNGTARG3",
    "TELESCOP",
    "INSTRUME",
    "MASKNAME",
)
REQUIRED_EXTENSIONS: tuple[str, ...] = (*IMAGE_EXTENSIONS, "WAVE")
_GZIP_MAGIC = b"\x1f\x8b"
# The MaNGA BUNIT ('1E-17 erg/s/cm^2/Ang/fiber') is kept in ``manga_source``; flux gets N.FLUX_UNITS.


class MangaFormatError(ValueError):
    """A MaNGA FITS file is missing, truncated, or not laid out as the DRP datamodel says."""


@dataclass
class RssLayout:
    """What a LOGRSS file holds, from its headers and small extensions (no flux read)."""

    n_rows: int
    n_wave: int
    n_exp: int
    n_fiber: int
    wavelength: np.ndarray  # (n_wave,) f8 Angstrom
    exposure: np.ndarray  # (n_exp,) i8
    seeing_fwhm: np.ndarray  # (n_exp,) f8 arcsec at 5400 A
    seeing_source: str
    ifu_ra: float | None
    ifu_dec: float | None
    flux_dtype: np.dtype
    flux_units: str
    source: dict = field(default_factory=dict)
    lsf: tuple[str, ...] = ()  # LSF extensions present (LSFPRE, LSFPOST), same shape as FLUX


def ingest_manga_rss(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    wave_chunk: int = 64,
    seeing: float | None = None,
    allow_unknown_mask_bits: bool = False,
    overwrite: bool = False,
    validate: bool = True,
) -> Path:
    """Convert a MaNGA LOGRSS FITS file (plain or gzip) into a crrxr RSS Zarr store at ``out``.

    ``wave_chunk``: channels per zarr chunk (and per read). ``seeing`` (arcsec FWHM at 5400 A):
    used for every exposure instead of OBSINFO SEEING x PSFFAC (required when OBSINFO is absent).
    The store is written to a temporary sibling and renamed on success; on any error nothing is left
    at ``out``. Raises :class:`MangaFormatError` (a ValueError) naming the file and the problem.
    With ``validate`` (default) the written store is checked with :func:`crrxr.io.open_rss` before
    the rename (one more chunked pass over ivar/mask/positions; a :class:`SchemaError` names what
    in the FITS file is inconsistent, e.g. negative IVAR or NaN positions of usable samples).
    """
    path, out = Path(path), Path(out)
    if int(wave_chunk) < 1:
        raise ValueError(f"wave_chunk must be >= 1 channel, got {wave_chunk}")
    wave_chunk = int(wave_chunk)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file (expected a manga-PLATE-IFU-LOGRSS.fits[.gz])"
        )
    with atomic_output(out, overwrite=overwrite) as tmp_store:
        with (
            _uncompressed(path, scratch_like=out) as fits_path,
            _open_fits(fits_path, path) as hdul,
        ):
            layout = read_rss_layout(hdul, path, fits_path.stat().st_size, seeing=seeing)
            template = _template(layout, wave_chunk)
            template.attrs.update(_attrs(layout, path))
            template.to_zarr(tmp_store, mode="w-", compute=False, consolidated=False, zarr_format=3)
            bit_counts = np.zeros(32, dtype=np.int64)
            readers = {name: _column_reader(hdul[name]) for name in IMAGE_EXTENSIONS + layout.lsf}
            for start in range(0, layout.n_wave, wave_chunk):
                stop = min(start + wave_chunk, layout.n_wave)
                block = _read_block(
                    readers, path, layout, start, stop, allow_unknown_mask_bits, bit_counts
                )
                block.to_zarr(
                    tmp_store, region={N.DIM_WAVELENGTH: slice(start, stop)}, consolidated=False
                )
            del readers  # release the memory maps before the file is closed
            _finalize(tmp_store, bit_counts)
        if validate:
            try:
                open_rss(tmp_store)
            except SchemaError as exc:
                raise SchemaError(
                    f"{path}: the ingested RSS fails validation: {exc}", exc.problems
                ) from None
    log.info(
        "ingested %s -> %s (%d spectra x %d channels)", path, out, layout.n_rows, layout.n_wave
    )
    return out


# ---------------------------------------------------------------------------------------------
# opening


@contextlib.contextmanager
def _uncompressed(path: Path, scratch_like: Path) -> Iterator[Path]:
    """Yield a path to the uncompressed FITS: ``path`` itself, or a temporary decompressed copy."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic != _GZIP_MAGIC:
        yield path
        return
    # ".<out>.fits.tmp-<random>": next to the output (same disk), matching atomic.TEMP_GLOB
    tmp = temporary_sibling(scratch_like.with_name(scratch_like.name + ".fits"))
    try:
        try:
            with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 24)
        except (EOFError, OSError, zlib.error) as exc:
            raise MangaFormatError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
        yield tmp
    finally:
        remove_path(tmp)


@contextlib.contextmanager
def _open_fits(fits_path: Path, source: Path) -> Iterator[fits.HDUList]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation is checked explicitly below
            # memmap=None (the default) memory-maps like True but, unlike an explicit True, still
            # applies BZERO/BSCALE (e.g. an unsigned MASK) to the sections that are read
            hdul = fits.open(fits_path, memmap=None, lazy_load_hdus=False, mode="readonly")
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise MangaFormatError(f"{source}: not a readable FITS file ({exc})") from exc
    try:
        yield hdul
    finally:
        hdul.close()


def _hdu(hdul: fits.HDUList, name: str, source: Path) -> fits.hdu.base.ExtensionHDU:
    try:
        return hdul[name]
    except KeyError:
        found = ", ".join(h.name for h in hdul)
        raise MangaFormatError(
            f"{source}: missing extension {name!r} (found: {found}); a MaNGA LOGRSS file has "
            f"{', '.join(REQUIRED_EXTENSIONS)} and OBSINFO"
        ) from None


def _check_complete(hdul: fits.HDUList, name: str, source: Path, file_size: int) -> None:
    """Raise if the data of extension ``name`` runs past the end of the file (truncated)."""
    idx = hdul.index_of(name)
    hdu = hdul[idx]
    nbytes = abs(hdu.header.get("BITPIX", 8)) // 8 * int(np.prod(hdu.shape or (0,), dtype=np.int64))
    loc = hdul.fileinfo(idx)["datLoc"]
    if loc + nbytes > file_size:
        raise MangaFormatError(
            f"{source}: extension {name!r} is truncated (needs bytes up to {loc + nbytes}, "
            f"the file has {file_size}); re-download the file"
        )


# ---------------------------------------------------------------------------------------------
# layout


def read_rss_layout(
    hdul: fits.HDUList, source: Path, file_size: int, *, seeing: float | None = None
) -> RssLayout:
    """Check the LOGRSS structure and read the small extensions (WAVE, OBSINFO, headers).

    ``file_size``: bytes of the (uncompressed) file behind ``hdul``, to detect truncation.
    """
    hdus = {name: _hdu(hdul, name, source) for name in REQUIRED_EXTENSIONS}
    shape = hdus["FLUX"].shape
    if len(shape) != 2:
        raise MangaFormatError(
            f"{source}: FLUX must be a 2-D image (rows, wavelength), found shape {shape}"
        )
    for name in REQUIRED_EXTENSIONS:
        _check_complete(hdul, name, source, file_size)
        if name in IMAGE_EXTENSIONS and hdus[name].shape != shape:
            raise MangaFormatError(
                f"{source}: extension {name} has shape {hdus[name].shape} but FLUX has {shape}; "
                "all of FLUX, IVAR, MASK, XPOS, YPOS must be (n_exp * n_fiber, n_wave)"
            )
    n_rows, n_wave = (int(s) for s in shape)

    wave = np.asarray(hdus["WAVE"].data, dtype=np.float64).ravel()
    if wave.shape != (n_wave,):
        raise MangaFormatError(
            f"{source}: WAVE has {wave.size} values but FLUX has {n_wave} channels"
        )
    if not np.all(np.isfinite(wave)) or np.any(np.diff(wave) <= 0):
        raise MangaFormatError(f"{source}: WAVE must be finite and strictly increasing (Angstrom)")

    primary = hdul[0].header
    obsinfo = hdul["OBSINFO"].data if "OBSINFO" in hdul else None
    if "NEXP" in primary:
        n_exp = int(primary["NEXP"])
    elif obsinfo is not None:
        n_exp = len(obsinfo)
    else:
        raise MangaFormatError(
            f"{source}: neither a NEXP keyword in the primary header nor OBSINFO"
        )
    if n_exp < 1 or n_rows % n_exp:
        raise MangaFormatError(
            f"{source}: {n_rows} rows cannot be split into NEXP={n_exp} exposures of equal fiber count"
        )
    n_fiber = n_rows // n_exp

    exposure = np.arange(n_exp, dtype=np.int64)
    if obsinfo is not None:
        if len(obsinfo) != n_exp:
            raise MangaFormatError(f"{source}: OBSINFO has {len(obsinfo)} rows but NEXP = {n_exp}")
        names = [c.upper() for c in obsinfo.columns.names]
        if "EXPNUM" in names:
            expnum = np.asarray(obsinfo["EXPNUM"]).astype(np.int64).ravel()
            if len(np.unique(expnum)) == n_exp:
                exposure = expnum
    if seeing is not None:
        if not (np.isfinite(seeing) and seeing > 0):
            raise ValueError(f"seeing must be a positive FWHM in arcsec, got {seeing}")
        seeing_fwhm = np.full(n_exp, float(seeing))
        seeing_source = f"user value {float(seeing)} arcsec for every exposure"
        log.warning("%s: using seeing FWHM %.3f arcsec for all %d exposures", source, seeing, n_exp)
    elif obsinfo is None:
        raise MangaFormatError(
            f"{source}: no OBSINFO extension, so the per-exposure seeing (SEEING x PSFFAC) is unknown; "
            "pass the seeing FWHM at 5400 A explicitly (--seeing ARCSEC)"
        )
    else:
        missing = [c for c in ("SEEING", "PSFFAC") if c not in names]
        if missing:
            raise MangaFormatError(
                f"{source}: OBSINFO lacks column(s) {missing}; pass --seeing ARCSEC to set it explicitly"
            )
        seeing_fwhm = (
            np.asarray(obsinfo["SEEING"], np.float64) * np.asarray(obsinfo["PSFFAC"], np.float64)
        ).ravel()
        bad = np.flatnonzero(~(np.isfinite(seeing_fwhm) & (seeing_fwhm > 0)))
        if bad.size:
            raise MangaFormatError(
                f"{source}: OBSINFO SEEING x PSFFAC is not a positive number for exposure(s) {bad.tolist()}; "
                "pass --seeing ARCSEC to override"
            )
        seeing_source = "OBSINFO SEEING x PSFFAC"

    flux_header = hdus["FLUX"].header
    ifu_ra = _header_float(flux_header, primary, "IFURA")
    ifu_dec = _header_float(flux_header, primary, "IFUDEC")
    if ifu_ra is None or ifu_dec is None:
        log.warning(
            "%s: no IFURA/IFUDEC in the FLUX or primary header; the cube will have no sky WCS",
            source,
        )
    bitpix = flux_header.get("BITPIX", -32)
    flux_dtype = np.dtype(np.float32 if bitpix in (-32, 8, 16) else np.float64)
    source_info = {
        "file": source.name,
        "BUNIT": str(flux_header.get("BUNIT", "")),
        "bytes": source.stat().st_size,
        **{k: _plain(primary[k]) for k in SOURCE_KEYS if k in primary},
    }
    lsf = tuple(name for name in LSF_EXTENSIONS if name in hdul)
    for name in lsf:
        _check_complete(hdul, name, source, file_size)
        if hdul[name].shape != shape:
            raise MangaFormatError(
                f"{source}: extension {name} has shape {hdul[name].shape} but FLUX has {shape}; "
                "a LOGRSS LSF image has one dispersion (Angstrom) per FLUX pixel"
            )
    if "MASKNAME" in hdus["MASK"].header:
        source_info["MASKNAME"] = str(hdus["MASK"].header["MASKNAME"])
    return RssLayout(
        n_rows=n_rows,
        n_wave=n_wave,
        n_exp=n_exp,
        n_fiber=n_fiber,
        wavelength=wave,
        exposure=exposure,
        seeing_fwhm=seeing_fwhm,
        seeing_source=seeing_source,
        ifu_ra=ifu_ra,
        ifu_dec=ifu_dec,
        flux_dtype=flux_dtype,
        flux_units=N.FLUX_UNITS,
        source=source_info,
        lsf=lsf,
    )


def _plain(value: object) -> object:
    """A header value as JSON-friendly Python (bool/int/float kept, anything else a string)."""
    if isinstance(value, bool | int | float):
        return value
    return str(value).strip()


def _header_float(first: fits.Header, second: fits.Header, key: str) -> float | None:
    for header in (first, second):
        if key in header:
            try:
                value = float(header[key])
            except (TypeError, ValueError):
                continue
            if np.isfinite(value):
                return value
    return None


# ---------------------------------------------------------------------------------------------
# writing


def _template(layout: RssLayout, wave_chunk: int) -> xr.Dataset:
    n_rows, n_wave = layout.n_rows, layout.n_wave
    chunks = (n_rows, min(wave_chunk, n_wave))
    row = np.arange(n_rows, dtype=np.int64)
    spec = N.RSS_SPECS

    def lazy(name: str, dtype: np.dtype | type, **attrs: object) -> tuple:
        data = da.zeros((n_rows, n_wave), dtype=dtype, chunks=chunks)
        return (_SW, data, _attrs_of(name, **attrs))

    ds = xr.Dataset(
        {
            N.FLUX: lazy(N.FLUX, layout.flux_dtype, units=layout.flux_units),
            N.IVAR: lazy(N.IVAR, layout.flux_dtype, units=N.IVAR_UNITS),
            N.MASK: lazy(
                N.MASK,
                np.uint32,
                flag_masks=[int(v) for v in RSS_BITS.values()],
                flag_meanings=" ".join(RSS_BITS),
            ),
            N.XPOS: lazy(N.XPOS, np.float64),
            N.YPOS: lazy(N.YPOS, np.float64),
            **{LSF_EXTENSIONS[n]: lazy(LSF_EXTENSIONS[n], np.float64) for n in layout.lsf},
            N.EXPOSURE_INDEX: (
                spec[N.EXPOSURE_INDEX].dims,
                row // layout.n_fiber,
                _attrs_of(N.EXPOSURE_INDEX),
            ),
            N.SEEING_FWHM: (
                spec[N.SEEING_FWHM].dims,
                layout.seeing_fwhm,
                _attrs_of(N.SEEING_FWHM, source=layout.seeing_source),
            ),
        },
        coords={
            N.WAVELENGTH: (N.DIM_WAVELENGTH, layout.wavelength, _attrs_of(N.WAVELENGTH)),
            N.EXPOSURE: (N.DIM_EXPOSURE, layout.exposure, _attrs_of(N.EXPOSURE)),
            N.SPECTRUM: (N.DIM_SPECTRUM, row, _attrs_of(N.SPECTRUM)),
            N.FIBER: (N.DIM_SPECTRUM, row % layout.n_fiber, _attrs_of(N.FIBER)),
        },
    )
    return ds


_SW = (N.DIM_SPECTRUM, N.DIM_WAVELENGTH)


def _attrs_of(name: str, **extra: object) -> dict[str, object]:
    """CF attrs of an RSS variable from the schema table (units, long_name), plus ``extra``."""
    spec = N.RSS_SPECS[name]
    attrs: dict[str, object] = {"long_name": spec.long_name} if spec.long_name else {}
    if spec.units:
        attrs[N.ATTR_UNITS] = spec.units
    attrs.update(extra)
    return attrs


def _attrs(layout: RssLayout, path: Path) -> dict[str, object]:
    attrs: dict[str, object] = {
        N.ATTR_HISTORY: f"crrxr {crrxr.__version__} ingest-manga {path.name}",
        "crrxr_version": crrxr.__version__,
        N.ATTR_RSS_SCHEMA: N.RSS_SCHEMA_ID,
        "manga_source": json.dumps(layout.source, sort_keys=True),
        "manga_mask_mapping": json.dumps(
            {name: DRP2_TO_RSS[name] for name in DRP2PIXMASK_BITS}, sort_keys=True
        ),
    }
    if layout.ifu_ra is not None and layout.ifu_dec is not None:
        attrs[N.ATTR_IFU_RA] = layout.ifu_ra
        attrs[N.ATTR_IFU_DEC] = layout.ifu_dec
    return attrs


def _column_reader(hdu: fits.ImageHDU) -> Callable[[slice], np.ndarray]:
    """A function returning a copy of ``data[:, cols]`` of a 2-D image without reading the rest.

    Unscaled images (the MaNGA case): ``hdu.data`` is a view of the memory map (astropy copies only
    to apply BSCALE/BZERO), and a column slice copies just those bytes: one vectorised strided copy,
    ~200x faster than ``section`` here (which reads row by row). Scaled images (e.g. an unsigned
    MASK stored with BZERO = 2^31): ``hdu.section``, which scales only the requested block, since
    ``hdu.data`` would scale, i.e. copy, the whole image.
    """
    h = hdu.header
    if h.get("BSCALE", 1) != 1 or h.get("BZERO", 0) != 0 or "BLANK" in h:
        return lambda cols: np.asarray(hdu.section[:, cols])
    data = hdu.data
    return lambda cols: np.array(data[:, cols])


def _read_block(
    readers: dict[str, Callable[[slice], np.ndarray]],
    source: Path,
    layout: RssLayout,
    start: int,
    stop: int,
    allow_unknown: bool,
    bit_counts: np.ndarray,
) -> xr.Dataset:
    """Read channels [start, stop) of every image extension (section reads) as a region Dataset."""
    cols = slice(start, stop)
    try:
        raw = {name: read(cols) for name, read in readers.items()}
    except (OSError, ValueError) as exc:
        raise MangaFormatError(f"{source}: reading channels {start}:{stop} failed ({exc})") from exc
    drp = np.asarray(raw["MASK"]).astype(np.int64) & 0xFFFFFFFF
    for bit in range(32):
        bit_counts[bit] += int(np.count_nonzero((drp >> bit) & 1))
    try:
        mask = map_drp2pixmask(drp, allow_unknown=allow_unknown)
    except UnknownMaskBitsError as exc:
        raise UnknownMaskBitsError(f"{source}: MASK channels {start}:{stop}: {exc}") from None
    return xr.Dataset(
        {
            N.FLUX: (_SW, np.asarray(raw["FLUX"], dtype=layout.flux_dtype)),
            N.IVAR: (_SW, np.asarray(raw["IVAR"], dtype=layout.flux_dtype)),
            N.MASK: (_SW, mask),
            N.XPOS: (_SW, np.asarray(raw["XPOS"], dtype=np.float64)),
            N.YPOS: (_SW, np.asarray(raw["YPOS"], dtype=np.float64)),
            **{LSF_EXTENSIONS[n]: (_SW, np.asarray(raw[n], np.float64)) for n in layout.lsf},
        }
    )


def _finalize(store: Path, bit_counts: np.ndarray) -> None:
    """Record the DRP2PIXMASK bit counts and consolidate the metadata (so readers need no listing)."""
    import zarr

    group = zarr.open_group(store, mode="r+")
    names = {bit: name for name, bit in DRP2PIXMASK_BITS.items()}
    counts = {names.get(bit, f"bit{bit}"): int(n) for bit, n in enumerate(bit_counts) if n}
    group.attrs["manga_mask_bit_counts"] = json.dumps(counts, sort_keys=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store)
