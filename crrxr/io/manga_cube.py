"""crrxr cube Zarr store -> MaNGA-style LOGCUBE FITS file, streamed one wavelength chunk at a time.

Extensions, in order: PRIMARY (provenance and the MaNGA identity cards), FLUX, IVAR, MASK
(MASKNAME = MANGA_DRP3PIXMASK), LSFPOST and LSFPRE (cube line-spread function, Gaussian sigma in
Angstrom, when the cube has one), WAVE, SPECRES and PRESPECRES (median resolution per channel),
``<BAND>IMG`` broadband images (nanomaggies, SDSS filters, :mod:`crrxr.io.broadband`), one
``<BAND>PSF`` image per band (GPSF, RPSF, ...), one ``<BAND>CORREL`` bintable per band (GCORREL,
...), and ``WCS-TAB`` only when the wavelength grid is neither log- nor linear-uniform.

Readers: the layout and the identity cards (PLATEIFU, MANGAID, OBJRA/OBJDEC, VERSDRP3, EBVGAL,
DRP3QUAL, SRVYMODE, ...) are those that mangadap's ``MaNGADataCube`` and marvin's ``Cube`` (local
file) read. They come from the LOGRSS the cube was built from (``manga_source`` attr); a cube without
one (e.g. simulated) gets explicit placeholders, listed in the PLACEHLD card and a COMMENT. Both
readers take plate and IFU from a file name ``manga-PLATE-IFU-LOGCUBE.fits[.gz]``. An output name
ending in ``.gz`` is gzip-compressed.

Array order: the numpy (wavelength, y, x) cube is written as is, i.e. FITS NAXIS1 = x, NAXIS2 = y,
NAXIS3 = wavelength. WCS (FLUX/IVAR/MASK; celestial part on the PSF images):

* RA---TAN / DEC--TAN, CD1_1 = -pixel_scale/3600, CD2_2 = +pixel_scale/3600, CRVAL = IFU centre,
  1-based CRPIX at the pixel where x = y = 0 (the grid centre). +x = West, so RA increases toward
  decreasing x pixel index, as in MaNGA cubes.
* Spectral: WAVE-LOG (lambda = CRVAL3 exp(CD3_3 (p - CRPIX3) / CRVAL3)) when the grid is
  log-uniform, linear WAVE when it is linear-uniform (both to 1e-9 relative), otherwise WAVE-TAB
  with the exact wavelengths (in metres, CUNIT3 = m) in a WCS-TAB bintable (astropy:
  ``WCS(header, fobj=hdulist)``).

FLUX/IVAR/MASK are streamed with :class:`astropy.io.fits.StreamingHDU` (header first, then the
data of each wavelength chunk appended in big-endian order), so memory holds one chunk at a time.
The file is written to a temporary sibling and renamed on success.

Quality cards (:func:`quality_cards`), from the group ``quality`` that ``crrxr quality`` stores in
the cube store (read with ``xr.open_zarr(store, group="quality")``). Per band, with MaNGA's name
where the DRP has one: ``<BAND>FWHM`` (GFWHM, RFWHM, ..., "Reconstructed FWHM", arcsec: the FWHM of
the kernel model fitted to the PSF image, as the CRR authors' MaNGA-form output computes it), and
crrxr's ``<BAND>STREHL`` (pseudo-Strehl), ``<BAND>RHO1``/``<BAND>RHO2`` (neighbour correlation at 1
and 2 pixels), ``<BAND>SEEING`` (mean seeing FWHM of the exposures at the band channel, arcsec);
cube-wide: STRLREF (the kernel the pseudo-Strehl is relative to), NOCOVFR/LOWCOVFR (fractions of
spaxel-channels with NOCOV/LOWCOV), NFAILED and FAILCHAN (failed channels), FWHMFIT (how the FWHMs
were measured) and QUALRUN. They go to the primary header; the FWHMs also to FLUX and
``<BAND>IMG``; the ``<BAND>PSF`` header gets FWHM/STREHL/SEEING and ``<BAND>CORREL`` RHO1/RHO2 (short
names that fit any band name). Without that group nothing heavy is computed: ``<BAND>FWHM`` is a
circular-Gaussian fit to the PSF image (:func:`gaussian_fwhm`, FWHMFIT = 'gaussian'), NFAILED comes
from the build's ``failed_channels`` attr, QUALRUN = F and a COMMENT says to run ``crrxr quality``.
Values that are not finite are left out (FITS headers cannot hold NaN).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from astropy.io import fits
from scipy import optimize

import crrxr
from crrxr.io import broadband
from crrxr.io import cube as C
from crrxr.io.atomic import atomic_output, remove_path, temporary_sibling

__all__ = [
    "CubeFormatError",
    "celestial_wcs_cards",
    "export_logcube",
    "gaussian_fwhm",
    "quality_cards",
    "read_quality",
    "spectral_wcs_cards",
]

log = logging.getLogger(__name__)

BUNIT_FLUX = C.FLUX_UNITS  # the cube's units attr: one string, parsed by astropy (generic + FITS)
BUNIT_IVAR = C.IVAR_UNITS
SIG2FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
MANGA_NAME = re.compile(r"^manga-(\d+)-(\d+)-LOGCUBE\.fits(\.gz)?$")
#: Identity cards and the placeholder each gets when the cube's RSS did not come from a LOGRSS.
#: VERSDRP3 names the DRP data model followed (marvin maps it to a data release).
IDENTITY_PLACEHOLDERS: dict[str, tuple[object, str]] = {
    "PLATEIFU": ("0-0", "plate-IFU"),
    "PLATEID": (0, "plate id"),
    "IFUDSGN": ("0", "IFU design"),
    "MANGAID": ("0-0", "MaNGA id"),
    "VERSDRP2": ("v3_1_1", "DRP data model version followed"),
    "VERSDRP3": ("v3_1_1", "DRP data model version followed"),
    "EBVGAL": (0.0, "Galactic E(B-V) (mag)"),
    "DRP3QUAL": (0, "cube quality bits (0: none set)"),
    "SRVYMODE": ("MaNGA dither", "survey mode"),
    "TELESCOP": ("SDSS 2.5-M", "telescope"),
    "INSTRUME": ("MaNGA", "instrument"),
}
_REL_TOL = 1e-9  # relative wavelength error allowed for an analytic (LOG / linear) spectral WCS


class CubeFormatError(ValueError):
    """A cube store is missing variables, incomplete, or not on a regular spatial grid."""


def export_logcube(
    cube: str | os.PathLike[str] | xr.Dataset,
    out: str | os.PathLike[str],
    *,
    ifu_ra: float | None = None,
    ifu_dec: float | None = None,
    overwrite: bool = False,
    allow_incomplete: bool = False,
    lsf_sigma: float | None = None,
    quality: xr.Dataset | None = None,
) -> Path:
    """Write the cube (a Zarr store path or an opened Dataset) as a MaNGA LOGCUBE FITS file.

    ``ifu_ra``/``ifu_dec`` (deg) override the cube's ``ifu_ra``/``ifu_dec`` attrs (required if the
    cube has none: no sky position is invented). An unfinished cube (``chunk_done`` not all 1) is
    refused unless ``allow_incomplete``. ``lsf_sigma`` (Angstrom): a constant LSF (Gaussian sigma
    before pixelization) for a cube built without one; mangadap and marvin need an LSF.
    ``quality``: the ``crrxr quality`` Dataset for the header's quality cards; by default read from
    the store's ``quality`` group (:func:`read_quality`; none for a Dataset input). Raises
    :class:`CubeFormatError` (a ValueError) naming the problem.
    """
    out = Path(out)
    ds, name = _open_cube(cube)
    _check_cube(ds, name, allow_incomplete)
    ra, dec = _ifu_centre(ds, name, ifu_ra, ifu_dec)
    celestial = celestial_wcs_cards(ds["x"].values, ds["y"].values, ra, dec, name)
    wavelength = np.asarray(ds["wavelength"].values, dtype=np.float64)
    spectral, wave_table = spectral_wcs_cards(wavelength)
    nw, ny, nx = ds["flux"].shape
    identity, placeholders = identity_cards(ds, ra, dec)
    if quality is None and not isinstance(cube, xr.Dataset):
        quality = read_quality(cube)
    qcards = quality_cards(ds, quality, name)
    if not MANGA_NAME.match(out.name):
        log.warning(
            "%s: mangadap and marvin read plate and IFU from a file name "
            "manga-PLATE-IFU-LOGCUBE.fits[.gz] (this cube's PLATEIFU: %s)",
            out,
            identity["PLATEIFU"][0],
        )
    lsf = _lsf_arrays(ds, wavelength, lsf_sigma)
    if not lsf:
        log.warning(
            "%s has no LSF (its RSS had no lsf_sigma): no LSFPOST/LSFPRE/SPECRES written, which "
            "mangadap and marvin need; pass a constant with lsf_sigma= (--lsf-sigma ANGSTROM)",
            name,
        )

    with atomic_output(out, overwrite=overwrite) as final:
        compress = out.name.endswith(".gz")
        tmp = temporary_sibling(final.with_name(final.name + ".fits")) if compress else final
        try:
            _write_fits(
                tmp, ds, name, celestial, spectral, wave_table, identity, placeholders, lsf, qcards
            )
            _verify(tmp, nx, ny, nw)
            if compress:
                with open(tmp, "rb") as src, gzip.open(final, "wb", compresslevel=6) as dst:
                    shutil.copyfileobj(src, dst, length=1 << 24)
        finally:
            if compress:
                remove_path(tmp)
    log.info("exported %s -> %s (%d x %d x %d)", name, out, nw, ny, nx)
    return out


def _write_fits(
    tmp: Path,
    ds: xr.Dataset,
    name: str,
    celestial: dict[str, object],
    spectral: dict[str, object],
    wave_table: fits.BinTableHDU | None,
    identity: dict[str, tuple[object, str]],
    placeholders: list[str],
    lsf: dict[str, xr.DataArray],
    qcards: QualityCards,
) -> None:
    wavelength = np.asarray(ds["wavelength"].values, dtype=np.float64)
    nw, ny, nx = ds["flux"].shape
    chunk = _wave_chunk(ds)
    primary = _primary_header(ds, name)
    for key, card in identity.items():
        primary[key] = card
    if placeholders:
        primary["PLACEHLD"] = " ".join(placeholders)  # cards holding placeholders (CONTINUE cards)
        primary.add_comment(
            "This cube was not built from a MaNGA LOGRSS (e.g. it is simulated): the cards listed "
            "in PLACEHLD are placeholders so that MaNGA tools open the file, not survey values."
        )
    bands = broadband.covered_bands(wavelength)
    images = broadband.broadband_images(
        ((sl, ds["flux"][sl].values) for sl in _chunks(nw, chunk)), bands, (ny, nx)
    )
    for key, card in qcards.primary.items():
        primary[key] = card
    for line in qcards.comments:
        primary.add_comment(line)
    fits.PrimaryHDU(header=primary).writeto(tmp)
    streamed = [
        ("FLUX", ds["flux"], -32, ">f4", {"BUNIT": BUNIT_FLUX}),
        ("IVAR", ds["ivar"], -32, ">f4", {"BUNIT": BUNIT_IVAR, "HDUCLAS1": "IVAR"}),
        ("MASK", ds["mask"], 32, ">i4", {"MASKNAME": "MANGA_DRP3PIXMASK"}),
    ]
    streamed += [(ext, arr, -32, ">f4", {"BUNIT": "Angstrom"}) for ext, arr in lsf.items()]
    for extname, var, bitpix, dtype, extra in streamed:
        cards = {**celestial, **spectral, **extra}
        if extname == "FLUX":  # marvin reads the identity from the FLUX header (PLATEID is WCS's)
            cards.update({k: v for k, v in identity.items() if k != "PLATEID"})
            cards.update(qcards.fwhm)  # as the DRP (and the CRR authors' code) do
        header = _image_header(extname, bitpix, (nx, ny, nw), cards)
        _stream_image(tmp, header, var, dtype, chunk)
    extra_hdus: list[fits.hdu.base.ExtensionHDU] = [
        fits.ImageHDU(wavelength, name="WAVE", header=fits.Header([("BUNIT", "Angstrom")]))
    ]
    for lsf_ext, res_ext in (("LSFPOST", "SPECRES"), ("LSFPRE", "PRESPECRES")):
        if lsf_ext in lsf:
            extra_hdus += _specres_hdus(lsf[lsf_ext], wavelength, chunk, res_ext, lsf_ext)
    extra_hdus += _image_hdus(images, bands, celestial, qcards.fwhm)
    extra_hdus += _psf_hdus(ds, celestial, qcards.psf)
    extra_hdus += _correl_hdus(ds, nx, ny, qcards.correl)
    if wave_table is not None:
        extra_hdus.append(wave_table)
    with fits.open(tmp, mode="append") as hdul:
        for hdu in extra_hdus:
            hdul.append(hdu)


def _chunks(n: int, chunk: int) -> list[slice]:
    return [slice(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def identity_cards(
    ds: xr.Dataset, ra: float, dec: float
) -> tuple[dict[str, tuple[object, str]], list[str]]:
    """MaNGA identity cards from the cube's ``manga_source`` attr; placeholders for the rest.

    Returns ``({key: (value, comment)}, [keys that are placeholders])``. OBJRA/OBJDEC fall back to
    the IFU centre (deg), IFURA/IFUDEC are the centre used for the WCS.
    """
    try:
        source = json.loads(str(ds.attrs.get("manga_source", "{}")))
    except ValueError:
        source = {}
    cards: dict[str, tuple[object, str]] = {}
    placeholders = []
    for key, (default, comment) in IDENTITY_PLACEHOLDERS.items():
        if key in source and source[key] not in ("", None):
            cards[key] = (source[key], comment)
        else:
            cards[key] = (default, f"PLACEHOLDER {comment}")
            placeholders.append(key)
    for key, value in (("OBJRA", ra), ("OBJDEC", dec)):
        if key in source:
            cards[key] = (float(source[key]), f"object {key[3:]} (deg)")
        else:
            cards[key] = (value, f"PLACEHOLDER object {key[3:]}: the IFU centre (deg)")
            placeholders.append(key)
    cards["IFURA"] = (ra, "IFU centre RA (deg)")
    cards["IFUDEC"] = (dec, "IFU centre Dec (deg)")
    if "PLATEIFU" in source and ("PLATEID" not in source or "IFUDSGN" not in source):
        plate, _, ifu = str(source["PLATEIFU"]).partition("-")
        if plate.isdigit() and ifu.isdigit():
            cards["PLATEID"] = (int(plate), "plate id")
            cards["IFUDSGN"] = (ifu, "IFU design")
            placeholders = [k for k in placeholders if k not in ("PLATEID", "IFUDSGN")]
    return cards, placeholders


def _pixel_width(wavelength: np.ndarray) -> np.ndarray:
    """Width (Angstrom) of each channel: the spacing of the neighbouring channel centres."""
    w = np.asarray(wavelength, dtype=np.float64)
    if w.size < 2:
        return np.zeros_like(w)
    edges = np.concatenate([[w[0] - (w[1] - w[0]) / 2], (w[:-1] + w[1:]) / 2])
    edges = np.concatenate([edges, [w[-1] + (w[-1] - w[-2]) / 2]])
    return np.diff(edges)


def _lsf_arrays(
    ds: xr.Dataset, wavelength: np.ndarray, constant: float | None = None
) -> dict[str, xr.DataArray]:
    """LSFPOST / LSFPRE cubes (Angstrom) from the cube's LSF variables (or ``constant``, Angstrom,
    used as the pre-pixelization sigma of a cube that has none).

    Without a post-pixelization LSF, LSFPOST is the second moment of the pre-pixelization Gaussian
    convolved with the channel's boxcar: sqrt(sigma_pre^2 + width^2 / 12).
    """
    out: dict[str, xr.DataArray] = {}
    if constant is not None and not any(v in ds for v in C.LSF_VARIABLES):
        if not (np.isfinite(constant) and constant > 0):
            raise CubeFormatError(f"lsf_sigma must be a positive sigma in Angstrom, got {constant}")
        ds = ds.assign({C.LSF_SIGMA: xr.full_like(ds["flux"], constant, dtype=np.float32)})
    if C.LSF_SIGMA_POST in ds:
        out["LSFPOST"] = ds[C.LSF_SIGMA_POST]
    elif C.LSF_SIGMA in ds:
        box = xr.DataArray(_pixel_width(wavelength) ** 2 / 12.0, dims=("wavelength",))
        out["LSFPOST"] = np.sqrt(ds[C.LSF_SIGMA] ** 2 + box).transpose("wavelength", "y", "x")
    if C.LSF_SIGMA in ds:
        out["LSFPRE"] = ds[C.LSF_SIGMA]
    return out


def _specres_hdus(
    lsf: xr.DataArray, wavelength: np.ndarray, chunk: int, extname: str, source: str
) -> list[fits.ImageHDU]:
    """Median and standard deviation (``<extname>D``) over the spaxels with an LSF of the spectral
    resolution R = lambda / (2.3548 sigma) per channel (0 where no spaxel has one)."""
    median = np.zeros(wavelength.size)
    std = np.zeros(wavelength.size)
    for sl in _chunks(wavelength.size, chunk):
        block = np.asarray(lsf[sl].values, dtype=np.float64).reshape(sl.stop - sl.start, -1)
        res = wavelength[sl, None] / (SIG2FWHM * np.where(block > 0, block, np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
            median[sl] = np.nan_to_num(np.nanmedian(res, axis=1))
            std[sl] = np.nan_to_num(np.nanstd(res, axis=1))
    hdus = []
    for name, values, what in ((extname, median, "median"), (extname + "D", std, "std. dev.")):
        hdu = fits.ImageHDU(values, name=name)
        hdu.header["COMMENT"] = f"{what} over spaxels of lambda / (2.3548 {source}); 0: none"
        hdus.append(hdu)
    return hdus


def _image_hdus(
    images: dict[str, np.ndarray],
    bands: list[broadband.Band],
    celestial: dict[str, object],
    fwhm: dict[str, tuple[float, str]],
) -> list[fits.ImageHDU]:
    hdus = []
    for band in bands:
        hdu = fits.ImageHDU(images[band.name].astype(np.float32), name=f"{band.name.upper()}IMG")
        for key, value in celestial.items():
            hdu.header[key] = value
        hdu.header["BUNIT"] = ("nanomaggy", "AB flux per spaxel through the filter")
        hdu.header["FILTER"] = (f"{broadband.FILTER_FAMILY}-{band.name}", "speclite filter curve")
        hdu.header["EFFWAVE"] = (round(band.effective_wavelength, 3), "Angstrom")
        hdu.header["COVERAGE"] = (
            round(band.coverage, 6),
            "fraction of the filter response covered",
        )
        key = f"{band.name.upper()}FWHM"
        if key in fwhm:
            hdu.header[key] = fwhm[key]
        hdus.append(hdu)
    return hdus


# ---------------------------------------------------------------------------------------------
# input


def _open_cube(cube: str | os.PathLike[str] | xr.Dataset) -> tuple[xr.Dataset, str]:
    if isinstance(cube, xr.Dataset):
        return cube, cube.attrs.get("rss_identity", "<cube dataset>")
    path = Path(cube)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such cube store (build one with `crrxr build`)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # consolidated-metadata fallback
            ds = xr.open_zarr(path, mask_and_scale=False, decode_times=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CubeFormatError(f"{path}: cannot open as a Zarr cube store ({exc})") from exc
    return ds, str(path)


def _check_cube(ds: xr.Dataset, name: str, allow_incomplete: bool) -> None:
    missing = [v for v in ("flux", "ivar", "mask", "wavelength", "x", "y") if v not in ds.variables]
    if missing:
        raise CubeFormatError(
            f"{name}: not a crrxr cube: missing {missing} (a cube store has flux, ivar, mask on "
            "(wavelength, y, x) with x, y, wavelength coordinates; see docs/contracts.md section 4)"
        )
    for var in ("flux", "ivar", "mask"):
        if ds[var].dims != ("wavelength", "y", "x"):
            raise CubeFormatError(
                f"{name}: {var} has dims {ds[var].dims}, expected ('wavelength', 'y', 'x')"
            )
    if "chunk_done" in ds and not allow_incomplete:
        done = np.asarray(ds["chunk_done"].values)
        if not np.all(done == 1):
            raise CubeFormatError(
                f"{name}: cube is incomplete ({int(np.sum(done != 1))} of {done.size} wavelength "
                "chunks not done); resume the build first (crrxr build --resume) or pass "
                "--allow-incomplete"
            )


def _ifu_centre(
    ds: xr.Dataset, name: str, ra: float | None, dec: float | None
) -> tuple[float, float]:
    ra = ds.attrs.get("ifu_ra") if ra is None else ra
    dec = ds.attrs.get("ifu_dec") if dec is None else dec
    if ra is None or dec is None:
        raise CubeFormatError(
            f"{name}: the cube has no ifu_ra/ifu_dec attrs (its RSS gave no IFU centre), so no sky "
            "WCS can be written and none is invented; pass the IFU centre in degrees: "
            "export_logcube(..., ifu_ra=RA, ifu_dec=DEC) in Python, --ifu-ra RA --ifu-dec DEC "
            "on the command line"
        )
    ra, dec = float(ra), float(dec)
    if not (np.isfinite(ra) and np.isfinite(dec) and -90 <= dec <= 90):
        raise CubeFormatError(f"{name}: IFU centre ra={ra}, dec={dec} is not a valid sky position")
    return ra % 360.0, dec


def _wave_chunk(ds: xr.Dataset) -> int:
    chunks = ds["flux"].chunks
    if chunks:
        return int(max(chunks[0]))
    return int(ds["flux"].encoding.get("chunks", (64,))[0])


# ---------------------------------------------------------------------------------------------
# WCS


def celestial_wcs_cards(
    x: np.ndarray, y: np.ndarray, ra: float, dec: float, name: str = "cube"
) -> dict[str, object]:
    """TAN WCS cards for pixel centres ``x``, ``y`` (arcsec, +x = West, +y = North) about (ra, dec)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scales = []
    for axis, c in (("x", x), ("y", y)):
        d = np.diff(c)
        if c.size < 1 or (d.size and (np.any(d <= 0) or np.ptp(d) > 1e-9 * abs(d[0]))):
            raise CubeFormatError(f"{name}: coordinate {axis} is not uniformly increasing")
        scales.append(float(d.mean()) if d.size else None)
    px = [s for s in scales if s is not None]
    if not px:
        raise CubeFormatError(f"{name}: a 1x1 grid has no pixel scale")
    scale = px[0]
    if len(px) == 2 and abs(px[0] - px[1]) > 1e-9 * px[0]:
        raise CubeFormatError(f"{name}: x and y pixel scales differ ({px[0]} vs {px[1]} arcsec)")
    cd = scale / 3600.0
    return {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "CRPIX1": 1.0 - x[0] / scale,  # 1-based pixel where x = 0 (the IFU centre)
        "CRPIX2": 1.0 - y[0] / scale,
        "CRVAL1": ra,
        "CRVAL2": dec,
        "CD1_1": -cd,
        "CD1_2": 0.0,
        "CD2_1": 0.0,
        "CD2_2": cd,
        "RADESYS": "ICRS",
    }


