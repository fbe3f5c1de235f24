"""MaNGA LOGRSS ingest: synthetic files in the DRP layout, compared value by value after ingest."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from crrxr.cli import main
from crrxr.core.masks import RSS_DEADFIBER, RSS_NODATA, RSS_NOSKY, RSS_REJECT
from crrxr.io.manga import MangaFormatError, UnknownMaskBitsError, ingest_manga_rss
from crrxr.io.manga_masks import DRP2_TO_RSS, DRP2PIXMASK_BITS, map_drp2pixmask

try:  # the schema validator (crrxr.io.rss) is built alongside; use it once it is there
    from crrxr.io import open_rss
except ImportError:  # pragma: no cover
    open_rss = None

N_FIBER, N_EXP, N_WAVE = 7, 3, 50


def make_logrss(
    path: Path,
    *,
    n_fiber: int = N_FIBER,
    n_exp: int = N_EXP,
    n_wave: int = N_WAVE,
    seed: int = 0,
    obsinfo: bool = True,
    compress: bool = False,
    mask_bits: dict[str, list[tuple[int, int]]] | None = None,
) -> dict[str, np.ndarray]:
    """Write a LOGRSS-like file; return the arrays written (numpy shapes as in the file)."""
    rng = np.random.default_rng(seed)
    n_rows = n_fiber * n_exp
    wave = 3622.0 * 10 ** (1e-4 * np.arange(n_wave))
    arrays = {
        "FLUX": rng.normal(1.0, 0.3, (n_rows, n_wave)).astype(np.float32),
        "IVAR": rng.uniform(0.5, 4.0, (n_rows, n_wave)).astype(np.float32),
        "XPOS": rng.normal(0, 5, (n_rows, n_wave)).astype(np.float32),
        "YPOS": rng.normal(0, 5, (n_rows, n_wave)).astype(np.float32),
        "MASK": np.zeros((n_rows, n_wave), dtype=np.int32),
        "WAVE": wave,
    }
    if (
        mask_bits is None
    ):  # defaults: a dead fiber, a few rejected/nosky/nodata/informational samples
        mask_bits = {
            "DEADFIBER": [(3, c) for c in range(n_wave)],
            "3DREJECT": [(0, 5), (10, 7)],
            "COSMIC": [(1, 9)],
            "NOSKY": [(2, 11), (2, 12)],
            "NODATA": [(4, 0)],
            "SMEARIMAGE": [(5, 3), (0, 5)],
            "BADSKYCHI": [(6, 20)],
        }
    for name, where in mask_bits.items():
        bit = DRP2PIXMASK_BITS[name] if name in DRP2PIXMASK_BITS else int(name.removeprefix("bit"))
        for r, c in where:
            arrays["MASK"][r, c] |= np.int32(np.uint32(1 << bit).view(np.int32))
    seeing = rng.uniform(1.2, 1.8, n_exp)
    psffac = rng.uniform(0.95, 1.1, n_exp)
    arrays["SEEING"], arrays["PSFFAC"] = seeing, psffac
    primary = fits.PrimaryHDU()
    primary.header["NEXP"] = n_exp
    primary.header["PLATEIFU"] = "9999-701"
    hdus = [primary]
    for name in ("FLUX", "IVAR", "MASK"):
        hdus.append(fits.ImageHDU(arrays[name], name=name))
    hdus[1].header["IFURA"] = 150.25
    hdus[1].header["IFUDEC"] = 2.5
    hdus[1].header["BUNIT"] = "1E-17 erg/s/cm^2/Ang/fiber"
    hdus[3].header["MASKNAME"] = "MANGA_DRP2PIXMASK"
    hdus.append(fits.ImageHDU(wave, name="WAVE"))
    for name in ("XPOS", "YPOS"):
        hdus.append(fits.ImageHDU(arrays[name], name=name))
    if obsinfo:
        cols = [
            fits.Column("EXPNUM", "J", array=np.arange(n_exp) + 177000),
            fits.Column("SEEING", "E", array=seeing),
            fits.Column("PSFFAC", "E", array=psffac),
        ]
        hdus.append(fits.BinTableHDU.from_columns(cols, name="OBSINFO"))
    if compress:
        plain = path.with_suffix("")
        fits.HDUList(hdus).writeto(plain)
        with open(plain, "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        plain.unlink()
    else:
        fits.HDUList(hdus).writeto(path)
    arrays["SEEING"] = seeing.astype(np.float32)  # as stored ('E')
    arrays["PSFFAC"] = psffac.astype(np.float32)
    return arrays


def _assert_ingested(
    ds: xr.Dataset, src: dict[str, np.ndarray], n_fiber=N_FIBER, n_exp=N_EXP
) -> None:
    n_rows = n_fiber * n_exp
    assert ds.sizes == {"spectrum": n_rows, "wavelength": src["FLUX"].shape[1], "exposure": n_exp}
    np.testing.assert_array_equal(ds["wavelength"].values, src["WAVE"])
    for var in ("flux", "ivar", "xpos", "ypos"):
        np.testing.assert_array_equal(ds[var].values, src[var.upper()])
    assert ds["flux"].dtype == np.float32 and ds["xpos"].dtype == np.float64
    assert ds["mask"].dtype == np.uint32
    np.testing.assert_array_equal(ds["mask"].values, map_drp2pixmask(src["MASK"]))
    np.testing.assert_array_equal(ds["exposure_index"].values, np.repeat(np.arange(n_exp), n_fiber))
    np.testing.assert_array_equal(ds["fiber"].values, np.tile(np.arange(n_fiber), n_exp))
    np.testing.assert_array_equal(ds["exposure"].values, np.arange(n_exp) + 177000)
    expected_seeing = src["SEEING"].astype(np.float64) * src["PSFFAC"].astype(np.float64)
    np.testing.assert_array_equal(ds["seeing_fwhm"].values, expected_seeing)
    assert ds.attrs["ifu_ra"] == 150.25 and ds.attrs["ifu_dec"] == 2.5


@pytest.mark.parametrize("compress", [False, True], ids=["fits", "fits.gz"])
def test_ingest_round_trip_exact(tmp_path, compress):
    src_path = tmp_path / ("manga-9999-701-LOGRSS.fits" + (".gz" if compress else ""))
    src = make_logrss(src_path, compress=compress)
    out = tmp_path / "rss.zarr"
    assert ingest_manga_rss(src_path, out, wave_chunk=16) == out
    ds = xr.open_zarr(out)
    _assert_ingested(ds, src)
    if open_rss is not None:
        assert open_rss(out).sizes == ds.sizes  # the schema validator accepts the store
    # chunked along wavelength only, 16 channels (the last chunk shorter: 50 = 3*16 + 2)
    assert ds["flux"].encoding["chunks"] == (N_FIBER * N_EXP, 16)
    assert ds["flux"].chunks == ((N_FIBER * N_EXP,), (16, 16, 16, 2))
    # nothing but the store is left in the directory (no temporary decompressed copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src_path.name, "rss.zarr"])


def test_mask_mapping_bit_by_bit():
    for name, bit in DRP2PIXMASK_BITS.items():
        m = np.array([1 << bit], dtype=np.int64).astype(np.uint32).view(np.int32)
        assert int(map_drp2pixmask(m)[0]) == DRP2_TO_RSS[name], name
    # the spec'd anchors
    one = lambda name: int(map_drp2pixmask(np.array([1 << DRP2PIXMASK_BITS[name]]))[0])  # noqa: E731
    assert one("DEADFIBER") == RSS_DEADFIBER
    assert one("3DREJECT") == RSS_REJECT
    assert one("COSMIC") == RSS_REJECT
    assert one("NOSKY") == RSS_NOSKY
    assert one("NODATA") == RSS_NODATA
    assert one("SMEARIMAGE") == 0
    # combinations OR together
    combo = (1 << 13) | (1 << 30) | (1 << 23) | (1 << 10)
    assert int(map_drp2pixmask(np.array([combo]))[0]) == RSS_DEADFIBER | RSS_REJECT | RSS_NOSKY


def test_ingested_mask_values(tmp_path):
    src_path = tmp_path / "r.fits"
    make_logrss(src_path)
    out = tmp_path / "rss.zarr"
    ingest_manga_rss(src_path, out, wave_chunk=7)
    mask = xr.open_zarr(out)["mask"].values
    assert np.all(mask[3] == RSS_DEADFIBER)
    assert mask[0, 5] == RSS_REJECT and mask[10, 7] == RSS_REJECT and mask[1, 9] == RSS_REJECT
    assert mask[2, 11] == RSS_NOSKY and mask[6, 20] == RSS_NOSKY
    assert mask[4, 0] == RSS_NODATA
    assert mask[5, 3] == 0  # informational SMEARIMAGE only
    assert np.count_nonzero(mask) == N_WAVE + 3 + 2 + 1 + 1


def test_unknown_mask_bit_is_an_error_unless_allowed(tmp_path):
    src_path = tmp_path / "r.fits"
    make_logrss(src_path, mask_bits={"bit14": [(2, 40)], "bit31": [(0, 1)]})
    out = tmp_path / "rss.zarr"
    with pytest.raises(UnknownMaskBitsError, match=r"r\.fits.*\[14, 31\]|r\.fits.*\[31\]") as info:
        ingest_manga_rss(src_path, out, wave_chunk=64)
    assert "allow" in str(info.value)
    assert not out.exists()
    ingest_manga_rss(src_path, out, wave_chunk=64, allow_unknown_mask_bits=True)
    mask = xr.open_zarr(out)["mask"].values
    assert mask[2, 40] == RSS_REJECT and mask[0, 1] == RSS_REJECT


def test_missing_obsinfo_needs_explicit_seeing(tmp_path):
    src_path = tmp_path / "r.fits"
    make_logrss(src_path, obsinfo=False)
    out = tmp_path / "rss.zarr"
    with pytest.raises(MangaFormatError, match="OBSINFO.*--seeing"):
        ingest_manga_rss(src_path, out)
    assert not out.exists()
    ingest_manga_rss(src_path, out, seeing=1.4)
    ds = xr.open_zarr(out)
    np.testing.assert_array_equal(ds["seeing_fwhm"].values, np.full(N_EXP, 1.4))
    np.testing.assert_array_equal(ds["exposure"].values, np.arange(N_EXP))


def test_missing_ifu_centre_and_bad_seeing(tmp_path, caplog):
    src_path = tmp_path / "r.fits"
    make_logrss(src_path)
    with fits.open(src_path) as hdul:
        del hdul["FLUX"].header["IFURA"]
        hdul["OBSINFO"].data["PSFFAC"][1] = np.nan
        hdul.writeto(tmp_path / "b.fits")
    with pytest.raises(MangaFormatError, match=r"b\.fits.*SEEING x PSFFAC.*exposure\(s\) \[1\]"):
        ingest_manga_rss(tmp_path / "b.fits", tmp_path / "b.zarr")
    with caplog.at_level("WARNING"):
        ingest_manga_rss(tmp_path / "b.fits", tmp_path / "b.zarr", seeing=1.3)
    assert "no IFURA/IFUDEC" in caplog.text
    ds = xr.open_zarr(tmp_path / "b.zarr")
    assert "ifu_ra" not in ds.attrs and "ifu_dec" not in ds.attrs
    assert "user value 1.3" in ds["seeing_fwhm"].attrs["source"]


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_truncated_file(tmp_path):
    src_path = tmp_path / "r.fits"
    make_logrss(src_path)
    data = src_path.read_bytes()
    src_path.write_bytes(data[: len(data) - 2880 * 3 - 100])
    out = tmp_path / "rss.zarr"
    with pytest.raises(MangaFormatError, match=r"r\.fits.*(truncated|not a readable FITS)"):
        ingest_manga_rss(src_path, out)
    assert _listing(tmp_path) == ["r.fits"]
    assert main(["ingest-manga", str(src_path), str(out)]) == 1
    assert _listing(tmp_path) == ["r.fits"]


def test_truncated_gzip(tmp_path):
    src_path = tmp_path / "r.fits.gz"
    make_logrss(src_path, compress=True)
    data = src_path.read_bytes()
    src_path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "rss.zarr"
    with pytest.raises(MangaFormatError, match=r"r\.fits\.gz.*gzip"):
        ingest_manga_rss(src_path, out)
    assert _listing(tmp_path) == ["r.fits.gz"]


def test_missing_extension(tmp_path):
    src_path = tmp_path / "r.fits"
    make_logrss(src_path)
    with fits.open(src_path) as hdul:
        del hdul["YPOS"]
        hdul.writeto(tmp_path / "noypos.fits")
    out = tmp_path / "rss.zarr"
    with pytest.raises(MangaFormatError, match=r"noypos\.fits.*missing extension 'YPOS'"):
        ingest_manga_rss(tmp_path / "noypos.fits", out)
    assert not out.exists()


def test_mismatched_shapes(tmp_path):
    src_path = tmp_path / "r.fits"
    make_logrss(src_path)
    with fits.open(src_path) as hdul:
        hdul["IVAR"].data = hdul["IVAR"].data[:, :-1].copy()
        hdul.writeto(tmp_path / "bad.fits")
    out = tmp_path / "rss.zarr"
    with pytest.raises(MangaFormatError, match=r"bad\.fits.*IVAR has shape"):
        ingest_manga_rss(tmp_path / "bad.fits", out)
    assert not out.exists()


def test_uint32_mask_extension(tmp_path):
    """A MASK stored as unsigned (BITPIX 32 + BZERO 2^31) maps exactly like the int32 one."""
    src_path = tmp_path / "r.fits"
    src = make_logrss(src_path)
    with fits.open(src_path) as hdul:
        hdul["MASK"].data = src["MASK"].view(np.uint32)
        hdul.writeto(tmp_path / "u.fits")
    with fits.open(tmp_path / "u.fits") as hdul:
        assert hdul["MASK"].header["BZERO"] == 2**31
    ingest_manga_rss(tmp_path / "u.fits", tmp_path / "u.zarr")
    mask = xr.open_zarr(tmp_path / "u.zarr")["mask"].values
    np.testing.assert_array_equal(mask, map_drp2pixmask(src["MASK"]))


def test_inconsistent_data_fails_validation_and_leaves_nothing(tmp_path):
    src_path = tmp_path / "r.fits"
    make_logrss(src_path)
    with fits.open(src_path, mode="update") as hdul:
        hdul["IVAR"].data[4, 10] = -1.0  # a negative inverse variance
        hdul["XPOS"].data[8, 3] = np.nan  # NaN position of a usable sample
    out = tmp_path / "rss.zarr"
    with pytest.raises(ValueError, match=r"r\.fits.*fails validation") as info:
        ingest_manga_rss(src_path, out)
    assert "ivar" in str(info.value) and "xpos" in str(info.value)
    assert _listing(tmp_path) == ["r.fits"]
    ingest_manga_rss(src_path, out, validate=False)  # the user may still convert it as is
    assert xr.open_zarr(out)["ivar"].values[4, 10] == -1.0


def test_rows_not_divisible_by_nexp(tmp_path):
    src_path = tmp_path / "r.fits"
    make_logrss(src_path)
    with fits.open(src_path, mode="update") as hdul:
        hdul[0].header["NEXP"] = 4
    with pytest.raises(MangaFormatError, match="NEXP=4"):
        ingest_manga_rss(src_path, tmp_path / "rss.zarr")


def test_nonexistent_path_and_existing_output(tmp_path):
    out = tmp_path / "rss.zarr"
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        ingest_manga_rss(tmp_path / "nope.fits", out)
    assert main(["ingest-manga", str(tmp_path / "nope.fits"), str(out)]) == 1
    assert not out.exists()
    src_path = tmp_path / "r.fits"
    make_logrss(src_path)
    ingest_manga_rss(src_path, out)
    with pytest.raises(FileExistsError):
        ingest_manga_rss(src_path, out)
    assert main(["ingest-manga", str(src_path), str(out), "--overwrite", "--wave-chunk", "8"]) == 0
    assert xr.open_zarr(out)["flux"].encoding["chunks"][1] == 8


def test_cli_subprocess_error_exit_code(tmp_path):
    bad = tmp_path / "garbage-LOGRSS.fits"
    bad.write_bytes(b"this is not a FITS file" * 200)
    out = tmp_path / "rss.zarr"
    proc = subprocess.run(
        [sys.executable, "-m", "crrxr.cli", "ingest-manga", str(bad), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "garbage-LOGRSS.fits" in proc.stderr and "not a readable FITS" in proc.stderr
    assert not out.exists()
    assert _listing(tmp_path) == ["garbage-LOGRSS.fits"]


def test_streaming_memory_is_bounded(tmp_path):
    """Peak Python-heap allocation while ingesting stays far below the file size (section reads)."""
    warm = tmp_path / "warm.fits"  # first use imports codecs etc.; keep that out of the measurement
    make_logrss(warm)
    ingest_manga_rss(warm, tmp_path / "warm.zarr")
    src_path = tmp_path / "big.fits"
    make_logrss(src_path, n_fiber=19, n_exp=3, n_wave=12000, mask_bits={})
    size = src_path.stat().st_size  # ~13.8 MB
    out = tmp_path / "rss.zarr"
    tracemalloc.start()
    try:
        ingest_manga_rss(src_path, out, wave_chunk=400, validate=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one chunk of all five images is 57 x 400 x (4+4+4+8+8) bytes = 0.64 MB (measured peak ~2 MB
    # with xarray/zarr overhead, limit 3.45 MB); any whole image would add 2.7-5.5 MB. (The schema
    # validation pass that follows by default is chunked too: measured ~3.2 MB at 200 channels.)
    assert peak < size / 4, (peak, size)
    ds = xr.open_zarr(out)
    with fits.open(src_path) as hdul:
        np.testing.assert_array_equal(ds["flux"].values, hdul["FLUX"].data)
