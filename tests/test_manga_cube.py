"""MaNGA LOGCUBE export: small cube stores in the contracts.md section 4 layout, read back with astropy."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import xarray as xr
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from crrxr.cli import main
from crrxr.io.cube import correlation_pairs, cube_template, select_bands
from crrxr.io.manga import CubeFormatError, export_logcube

RA0, DEC0 = 150.25, 32.5  # IFU centre (deg); |dec| large enough that cos(dec) matters
PIX = 0.5  # arcsec


def make_cube(
    path,
    *,
    nside: int = 11,
    nwave: int = 40,
    wave_chunk: int = 16,
    wavelength: np.ndarray | None = None,
    source_xy: tuple[float, float] = (-1.5, 1.0),
    attrs: dict | None = None,
    done: bool = True,
    seed: int = 1,
) -> xr.Dataset:
    """Write a cube store (crrxr.io.cube template, filled with numpy values); return the Dataset."""
    rng = np.random.default_rng(seed)
    if wavelength is None:
        wavelength = 3622.0 * 10 ** (0.0105 * np.arange(nwave))  # log-uniform, covers g,r,i,z
    nwave = len(wavelength)
    c = (np.arange(nside) - (nside - 1) / 2) * PIX
    bands = select_bands(wavelength, [4702.5, 6176.58, 7496.12, 8946.71], ["g", "r", "i", "z"])
    pairs = correlation_pairs(nside, nside, PIX, 1.6)
    base = {"ifu_ra": RA0, "ifu_dec": DEC0, "history": "crrxr test build", "crrxr_version": "test"}
    base.update(attrs or {})
    ds, enc = cube_template(wavelength, c, c, wave_chunk, bands, pairs, base)
    xx, yy = np.meshgrid(c, c)
    image = np.exp(-((xx - source_xy[0]) ** 2 + (yy - source_xy[1]) ** 2) / (2 * 0.8**2))
    flux = (image[None] * (1 + np.arange(nwave))[:, None, None]).astype(np.float32)
    flux += rng.normal(0, 1e-3, flux.shape).astype(np.float32)
    ivar = rng.uniform(1, 2, flux.shape).astype(np.float32)
    mask = np.zeros(flux.shape, np.uint32)
    mask[:, 0, :] = 1 | 1024  # NOCOV | DONOTUSE on the bottom row
    mask[3, 5, 5] = 2
    nb, npair = len(bands.names), len(pairs[0])
    rho = rng.uniform(-0.2, 1.0, (nb, npair))
    rho[:, ::7] = 0.0  # zeros are dropped on export
    ds["flux"] = (("wavelength", "y", "x"), flux, ds["flux"].attrs)
    ds["ivar"] = (("wavelength", "y", "x"), ivar, ds["ivar"].attrs)
    ds["mask"] = (("wavelength", "y", "x"), mask, ds["mask"].attrs)
    ds["psf"] = (("band", "y", "x"), rng.uniform(0, 1, (nb, nside, nside)).astype(np.float32))
    ds["correlation"] = (("band", "pair"), rho)
    ds["channel_failed"] = (("wavelength",), np.zeros(nwave, np.uint8))
    n_chunk = ds.sizes["wavelength_chunk"]
    ds["chunk_done"] = (("wavelength_chunk",), np.full(n_chunk, 1 if done else 0, np.uint8))
    ds.to_zarr(path, encoding=enc, consolidated=False, zarr_format=3)
    return ds


def _open(path):
    return fits.open(path, memmap=False)


def test_export_data_headers_and_layout(tmp_path):
    src = make_cube(tmp_path / "cube.zarr")
    out = tmp_path / "manga-1-2-LOGCUBE.fits"
    assert export_logcube(tmp_path / "cube.zarr", out) == out
    with _open(out) as hdul:
        names = [h.name for h in hdul]
        assert names == [
            "PRIMARY", "FLUX", "IVAR", "MASK", "WAVE", "GIMG", "RIMG", "IIMG",  # z: 91% covered
            "GPSF", "RPSF", "IPSF", "ZPSF", "GCORREL", "RCORREL", "ICORREL", "ZCORREL",
        ]  # fmt: skip
        nw, n = src.sizes["wavelength"], src.sizes["x"]
        for ext, var in (("FLUX", "flux"), ("IVAR", "ivar"), ("MASK", "mask")):
            h = hdul[ext].header
            assert (h["NAXIS1"], h["NAXIS2"], h["NAXIS3"]) == (n, n, nw)  # x, y, wavelength
            np.testing.assert_array_equal(hdul[ext].data, src[var].values)
        assert hdul["FLUX"].header["BITPIX"] == -32 and hdul["MASK"].header["BITPIX"] == 32
        assert hdul["MASK"].header["MASKNAME"] == "MANGA_DRP3PIXMASK"
        assert u.Unit(hdul["FLUX"].header["BUNIT"], format="fits") == 1e-17 * u.erg / (
            u.s * u.cm**2 * u.AA
        )
        assert u.Unit(hdul["IVAR"].header["BUNIT"]) == u.Unit(hdul["FLUX"].header["BUNIT"]) ** -2
        np.testing.assert_array_equal(hdul["WAVE"].data, src["wavelength"].values)
        for i, band in enumerate("GRIZ"):
            np.testing.assert_array_equal(hdul[f"{band}PSF"].data, src["psf"].values[i])
            assert hdul[f"{band}PSF"].header["BBINDEX"] == int(src["band_index"][i])
        h0 = hdul[0].header
        assert h0["IFURA"] == RA0 and h0["CRRXRVER"]
        assert "crrxr test build" in str(h0["HISTORY"])
        h = hdul["FLUX"].header
        assert h["CTYPE1"] == "RA---TAN" and h["CTYPE2"] == "DEC--TAN"
        assert h["CD1_1"] == pytest.approx(-PIX / 3600) and h["CD2_2"] == pytest.approx(PIX / 3600)
        assert h["CRPIX1"] == pytest.approx((n + 1) / 2) and h["CRPIX2"] == pytest.approx(
            (n + 1) / 2
        )
        assert (h["CRVAL1"], h["CRVAL2"]) == (RA0, DEC0)
        assert h["CTYPE3"] == "WAVE-LOG" and h["CUNIT3"] == "Angstrom"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.zarr", out.name]


def test_psf_fwhm_header_cards(tmp_path):
    """GFWHM..ZFWHM: Gaussian fits to the PSF images; exact for Gaussian images of known FWHM."""
    ds = make_cube(tmp_path / "cube.zarr")
    c = ds["x"].values
    xx, yy = np.meshgrid(c, c)
    fwhms = [2.4, 2.5, 2.55, 2.6]
    sig = np.array(fwhms) / (2 * np.sqrt(2 * np.log(2)))
    psf = np.exp(-(xx**2 + yy**2)[None] / (2 * sig[:, None, None] ** 2)) * 0.03
    ds["psf"] = (("band", "y", "x"), psf.astype(np.float32))
    export_logcube(ds, tmp_path / "c.fits")
    with _open(tmp_path / "c.fits") as hdul:
        for band, fwhm in zip("GRIZ", fwhms):
            assert hdul[0].header[f"{band}FWHM"] == pytest.approx(fwhm, rel=1e-5)
            assert hdul[f"{band}PSF"].header["FWHM"] == pytest.approx(fwhm, rel=1e-5)
            if f"{band}IMG" in hdul:  # the broadband image names its PSF's FWHM too
                assert hdul[f"{band}IMG"].header[f"{band}FWHM"] == pytest.approx(fwhm, rel=1e-5)


def test_correl_tables(tmp_path):
    src = make_cube(tmp_path / "cube.zarr")
    out = tmp_path / "c.fits"
    export_logcube(tmp_path / "cube.zarr", out)
    nx = ny = src.sizes["x"]
    pi, pj = src["pair_i"].values, src["pair_j"].values
    with _open(out) as hdul:
        for b, band in enumerate("GRIZ"):
            hdu = hdul[f"{band}CORREL"]
            t = hdu.data
            assert t.columns.names == ["INDXI_C1", "INDXI_C2", "INDXJ_C1", "INDXJ_C2", "RHOIJ"]
            assert [t.columns[c].format for c in t.columns.names] == ["J", "J", "J", "J", "D"]
            h = hdu.header
            assert h["COVTYPE"] == "Correlation" and h["COVSHAPE"] == f"({nx * ny},{nx * ny})"
            assert h["BBINDEX"] == int(src["band_index"][b])
            assert h["BBWAVE"] == float(src["band_wavelength"][b])
            i = t["INDXI_C2"].astype(np.int64) * nx + t["INDXI_C1"]
            j = t["INDXJ_C2"].astype(np.int64) * nx + t["INDXJ_C1"]
            assert np.all(i <= j)  # upper triangle
            rho = src["correlation"].values[b]
            keep = rho != 0
            expected = sorted(zip(pi[keep], pj[keep], rho[keep]))
            assert sorted(zip(i, j, t["RHOIJ"])) == expected
            # dense check against the source matrix: the full symmetric matrix rebuilds exactly
            dense = np.zeros((nx * ny, nx * ny))
            dense[pi, pj] = rho
            dense[pj, pi] = rho
            back = np.zeros_like(dense)
            back[i, j] = t["RHOIJ"]
            back[j, i] = t["RHOIJ"]
            np.testing.assert_array_equal(back, dense)


def test_wcs_point_source_lands_on_expected_pixel(tmp_path):
    # a source 1.5" East and 1.0" North of the IFU centre: +x = West, so x = -1.5
    east, north = 1.5, 1.0
    make_cube(tmp_path / "cube.zarr", source_xy=(-east, north))
    out = tmp_path / "c.fits"
    export_logcube(tmp_path / "cube.zarr", out)
    with _open(out) as hdul:
        w = WCS(hdul["FLUX"].header).celestial
        image = hdul["FLUX"].data[10]
    n = image.shape[0]
    centre = (n - 1) / 2
    src = SkyCoord(RA0 * u.deg, DEC0 * u.deg).spherical_offsets_by(
        east * u.arcsec, north * u.arcsec
    )
    px, py = w.world_to_pixel(src)
    # expected 0-based pixel: x index decreases by east/PIX, y index increases by north/PIX
    assert px == pytest.approx(centre - east / PIX, abs=1e-3)
    assert py == pytest.approx(centre + north / PIX, abs=1e-3)
    iy, ix = np.unravel_index(np.argmax(image), image.shape)
    assert (ix, iy) == (round(float(px)), round(float(py)))
    # RA increases to the East, i.e. toward decreasing x pixel index; Dec increases with y
    c0, cl, cu = w.pixel_to_world([centre, centre - 1, centre], [centre, centre, centre + 1])
    assert cl.ra > c0.ra and cu.dec > c0.dec
    assert c0.separation(SkyCoord(RA0 * u.deg, DEC0 * u.deg)).arcsec < 1e-6


def _spectral_world(path) -> np.ndarray:
    with _open(path) as hdul:
        w = WCS(hdul["FLUX"].header, fobj=hdul)
        n = hdul["FLUX"].header["NAXIS3"]
        return w.sub([3]).pixel_to_world_values(np.arange(n)) * 1e10  # m -> Angstrom


@pytest.mark.parametrize("kind", ["log", "linear", "irregular"])
def test_spectral_wcs_reproduces_wavelength(tmp_path, kind):
    k = np.arange(57, dtype=np.float64)
    wavelength = {
        "log": 3621.5960 * 10 ** (1e-4 * k),
        "linear": 5000.0 + 1.25 * k,
        "irregular": 5000.0 + 2.0 * k + 0.01 * k**2,
    }[kind]
    make_cube(tmp_path / "cube.zarr", wavelength=wavelength)
    out = tmp_path / "c.fits"
    export_logcube(tmp_path / "cube.zarr", out)
    with _open(out) as hdul:
        assert (
            hdul["FLUX"].header["CTYPE3"]
            == {"log": "WAVE-LOG", "linear": "WAVE", "irregular": "WAVE-TAB"}[kind]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy FITSFixedWarning about cards it normalises
        world = _spectral_world(out)
    np.testing.assert_allclose(world, wavelength, rtol=1e-6)


def test_streaming_memory_is_bounded(tmp_path):
    make_cube(tmp_path / "warm.zarr", nwave=20)
    export_logcube(tmp_path / "warm.zarr", tmp_path / "warm.fits")  # imports out of the measurement
    make_cube(tmp_path / "cube.zarr", nside=25, nwave=1500, wave_chunk=50)
    out = tmp_path / "c.fits"
    tracemalloc.start()
    try:
        export_logcube(tmp_path / "cube.zarr", out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = out.stat().st_size  # ~11 MB; one 50-channel chunk of one variable is 0.125 MB
    assert peak < size / 4, (peak, size)
    src = xr.open_zarr(tmp_path / "cube.zarr", consolidated=False)
    with _open(out) as hdul:
        np.testing.assert_array_equal(hdul["IVAR"].data, src["ivar"].values)


def test_in_memory_dataset_and_overrides(tmp_path):
    src = make_cube(tmp_path / "cube.zarr", attrs={"ifu_ra": None})
    ds = xr.open_zarr(tmp_path / "cube.zarr", consolidated=False)
    del ds.attrs["ifu_ra"]
    with pytest.raises(CubeFormatError, match="ifu_ra.*--ifu-ra"):
        export_logcube(ds, tmp_path / "x.fits")
    assert not (tmp_path / "x.fits").exists()
    export_logcube(ds, tmp_path / "x.fits", ifu_ra=10.0, ifu_dec=-5.0)
    with _open(tmp_path / "x.fits") as hdul:
        assert (hdul["FLUX"].header["CRVAL1"], hdul["FLUX"].header["CRVAL2"]) == (10.0, -5.0)
        np.testing.assert_array_equal(hdul["FLUX"].data, src["flux"].values)


def test_bad_cubes_give_clear_errors_and_no_output(tmp_path):
    out = tmp_path / "c.fits"
    with pytest.raises(FileNotFoundError, match="nope.zarr"):
        export_logcube(tmp_path / "nope.zarr", out)
    assert main(["export-fits", str(tmp_path / "nope.zarr"), str(out)]) == 1

    make_cube(tmp_path / "partial.zarr", done=False)
    with pytest.raises(CubeFormatError, match="partial.zarr.*incomplete"):
        export_logcube(tmp_path / "partial.zarr", out)
    assert main(["export-fits", str(tmp_path / "partial.zarr"), str(out)]) == 1
    assert (
        main(["export-fits", str(tmp_path / "partial.zarr"), str(out), "--allow-incomplete"]) == 0
    )
    out.unlink()

    ds = make_cube(tmp_path / "cube.zarr")
    ds.drop_vars("ivar").to_zarr(tmp_path / "noivar.zarr", consolidated=False)
    with pytest.raises(CubeFormatError, match=r"noivar.zarr.*missing \['ivar'\]"):
        export_logcube(tmp_path / "noivar.zarr", out)

    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(CubeFormatError, match="junk.zarr.*cannot open"):
        export_logcube(tmp_path / "junk.zarr", out)
    assert main(["export-fits", str(tmp_path / "junk.zarr"), str(out)]) == 1

    # a failure after the file was started (mask value that does not fit int32) leaves nothing
    bad = make_cube(tmp_path / "cube2.zarr")
    bad["mask"][5, 2, 2] = np.uint32(2**31)
    bad.attrs["history"] = "x"
    with pytest.raises(CubeFormatError, match="mask values"):
        export_logcube(bad, out)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".zarr")) == []