def spectral_wcs_cards(wavelength: np.ndarray) -> tuple[dict[str, object], fits.BinTableHDU | None]:
    """Cards for FITS axis 3 reproducing ``wavelength`` (Angstrom), and the WCS-TAB table if needed."""
    w = np.asarray(wavelength, dtype=np.float64)
    n = w.size
    base = {"CUNIT3": "Angstrom", "CRPIX3": 1.0, "CD3_3": 1.0, "CRVAL3": float(w[0])}
    if n == 1:
        return {**base, "CTYPE3": "WAVE"}, None
    k = np.arange(n, dtype=np.float64)
    # log-uniform: ln(w) linear in k. WAVE-LOG: w = w0 exp(cd (p - 1) / w0)  =>  cd = w0 dln
    dln = (np.log(w[-1]) - np.log(w[0])) / (n - 1)
    model = w[0] * np.exp(k * dln)
    if np.max(np.abs(model / w - 1)) <= _REL_TOL:
        return {**base, "CTYPE3": "WAVE-LOG", "CD3_3": float(w[0] * dln)}, None
    step = (w[-1] - w[0]) / (n - 1)
    if np.max(np.abs((w[0] + k * step) / w - 1)) <= _REL_TOL:
        return {**base, "CTYPE3": "WAVE", "CD3_3": float(step)}, None
    # tabulated: a one-row table holding the (n, 1) coordinate array. Pixel p (1-based) maps to
    # psi = CRVAL3 + CD3_3 (p - CRPIX3) = p, the 1-based row of the table. The values are stored in
    # metres with CUNIT3 = 'm': wcslib rescales CUNIT to SI for the linear part only, so a table in
    # Angstrom would be read back as metres.
    col = fits.Column(
        name="COORDS", format=f"{n}D", dim=f"(1,{n})", array=(w * 1e-10).reshape(1, n, 1)
    )
    table = fits.BinTableHDU.from_columns([col], name="WCS-TAB")
    cards = {
        "CTYPE3": "WAVE-TAB",
        "CUNIT3": "m",
        "CRPIX3": 1.0,
        "CD3_3": 1.0,
        "CRVAL3": 1.0,
        "PS3_0": "WCS-TAB",
        "PS3_1": "COORDS",
        "PV3_3": 1,
    }
    return cards, table


