"""The LOGCUBE export opened by the field's own readers: mangadap's MaNGADataCube (in this
environment) and marvin's Cube in local-file mode (from .venv-marvin, see scripts/_marvin_env.sh).

Path: simulate (LSF varying between fibers) -> LOGRSS FITS with survey header cards -> ingest-manga
-> build (CLI) -> export-fits to a .gz name (CLI) -> readers. Every value a reader returns is
compared with the cube store; the identity cards must be those of the LOGRSS.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from test_manga_end_to_end import write_logrss

from crrxr.cli import main
from crrxr.io.manga import CubeFormatError, export_logcube
from crrxr.simulate.rss_writer import simulate_rss

ROOT = Path(__file__).resolve().parents[1]
MARVIN_PY = ROOT / ".venv-marvin" / "bin" / "python"
SIG2FWHM = 2 * np.sqrt(2 * np.log(2))
SURVEY = {
    "PLATEIFU": "8485-1901",
    "MANGAID": "1-209232",
    "OBJRA": 232.544703894,
    "OBJDEC": 48.6902009334,
    "VERSDRP2": "v3_1_1",
    "VERSDRP3": "v3_1_1",
    "EBVGAL": 0.0136,
    "SRVYMODE": "MaNGA dither",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(cube Dataset, path of the exported manga-8485-1901-LOGCUBE.fits.gz)."""
    tmp = tmp_path_factory.mktemp("readers")
    sim = simulate_rss(
        None,
        bundle=19,
        exposures=3,
        nwave=8,
        wave_range=(3622.0, 10354.0),
        noise=20.0,
        seed=11,
        ifu_ra=232.5447,
        ifu_dec=48.6902,
        lsf_sigma=1.1,
        lsf_spread=0.4,
    ).load()
    logrss = tmp / "manga-8485-1901-LOGRSS.fits"
    write_logrss(sim, logrss)
    with fits.open(logrss, mode="update") as hdul:
        hdul[0].header.update(SURVEY)
        hdul.append(fits.ImageHDU(sim["lsf_sigma"].values, name="LSFPRE"))
    rss, cube, out = (
        str(tmp / n) for n in ("rss.zarr", "cube.zarr", "manga-8485-1901-LOGCUBE.fits.gz")
    )
    assert main(["ingest-manga", str(logrss), rss, "--wave-chunk", "3"]) == 0
    assert main(["build", rss, cube, "--method", "crr", "--no-progress"]) == 0
    assert main(["export-fits", cube, out]) == 0
    return xr.open_zarr(cube).load(), Path(out)


