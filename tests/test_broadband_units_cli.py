"""Broadband images (GIMG..ZIMG) against speclite, units and CF attrs, and the lazy CLI."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy import units as u
from astropy.io import fits
from test_manga_cube import make_cube

from crrxr.cli import COMMANDS
from crrxr.io.broadband import covered_bands
from crrxr.io.manga import export_logcube


@pytest.mark.parametrize("nwave", [300, 900])
def test_broadband_images_match_speclite(tmp_path, nwave):
    from speclite import filters

    wave = np.geomspace(3500.0, 11500.0, nwave)  # covers every SDSS g, r, i, z curve
    ds = make_cube(tmp_path / "c.zarr", wavelength=wave, nside=7, wave_chunk=64)
    # a red spectrum times a per-spaxel amplitude: colours differ from band to band
    rng = np.random.default_rng(nwave)
    amp = rng.uniform(0.5, 2.0, (7, 7))
    spectrum = 1.0 + 3.0 * ((wave - 3500) / 8000) ** 2 + 0.5 * np.sin(wave / 300)
    flux = (spectrum[:, None, None] * amp[None]).astype(np.float32)
    ds["flux"] = (("wavelength", "y", "x"), flux)
    out = export_logcube(ds, tmp_path / "c.fits")
    curves = filters.load_filters(*(f"sdss2010-{b}" for b in "griz"))
    with fits.open(out) as hdul:
        for band, curve in zip("GRIZ", curves):
            f_lambda = flux.astype(np.float64).transpose(1, 2, 0) * 1e-17
            maggies = curve.get_ab_maggies(
                f_lambda * u.erg / (u.s * u.cm**2 * u.AA), wave * u.AA, axis=-1
            )
            ref = np.asarray(maggies) * 1e9  # nanomaggies
            np.testing.assert_allclose(hdul[f"{band}IMG"].data, ref, rtol=2e-3)
            assert hdul[f"{band}IMG"].header["BUNIT"] == "nanomaggy"
            assert hdul[f"{band}IMG"].header["COVERAGE"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("lo", "hi", "bands"),
    [
        (3622.0, 10354.0, ["g", "r", "i", "z"]),  # MaNGA
        (4750.0, 9350.0, ["r", "i"]),  # MUSE nominal: g and z only partly
        (5300.0, 7100.0, ["r"]),
        (3000.0, 4000.0, []),
    ],
)
def test_covered_bands_follow_the_wavelength_range(lo, hi, bands):
    wave = np.geomspace(lo, hi, 400)
    assert [b.name for b in covered_bands(wave)] == bands


def test_units_parse_and_match_fits_bunit_and_cf_attrs(tmp_path):
    from crrxr.engine.build import build_cube
    from crrxr.simulate.rss_writer import simulate_rss

    simulate_rss(tmp_path / "rss.zarr", bundle=7, exposures=3, nwave=5, noise=None, seed=1)
    build_cube(tmp_path / "rss.zarr", tmp_path / "c.zarr", method="shepard", progress=False)
    cube = xr.open_zarr(tmp_path / "c.zarr")
    rss = xr.open_zarr(tmp_path / "rss.zarr")
    for var in rss.variables.values():
        if "units" in var.attrs:
            u.Unit(var.attrs["units"], format="fits")
    assert u.Unit(rss["ivar"].attrs["units"]) == u.Unit(rss["flux"].attrs["units"]) ** -2
    for name, var in cube.variables.items():
        if "units" in var.attrs:
            u.Unit(var.attrs["units"])  # generic format
            if var.attrs["units"] != "1":  # CF's dimensionless; FITS writes no BUNIT for it
                u.Unit(var.attrs["units"], format="fits")
        if name in cube.data_vars or name in cube.coords:
            assert var.attrs.get("long_name") or name == "band", name
    flux_unit = u.Unit(cube["flux"].attrs["units"])
    assert flux_unit == 1e-17 * u.erg / (u.s * u.cm**2 * u.AA)
    assert u.Unit(cube["ivar"].attrs["units"]) == flux_unit**-2
    assert cube["wavelength"].attrs["standard_name"] == "radiation_wavelength"
    assert (cube["x"].attrs["axis"], cube["y"].attrs["axis"], cube["wavelength"].attrs["axis"]) == (
        "X",
        "Y",
        "Z",
    )
    masks = cube["mask"].attrs["flag_masks"]
    assert all(isinstance(m, int | np.integer) and not isinstance(m, bool) for m in masks)
    assert len(masks) == len(cube["mask"].attrs["flag_meanings"].split())
    # the zarr metadata holds JSON integers (CF: flag_masks of the variable's integer type)
    meta = json.loads((tmp_path / "c.zarr" / "mask" / "zarr.json").read_text())
    assert all(isinstance(m, int) for m in meta["attributes"]["flag_masks"])
    out = export_logcube(tmp_path / "c.zarr", tmp_path / "c.fits")
    with fits.open(out) as hdul:
        assert hdul["FLUX"].header["BUNIT"] == cube["flux"].attrs["units"]
        assert hdul["IVAR"].header["BUNIT"] == cube["ivar"].attrs["units"]


def test_help_imports_no_command_module():
    code = (
        "import sys\n"
        "from crrxr import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('numpy', 'xarray', 'dask', 'zarr', 'astropy', 'scipy')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy "
        "or (m.startswith('crrxr.') and m != 'crrxr.cli')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "COMMAND" in run.stdout
    assert run.stdout.strip().splitlines()[-1] == "[]"
    for name in COMMANDS:
        assert name in run.stdout


def test_every_command_is_registered_by_its_module():
    import argparse

    for name, (module, _help) in COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).add_parser(sub)
        assert name in sub.choices, f"{module}.add_parser does not register {name!r}"


def test_command_help_loads_only_that_command(capsys):
    from crrxr.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["export-fits", "--help"])
    assert exc.value.code == 0
    assert "--lsf-sigma" in capsys.readouterr().out


def test_cf_checker_finds_no_error(tmp_path):
    """The cube, written to netCDF by crrxr.io.cube.to_cf_dataset, passes the CF checker (cfchecks,
    offline with the table excerpts in tests/data/cf): no error, units valid for UDUNITS."""
    pytest.importorskip("netCDF4")
    cfunits = pytest.importorskip("cfunits", reason="cfunits needs the UDUNITS-2 library")
    from crrxr.engine.build import build_cube
    from crrxr.io import names as N
    from crrxr.io.cube import to_cf_dataset
    from crrxr.simulate.rss_writer import simulate_rss

    assert cfunits.Units(N.FLUX_UNITS).equals(cfunits.Units("1e-17 erg/(Angstrom cm2 s)"))
    assert cfunits.Units(N.IVAR_UNITS).equals(cfunits.Units("1e34 Angstrom2 cm4 s2/erg2"))
    simulate_rss(tmp_path / "rss.zarr", bundle=7, exposures=3, nwave=5, noise=None, seed=1)
    build_cube(tmp_path / "rss.zarr", tmp_path / "c.zarr", method="shepard", progress=False)
    ds = to_cf_dataset(xr.open_zarr(tmp_path / "c.zarr").load())
    assert ds.attrs["Conventions"] == "CF-1.10"
    ds.attrs["Conventions"] = "CF-1.8"  # the newest version cfchecker 4.1 knows
    ds.to_netcdf(tmp_path / "c.nc", engine="netcdf4")
    data = Path(__file__).parent / "data" / "cf"
    cfchecks = Path(sys.executable).parent / "cfchecks"
    run = subprocess.run(
        [
            str(cfchecks),
            "-v",
            "1.8",
            "-s",
            str(data / "standard-name-table-excerpt.xml"),
            "-a",
            str(data / "area-type-table-excerpt.xml"),
            "-r",
            str(data / "standardized-region-list-excerpt.xml"),
            str(tmp_path / "c.nc"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "ERRORS detected: 0" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]
    assert "Invalid units" not in run.stdout
    assert "Checking variable: flux" in run.stdout and "Checking variable: mask" in run.stdout