# ---------------------------------------------------------------------------------------------
# writing


def _image_header(
    extname: str, bitpix: int, naxes: tuple[int, ...], cards: dict[str, object]
) -> fits.Header:
    h = fits.Header()
    h["XTENSION"] = ("IMAGE", "Image extension")
    h["BITPIX"] = bitpix
    h["NAXIS"] = len(naxes)
    for i, n in enumerate(naxes, start=1):
        h[f"NAXIS{i}"] = int(n)
    h["PCOUNT"] = 0
    h["GCOUNT"] = 1
    h["EXTNAME"] = extname
    h["WCSAXES"] = len(naxes)
    for key, value in cards.items():
        h[key] = value
    if len(naxes) == 3:  # the spectral axis is separable: its off-diagonal CD terms are zero
        for key in ("CD1_3", "CD2_3", "CD3_1", "CD3_2"):
            h[key] = 0.0
    return h


def _stream_image(
    path: Path, header: fits.Header, var: xr.DataArray, dtype: str, chunk: int
) -> None:
    nw = var.shape[0]
    # a str, not a Path: astropy 8 reduces a Path to its bare name when checking for an existing file
    shdu = fits.StreamingHDU(str(path), header)
    try:
        for start in range(0, nw, chunk):
            block = np.asarray(var[start : start + chunk].values)
            if dtype == ">i4":
                if block.size and (block.min() < 0 or block.max() >= 2**31):
                    raise CubeFormatError(
                        f"mask values outside 0..2^31-1 in channels {start}:{start + chunk}"
                    )
            shdu.write(np.ascontiguousarray(block.astype(dtype, copy=False)))
    finally:
        shdu.close()
    if not shdu.writecomplete:
        raise CubeFormatError(f"{header['EXTNAME']}: wrote less data than the header declares")