def test_gz_name_is_really_gzip_and_identity_is_carried(exported):
    cube, path = exported
    with open(path, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"
    with gzip.open(path) as fh:
        assert fh.read(6) == b"SIMPLE"
    with fits.open(path) as hdul:
        for h in (hdul[0].header, hdul["FLUX"].header):
            for key, value in SURVEY.items():
                assert h[key] == value, key
        assert "PLACEHLD" not in hdul[0].header or "PLATEIFU" not in hdul[0].header["PLACEHLD"]
        assert hdul[0].header["PLATEID"] == 8485 and hdul[0].header["IFUDSGN"] == "1901"
    assert json.loads(cube.attrs["manga_source"])["PLATEIFU"] == "8485-1901"


def test_mangadap_reads_flux_ivar_mask_resolution_and_correlation(exported):
    from mangadap.datacube import MaNGADataCube

    cube, path = exported
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dap = MaNGADataCube(str(path), covar_ext="GCORREL")
    flux, ivar, mask = (cube[v].values for v in ("flux", "ivar", "mask"))
    # mangadap holds (x, y, wavelength): the transpose of the FITS / numpy (wavelength, y, x)
    np.testing.assert_array_equal(dap.flux.data, flux.T)
    np.testing.assert_array_equal(dap.ivar, ivar.T)
    np.testing.assert_array_equal(dap.mask, mask.T.astype(dap.mask.dtype))
    np.testing.assert_array_equal(dap.wave, cube["wavelength"].values)
    # spectral resolution from LSFPRE: R = lambda / (2.3548 sigma); compare where the cube has an
    # LSF and the DAP kept it (it zeroes spectra it cannot interpolate: < 1% here)
    lsf = cube["lsf_sigma"].values.T.astype(np.float64)
    ok = np.isfinite(lsf) & (lsf > 0) & (dap.sres > 0)
    assert ok.sum() > 0.99 * (np.isfinite(lsf) & (lsf > 0)).sum()
    r = cube["wavelength"].values[None, None, :] / (SIG2FWHM * lsf)
    assert dap.sres_ext == "LSFPRE"
    np.testing.assert_allclose(dap.sres[ok], r[ok], rtol=1e-6)
    assert dap.meta["ebv"] == SURVEY["EBVGAL"]
    # correlation of the g band: a pair stored in the cube, at mangadap's flat index x * ny + y
    rho = cube["correlation"].sel(band="g").values
    pi, pj = cube["pair_i"].values, cube["pair_j"].values
    nx = cube.sizes["x"]
    k = int(np.flatnonzero((pi != pj) & (np.abs(rho) > 0.1))[0])
    (xi, yi), (xj, yj) = (pi[k] % nx, pi[k] // nx), (pj[k] % nx, pj[k] // nx)
    ny = cube.sizes["y"]
    full = dap.covar.toarray()
    assert full[xi * ny + yi, xj * ny + yj] == pytest.approx(rho[k], rel=1e-12)


@pytest.mark.skipif(
    not MARVIN_PY.exists(),
    reason=".venv-marvin missing: scripts/_marvin_env.sh could not install the marvin extra",
)
def test_marvin_reads_the_export(exported):
    cube, path = exported
    x, y = 9, 11
    run = subprocess.run(
        [
            str(MARVIN_PY),
            str(ROOT / "tests" / "readers" / "marvin_read.py"),
            str(path),
            str(x),
            str(y),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=path.parent,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["plateifu"] == SURVEY["PLATEIFU"] and got["mangaid"] == SURVEY["MANGAID"]
    assert (got["ra"], got["dec"]) == (SURVEY["OBJRA"], SURVEY["OBJDEC"])
    assert got["release"] == "DR17"  # from VERSDRP3 = v3_1_1
    assert got["shape"] == list(cube["flux"].shape)
    np.testing.assert_array_equal(got["flux"], cube["flux"].values[:, y, x])
    np.testing.assert_array_equal(got["spaxel_flux"], cube["flux"].values[:, y, x])
    np.testing.assert_array_equal(got["ivar"], cube["ivar"].values[:, y, x])
    np.testing.assert_array_equal(got["mask"], cube["mask"].values[:, y, x])
    np.testing.assert_array_equal(got["dispersion_prepixel"], cube["lsf_sigma"].values[:, y, x])
    assert np.all(np.array(got["dispersion"]) > np.array(got["dispersion_prepixel"]))
    np.testing.assert_array_equal(got["wavelength"], cube["wavelength"].values)
    assert "erg" in got["flux_unit"]


def test_simulated_cube_gets_flagged_placeholders_and_still_opens(tmp_path):
    from mangadap.datacube import MaNGADataCube

    simulate_rss(tmp_path / "rss.zarr", bundle=7, exposures=3, nwave=6, noise=None, seed=2)
    from crrxr.engine.build import build_cube

    build_cube(tmp_path / "rss.zarr", tmp_path / "c.zarr", method="shepard", progress=False)
    out = export_logcube(tmp_path / "c.zarr", tmp_path / "manga-0-0-LOGCUBE.fits")
    with fits.open(out) as hdul:
        h = hdul[0].header
        for key in ("PLATEIFU", "MANGAID", "VERSDRP3", "EBVGAL", "OBJRA", "OBJDEC"):
            assert key in h["PLACEHLD"].split(), key
            assert "PLACEHOLDER" in h.comments[key]
        assert "placeholders" in str(h["COMMENT"])
        assert "LSFPRE" not in hdul  # no LSF in the RSS: none is invented
    # ... unless given: a constant LSF (Angstrom) for the export
    out = export_logcube(
        tmp_path / "c.zarr", tmp_path / "manga-0-0-LOGCUBE.fits", overwrite=True, lsf_sigma=1.2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dap = MaNGADataCube(str(out))
    wave = xr.open_zarr(tmp_path / "c.zarr")["wavelength"].values
    np.testing.assert_allclose(dap.sres, np.broadcast_to(wave / (SIG2FWHM * 1.2), dap.sres.shape))


def test_no_ifu_centre_no_sky_position(tmp_path):
    rss = simulate_rss(None, bundle=7, exposures=3, nwave=4, noise=None, seed=3).load()
    del rss.attrs["ifu_ra"], rss.attrs["ifu_dec"]
    from crrxr.engine.build import build_cube

    cube = build_cube(rss, tmp_path / "c.zarr", method="shepard", progress=False)
    assert "wcs" not in cube.attrs and "ifu_ra" not in cube.attrs
    assert "--ifu-ra" in cube.attrs["sky_position"]
    with pytest.raises(CubeFormatError, match=r"ifu_ra=RA, ifu_dec=DEC\) in Python"):
        export_logcube(tmp_path / "c.zarr", tmp_path / "a.fits")
    assert not (tmp_path / "a.fits").exists()
    assert main(["export-fits", str(tmp_path / "c.zarr"), str(tmp_path / "a.fits")]) == 1
    out = export_logcube(tmp_path / "c.zarr", tmp_path / "b.fits", ifu_ra=10.0, ifu_dec=-5.0)
    with fits.open(out) as hdul:
        assert (hdul["FLUX"].header["CRVAL1"], hdul["FLUX"].header["CRVAL2"]) == (10.0, -5.0)