def _primary_header(ds: xr.Dataset, name: str) -> fits.Header:
    h = fits.Header()
    h["CRRXRVER"] = (crrxr.__version__, "crrxr version that exported this file")
    h["CUBEVER"] = (
        str(ds.attrs.get("crrxr_version", "unknown")),
        "crrxr version that built the cube",
    )
    params = ds.attrs.get("crrxr_params")
    fingerprint = ds.attrs.get("crrxr_params_fingerprint")
    if fingerprint is None and params is not None:
        fingerprint = hashlib.sha256(str(params).encode()).hexdigest()
    if fingerprint is not None:
        h["PARAMFP"] = str(fingerprint)  # SHA-256 of the crrxr parameters (no room for a comment)
    if params is not None:
        h["LONGSTRN"] = ("OGIP 1.0", "long strings continue on CONTINUE cards")
        h["CRRXRPAR"] = str(params)  # crrxr reconstruction parameters, JSON (CONTINUE cards)
    method = _method(params)
    if method:
        h["METHOD"] = (method, "cube reconstruction method")
    if "rss_identity" in ds.attrs:
        h["RSSID"] = (str(ds.attrs["rss_identity"]), "identity of the input RSS")
    if "ifu_ra" in ds.attrs:
        h["IFURA"] = (float(ds.attrs["ifu_ra"]), "IFU centre RA (deg)")
        h["IFUDEC"] = (float(ds.attrs["ifu_dec"]), "IFU centre Dec (deg)")
    h["SRCCUBE"] = (Path(name).name if name else "", "source cube store")
    for line in str(ds.attrs.get("history", "")).splitlines():
        if line.strip():
            h.add_history(line.strip())
    h.add_history(f"crrxr {crrxr.__version__} export-fits {Path(name).name}")
    return h


def _method(params: object) -> str | None:
    if not params:
        return None
    try:
        doc = json.loads(str(params))
    except ValueError:
        return None
    for holder in (doc, doc.get("values", {}) if isinstance(doc, dict) else {}):
        if isinstance(holder, dict) and isinstance(holder.get("method"), str):
            return holder["method"]
    return None


def _band_extnames(ds: xr.Dataset) -> list[tuple[int, str]]:
    if "band" not in ds.coords:
        return []
    return [(i, str(b).upper()) for i, b in enumerate(ds["band"].values)]


def _band_cards(ds: xr.Dataset, i: int) -> dict[str, object]:
    cards: dict[str, object] = {}
    if "band_index" in ds:
        cards["BBINDEX"] = (int(ds["band_index"].values[i]), "channel index into WAVE (0-based)")
    if "band_wavelength" in ds:
        cards["BBWAVE"] = (
            float(ds["band_wavelength"].values[i]),
            "wavelength of the channel (Angstrom)",
        )
    return cards


def gaussian_fwhm(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """FWHM (arcsec) of a circular 2-D Gaussian centred at (0, 0) fitted to ``image`` (ny, nx).

    ``x``, ``y``: pixel centres (arcsec). Least squares on the finite pixels, free amplitude and
    width, as the MaNGA DRP reports GFWHM etc. for its reconstructed PSFs. NaN if the image has no
    positive pixel or the fit fails.
    """
    img = np.asarray(image, dtype=np.float64)
    ok = np.isfinite(img)
    if ok.sum() < 4 or not np.any(img[ok] > 0):
        return float("nan")
    xx, yy = np.meshgrid(np.asarray(x, np.float64), np.asarray(y, np.float64))
    r2, d = (xx * xx + yy * yy)[ok], img[ok]
    pos = np.clip(d, 0, None)
    sigma0 = max(float(np.sqrt((pos * r2).sum() / pos.sum() / 2)), 1e-2)

    def residual(p: np.ndarray) -> np.ndarray:
        return p[0] * np.exp(-r2 / (2 * p[1] ** 2)) - d

    fit = optimize.least_squares(
        residual, [float(d.max()), sigma0], bounds=([0, 1e-3], [np.inf, np.inf])
    )
    return float(2 * np.sqrt(2 * np.log(2)) * fit.x[1]) if fit.success else float("nan")


# ---------------------------------------------------------------------------------------------
# quality cards


def read_quality(store: str | os.PathLike[str]) -> xr.Dataset | None:
    """The group ``quality`` that ``crrxr quality`` wrote into the cube store (loaded; dims
    ``band``), or None when the store has none."""
    from crrxr.quality.measures import QUALITY_GROUP

    try:
        return xr.open_zarr(store, group=QUALITY_GROUP, consolidated=False).load()
    except (FileNotFoundError, KeyError):  # zarr's GroupNotFoundError is a FileNotFoundError
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise CubeFormatError(
            f"{store}: its {QUALITY_GROUP!r} group cannot be read ({type(exc).__name__}: {exc}); "
            f"measure it again with `crrxr quality {store}`"
        ) from exc


@dataclass
class QualityCards:
    """Header cards ``{key: (value, comment)}`` by destination.

    primary: the primary header. fwhm: ``<BAND>FWHM`` (also on FLUX and ``<BAND>IMG``). psf /
    correl: per band position, the cards of ``<BAND>PSF`` / ``<BAND>CORREL``. comments: COMMENT
    lines for the primary header.
    """

    primary: dict[str, tuple[object, str]] = field(default_factory=dict)
    fwhm: dict[str, tuple[object, str]] = field(default_factory=dict)
    psf: dict[int, dict[str, tuple[object, str]]] = field(default_factory=dict)
    correl: dict[int, dict[str, tuple[object, str]]] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)


def _finite(value: object) -> float | None:
    v = float(value)  # type: ignore[arg-type]
    return v if np.isfinite(v) else None


def _check_quality_matches(ds: xr.Dataset, quality: xr.Dataset, name: str) -> None:
    bands = [str(b) for b in ds["band"].values] if "band" in ds.coords else []
    qbands = [str(b) for b in quality["band"].values] if "band" in quality.coords else []
    same = bands == qbands
    if same and "band_wavelength" in ds and "band_wavelength" in quality.coords:
        same = np.allclose(ds["band_wavelength"].values, quality["band_wavelength"].values)
    if not same:
        raise CubeFormatError(
            f"{name}: its quality measures are for bands {qbands}, the cube has bands {bands} "
            "(stale after a rebuild?); measure again with `crrxr quality CUBE.zarr --rss RSS.zarr`"
        )


def _failed_channels(ds: xr.Dataset, quality: xr.Dataset | None) -> list[int] | None:
    if quality is not None:
        return [int(c) for c in np.atleast_1d(quality.attrs.get("failed_channels", []))]
    try:
        return [int(c) for c in json.loads(ds.attrs["failed_channels"])]
    except (KeyError, TypeError, ValueError):
        return None


def quality_cards(ds: xr.Dataset, quality: xr.Dataset | None, name: str = "cube") -> QualityCards:
    """The quality cards of the export (see the module docstring) from ``crrxr quality``'s Dataset,
    or, when ``quality`` is None, the cheap fallback (Gaussian-fit FWHMs and a COMMENT).

    Raises :class:`CubeFormatError` if ``quality`` was measured on other bands than the cube's.
    """
    out = QualityCards()
    bands = _band_extnames(ds)
    if quality is not None:
        _check_quality_matches(ds, quality, name)
        ref = str(quality.attrs.get("strehl_reference", ""))
        out.primary["QUALRUN"] = (True, "crrxr quality measures (store group 'quality')")
        out.primary["FWHMFIT"] = ("kernel", "<BAND>FWHM: kernel model fitted to <BAND>PSF")
        if ref:
            out.primary["STRLREF"] = (ref, "pseudo-Strehl relative to this kernel's peak")
        for key, attr, what in (
            ("NOCOVFR", "nocov_fraction", "NOCOV"),
            ("LOWCOVFR", "lowcov_fraction", "LOWCOV"),
        ):
            value = _finite(quality.attrs.get(attr, np.nan))
            if value is not None:
                out.primary[key] = (value, f"fraction of spaxel-channels flagged {what}")
    else:
        out.primary["QUALRUN"] = (False, "crrxr quality not run: no quality measures")
        out.primary["FWHMFIT"] = ("gaussian", "<BAND>FWHM: circular Gaussian fit to <BAND>PSF")
        out.comments.append(
            "crrxr quality was not run on this cube (no group 'quality' in its store): "
            "<BAND>FWHM are Gaussian fits to the PSF images, and the pseudo-Strehl, neighbour "
            "correlation and coverage cards are absent. Run `crrxr quality CUBE.zarr --rss "
            "RSS.zarr` before export-fits for them."
        )
    failed = _failed_channels(ds, quality)
    if failed is not None:
        out.primary["NFAILED"] = (len(failed), "channels whose solve failed (DONOTUSE)")
        out.primary["FAILCHAN"] = (json.dumps(failed), "failed channels, 0-based (JSON list)")
    for i, band in bands:
        per_band: dict[str, tuple[float | None, str]] = {}
        if quality is not None:
            q = quality.isel(band=i)
            per_band["FWHM"] = (_finite(q["psf_fwhm"]), "reconstructed PSF FWHM (arcsec)")
            per_band["STREHL"] = (_finite(q["psf_strehl"]), "pseudo-Strehl of the PSF")
            per_band["SEEING"] = (_finite(q["mean_seeing"]), "mean seeing FWHM here (arcsec)")
            rho = (
                ("RHO1", "neighbour_correlation_1px", 1),
                ("RHO2", "neighbour_correlation_2px", 2),
            )
            for key, var, n in rho:
                value = _finite(q[var])
                if value is not None:
                    out.correl.setdefault(i, {})[key] = (value, f"rho with {n}-pixel neighbours")
                    per_band[key] = (value, f"neighbour correlation at {n} pixel(s)")
        elif "psf" in ds:
            fwhm = gaussian_fwhm(ds["psf"].isel(band=i).values, ds["x"].values, ds["y"].values)
            per_band["FWHM"] = (_finite(fwhm), "FWHM of a circular Gaussian fit (arcsec)")
        for key, (value, comment) in per_band.items():
            if value is None:
                continue
            if key in ("FWHM", "STREHL", "SEEING"):
                out.psf.setdefault(i, {})[key] = (value, comment)
            full = f"{band}{key}"
            if len(full) > 8:  # a long band name: only the PSF/CORREL extensions carry it
                continue
            if key == "FWHM":
                comment = f"Reconstructed FWHM in {band.lower()}-band (arcsec)"
                out.fwhm[full] = (value, comment)
            out.primary[full] = (value, comment)
    return out


def _psf_hdus(
    ds: xr.Dataset, celestial: dict[str, object], cards: dict[int, dict[str, tuple[object, str]]]
) -> list[fits.ImageHDU]:
    if "psf" not in ds:
        log.warning("cube has no psf variable; no PSF extensions written")
        return []
    hdus = []
    for i, band in _band_extnames(ds):
        image = np.asarray(ds["psf"].isel(band=i).values, dtype=np.float32)
        hdu = fits.ImageHDU(image, name=f"{band}PSF")
        for key, value in {**celestial, **_band_cards(ds, i), **cards.get(i, {})}.items():
            hdu.header[key] = value
        hdu.header["COMMENT"] = "fraction of a unit point source per spaxel (dimensionless)"
        hdus.append(hdu)
    return hdus


def _correl_hdus(
    ds: xr.Dataset, nx: int, ny: int, cards: dict[int, dict[str, tuple[object, str]]]
) -> list[fits.BinTableHDU]:
    if "correlation" not in ds or "pair_i" not in ds.coords:
        log.warning("cube has no correlation/pair_i/pair_j; no CORREL extensions written")
        return []
    pi = np.asarray(ds["pair_i"].values, dtype=np.int64)
    pj = np.asarray(ds["pair_j"].values, dtype=np.int64)
    hdus = []
    for i, band in _band_extnames(ds):
        rho = np.asarray(ds["correlation"].isel(band=i).values, dtype=np.float64)
        keep = np.isfinite(rho) & (rho != 0)
        a, b = np.minimum(pi[keep], pj[keep]), np.maximum(pi[keep], pj[keep])  # upper triangle
        cols = [
            fits.Column("INDXI_C1", "J", array=(a % nx).astype(np.int32)),
            fits.Column("INDXI_C2", "J", array=(a // nx).astype(np.int32)),
            fits.Column("INDXJ_C1", "J", array=(b % nx).astype(np.int32)),
            fits.Column("INDXJ_C2", "J", array=(b // nx).astype(np.int32)),
            fits.Column("RHOIJ", "D", array=rho[keep]),
        ]
        hdu = fits.BinTableHDU.from_columns(cols, name=f"{band}CORREL")
        for key, value in _band_cards(ds, i).items():
            hdu.header[key] = value
        hdu.header["COVTYPE"] = ("Correlation", "RHOIJ = C_ij / sqrt(C_ii C_jj)")
        hdu.header["COVSHAPE"] = (f"({nx * ny},{nx * ny})", "shape of the full matrix")
        for key, value in cards.get(i, {}).items():
            hdu.header[key] = value
        hdus.append(hdu)
    return hdus


def _verify(path: Path, nx: int, ny: int, nw: int) -> None:
    """Re-open the written file (headers only) and check the image extensions are complete."""
    size = path.stat().st_size
    with fits.open(path, memmap=True) as hdul:
        for name in ("FLUX", "IVAR", "MASK"):
            idx = hdul.index_of(name)
            if hdul[idx].shape != (nw, ny, nx):
                raise CubeFormatError(f"{path}: {name} written with shape {hdul[idx].shape}")
            info = hdul.fileinfo(idx)
            if info["datLoc"] + info["datSpan"] > size:
                raise CubeFormatError(f"{path}: {name} data runs past the end of the file")
