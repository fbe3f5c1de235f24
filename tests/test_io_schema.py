"""RSS schema validation (crrxr.io): every failure class, message content, cost, Zarr stores, CLI."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from crrxr.cli import main
from crrxr.core.masks import RSS_REJECT
from crrxr.io import SchemaError, inspect_rss, open_rss, validate_rss
from crrxr.io import names as N

N_FIB, N_EXP, N_WAVE = 7, 3, 40


def make_rss(n_fib: int = N_FIB, n_exp: int = N_EXP, n_wave: int = N_WAVE) -> xr.Dataset:
    """A small valid RSS built by hand (independent of the simulator)."""
    n_spec = n_fib * n_exp
    rng = np.random.default_rng(1)
    sw = ("spectrum", "wavelength")
    x = np.repeat(rng.normal(0, 2, n_spec)[:, None], n_wave, axis=1)
    y = np.repeat(rng.normal(0, 2, n_spec)[:, None], n_wave, axis=1)
    return xr.Dataset(
        {
            "flux": (
                sw,
                rng.normal(1, 0.1, (n_spec, n_wave)).astype("f4"),
                {"units": N.FLUX_UNITS},
            ),
            "ivar": (sw, np.full((n_spec, n_wave), 4.0, "f4")),
            "mask": (sw, np.zeros((n_spec, n_wave), "u4")),
            "xpos": (sw, x, {"units": "arcsec"}),
            "ypos": (sw, y, {"units": "arcsec"}),
            "exposure_index": ("spectrum", np.repeat(np.arange(n_exp), n_fib)),
            "seeing_fwhm": ("exposure", np.full(n_exp, 1.2), {"units": "arcsec"}),
        },
        coords={
            "wavelength": (
                "wavelength",
                np.geomspace(3600.0, 10000.0, n_wave),
                {"units": "Angstrom"},
            ),
            "exposure": ("exposure", np.arange(10, 10 + n_exp)),
            "spectrum": ("spectrum", np.arange(n_spec)),
            "fiber": ("spectrum", np.tile(np.arange(n_fib), n_exp)),
        },
        attrs={"ifu_ra": 10.0, "ifu_dec": -5.0},
    )


def one_error(ds: xr.Dataset, **kw) -> str:
    errors = validate_rss(ds, **kw)
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_dataset_passes_and_is_returned():
    ds = make_rss()
    assert validate_rss(ds) == []
    assert open_rss(ds) is ds
    report = inspect_rss(ds)
    assert report.ok and "21 spectra" in report.summary and "3 exposures" in report.summary


@pytest.mark.parametrize(
    "name", ["flux", "ivar", "mask", "xpos", "ypos", "exposure_index", "seeing_fwhm"]
)
def test_missing_variable(name):
    msg = one_error(make_rss().drop_vars(name))
    assert msg.startswith(f"{name}: missing variable") and "add it" in msg


def test_missing_coordinate():
    msg = one_error(make_rss().drop_vars("fiber"))
    assert msg.startswith("fiber: missing coordinate") and "ds.coords" in msg


def test_transposed_variable_names_dims_and_fix():
    ds = make_rss()
    ds["flux"] = ds["flux"].T
    msg = one_error(ds)
    assert (
        "flux" in msg
        and "('spectrum', 'wavelength')" in msg
        and "('wavelength', 'spectrum')" in msg
    )
    assert "transpose" in msg


def test_wrong_dims_entirely():
    ds = make_rss()
    ds["seeing_fwhm"] = ("spectrum", np.ones(ds.sizes["spectrum"]))
    msg = one_error(ds)
    assert "seeing_fwhm" in msg and "('exposure',)" in msg and "rebuild" in msg


@pytest.mark.parametrize(
    "name, dtype, expected",
    [
        ("mask", "i4", "uint32"),
        ("mask", "u2", "uint32"),
        ("mask", "f4", "uint32"),
        ("flux", "i8", "float32 or float64"),
        ("ivar", "f2", "float32 or float64"),
        ("xpos", "f4", "float64"),
        ("exposure_index", "f8", "integer"),
    ],
)
def test_wrong_dtype(name, dtype, expected):
    ds = make_rss()
    ds[name] = ds[name].astype(dtype)
    msg = one_error(ds)
    assert msg.startswith(f"{name}: expected dtype") and expected in msg
    assert f"found {np.dtype(dtype).name}" in msg and "astype" in msg


def test_float64_flux_and_uint_ids_are_accepted():
    ds = make_rss()
    ds["flux"] = ds["flux"].astype("f8")
    ds["ivar"] = ds["ivar"].astype("f8")
    ds["exposure_index"] = ds["exposure_index"].astype("u2")
    assert validate_rss(ds) == []


def test_non_monotonic_and_non_finite_wavelength():
    ds = make_rss()
    w = ds.wavelength.values.copy()
    w[[5, 6]] = w[[6, 5]]
    msg = one_error(ds.assign_coords(wavelength=("wavelength", w, {"units": "Angstrom"})))
    assert (
        "wavelength" in msg
        and "strictly increasing" in msg
        and "index 5" in msg
        and "sortby" in msg
    )
    w = ds.wavelength.values.copy()
    w[3] = np.nan
    msg = one_error(ds.assign_coords(wavelength=("wavelength", w, {"units": "Angstrom"})))
    assert "wavelength" in msg and "non-finite" in msg


def test_exposure_index_out_of_range():
    ds = make_rss()
    idx = ds.exposure_index.values.copy()
    idx[0] = 3  # n_exposure = 3
    idx[1] = -1
    ds["exposure_index"] = ("spectrum", idx)
    msg = one_error(ds)
    assert "exposure_index" in msg and "2 values outside [0, 2]" in msg and "by position" in msg


def test_negative_ivar_names_count_and_spectra():
    ds = make_rss()
    ivar = ds.ivar.values.copy()
    ivar[4, [1, 2]] = -1.0
    ivar[9, 0] = -0.5
    ds["ivar"] = (ds.ivar.dims, ivar)
    assert validate_rss(ds, check_data=False) == []
    msg = one_error(ds)
    assert msg.startswith("ivar: negative") and "3 samples in 2 spectra" in msg and "[4, 9]" in msg
    assert "ivar = 0" in msg


def test_nonfinite_ivar():
    ds = make_rss()
    ds["ivar"] = ds.ivar.where(ds.spectrum != 2, np.inf)
    msg = one_error(ds)
    assert msg.startswith("ivar: NaN or infinite") and f"{N_WAVE} samples in 1 spectra" in msg


def test_nan_position_only_matters_on_usable_samples():
    ds = make_rss()
    x = ds.xpos.values.copy()
    x[3, 7] = np.nan
    ds["xpos"] = (ds.xpos.dims, x, {"units": "arcsec"})
    msg = one_error(ds)
    assert "xpos/ypos" in msg and "1 samples in 1 spectra" in msg and "otherwise usable" in msg

    masked = ds.copy()
    m = masked.mask.values.copy()
    m[3, 7] = RSS_REJECT
    masked["mask"] = (ds.mask.dims, m)
    assert validate_rss(masked) == []
    # ... unless REJECT is not a bad bit for this caller
    assert len(validate_rss(masked, bad_bits=0b11011)) == 1

    no_data = ds.copy()
    iv = no_data.ivar.values.copy()
    iv[3, 7] = 0.0
    no_data["ivar"] = (ds.ivar.dims, iv)
    assert validate_rss(no_data) == []

    ypos_inf = make_rss()
    ypos_inf["ypos"] = ypos_inf.ypos.where(ypos_inf.spectrum != 0, np.inf)
    assert "xpos/ypos" in one_error(ypos_inf)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_seeing_must_be_positive(bad):
    ds = make_rss()
    s = ds.seeing_fwhm.values.copy()
    s[1] = bad
    ds["seeing_fwhm"] = ("exposure", s, {"units": "arcsec"})
    msg = one_error(ds)
    assert (
        msg.startswith("seeing_fwhm: must be a positive finite FWHM")
        and "exposure positions [1]" in msg
    )


def test_duplicate_ids_and_empty_dims():
    ds = make_rss()
    ds = ds.assign_coords(exposure=("exposure", [1, 1, 2]))
    assert "exposure: ids must be unique" in one_error(ds)
    empty = make_rss().isel(wavelength=slice(0, 0))
    assert any("dimension 'wavelength' has length 0" in e for e in validate_rss(empty))


def test_units_wrong_is_error_missing_is_warning():
    ds = make_rss()
    ds["wavelength"].attrs["units"] = "nm"
    msg = one_error(ds)
    assert "wavelength: expected units 'Angstrom', found 'nm'" in msg
    ds = make_rss()
    ds["xpos"].attrs["units"] = "deg"
    assert "xpos: expected units 'arcsec'" in one_error(ds)
    ds = make_rss()
    ds["wavelength"].attrs["units"] = "AA"  # same unit, other spelling
    assert validate_rss(ds) == []
    del ds["xpos"].attrs["units"]
    report = inspect_rss(ds)
    assert report.ok and any("xpos: no 'units' attr" in w for w in report.warnings)


def test_unknown_schema_version_and_bad_sky_position():
    ds = make_rss()
    ds.attrs[N.ATTR_RSS_SCHEMA] = "crrxr.rss/99"
    msg = one_error(ds)
    assert "crrxr.rss/99" in msg and "upgrade crrxr" in msg
    ds = make_rss()
    ds.attrs["ifu_dec"] = 95.0
    assert "ifu_dec" in one_error(ds)


def test_parameter_attrs_are_decoded_and_bad_bits_used():
    from crrxr.params import ParameterStore, reconstruction_spec

    spec = reconstruction_spec()
    store = ParameterStore.from_spec_defaults(spec).replace(
        {"mask.bad_bits": 0b11011}
    )  # REJECT usable
    ds = make_rss()
    ds.attrs.update(store.to_attrs(spec))
    assert validate_rss(ds) == []
    x, m = ds.xpos.values.copy(), ds.mask.values.copy()
    x[0, 0], m[0, 0] = np.nan, RSS_REJECT
    ds["xpos"] = (ds.xpos.dims, x, {"units": "arcsec"})
    ds["mask"] = (ds.mask.dims, m)
    assert "xpos/ypos" in one_error(ds)  # REJECT is not bad under these parameters
    assert validate_rss(ds, bad_bits=0b11111) == []  # explicit bad_bits win

    broken = make_rss()
    broken.attrs.update(store.to_attrs(spec))
    broken.attrs["crrxr_params"] = broken.attrs["crrxr_params"].replace(
        '"codec_version":1', '"codec_version":7'
    )
    msg = one_error(broken)
    assert "crrxr_params" in msg and "cannot be decoded" in msg and "version" in msg


def test_all_errors_are_collected_in_schema_error():
    ds = make_rss().drop_vars("ypos")
    ds["mask"] = ds.mask.astype("i4")
    ds["ivar"] = ds.ivar.where(ds.spectrum != 0, -1.0)
    ds["seeing_fwhm"] = ds.seeing_fwhm * 0
    with pytest.raises(SchemaError) as info:
        open_rss(ds)
    problems = info.value.problems
    assert len(problems) == 4
    text = str(info.value)
    for name in ("ypos", "mask", "ivar", "seeing_fwhm"):
        assert name in text
    assert isinstance(info.value, ValueError)


def test_coordinate_stored_as_variable():
    ds = make_rss().reset_coords("fiber")
    assert "fiber: is a data variable but must be a coordinate" in one_error(ds)


def test_slow_chunkings_are_warnings():
    ds = make_rss().chunk({"spectrum": 10, "wavelength": 16})
    ds["ivar"] = ds.ivar.chunk({"spectrum": -1, "wavelength": 8})
    report = inspect_rss(ds)
    assert report.ok
    assert any("flux: chunked along spectrum into 3 pieces" in w for w in report.warnings)
    assert any("different wavelength chunks" in w for w in report.warnings)


def test_not_a_dataset():
    assert "expected an xarray.Dataset" in validate_rss(np.zeros(3))[0]


# -- Zarr stores ------------------------------------------------------------------------------------


def write_store(ds: xr.Dataset, path: Path, chunk: int = 16, consolidated: bool = False) -> Path:
    enc = {v: {"chunks": (ds.sizes["spectrum"], chunk)} for v in N.RSS_SPECTRAL_VARS if v in ds}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 warns about consolidated metadata on write
        ds.to_zarr(path, mode="w", consolidated=consolidated, encoding=enc)
    return path


@pytest.mark.parametrize("consolidated", [False, True])
def test_open_store_lazily_without_warnings(tmp_path, consolidated):
    path = write_store(make_rss(), tmp_path / "rss.zarr", consolidated=consolidated)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = open_rss(path)
    assert ds.flux.chunks is not None and ds.flux.chunks[1] == (16, 16, 8)
    assert ds.mask.dtype == np.uint32 and ds.flux.dtype == np.float32
    xr.testing.assert_equal(ds.load(), make_rss())


def _corrupt_chunks(path: Path, name: str) -> int:
    files = [f for f in (path / name / "c").rglob("*") if f.is_file()]
    for f in files:
        f.write_bytes(b"not a zstd frame")
    return len(files)


def test_validation_never_reads_flux_but_reads_ivar(tmp_path):
    path = write_store(make_rss(), tmp_path / "rss.zarr")
    assert _corrupt_chunks(path, "flux") == 3
    ds = open_rss(path)  # flux chunks are garbage, but validation does not read them
    with pytest.raises(RuntimeError):  # the codec's error on reading garbage
        ds.flux.values  # noqa: B018
    assert _corrupt_chunks(path, "ivar") == 3
    open_rss(path, check_data=False)  # metadata and small coordinates only
    with pytest.raises(SchemaError, match="cannot read ivar/mask/xpos/ypos.*truncated or corrupt"):
        open_rss(path)


def test_invalid_store_raises_with_path(tmp_path):
    ds = make_rss()
    ds["ivar"] = ds.ivar.where(ds.spectrum != 5, -2.0)
    path = write_store(ds, tmp_path / "bad.zarr")
    with pytest.raises(
        SchemaError, match=r"bad\.zarr: not a valid crrxr RSS dataset(.|\n)*ivar: negative"
    ):
        open_rss(path)


def test_missing_and_non_zarr_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such RSS store"):
        open_rss(tmp_path / "nope.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(SchemaError, match="cannot open as a Zarr RSS store"):
        open_rss(tmp_path / "empty.zarr")


def test_cli_validate_exit_codes(tmp_path, capsys):
    good = write_store(make_rss(), tmp_path / "good.zarr")
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK") and "21 spectra" in out and "3 wavelength chunks of 16" in out

    ds = make_rss()
    ds["exposure_index"] = ds.exposure_index + 1
    ds["seeing_fwhm"] = -ds.seeing_fwhm
    bad = write_store(ds, tmp_path / "bad.zarr")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "INVALID" in err and "exposure_index" in err and "seeing_fwhm" in err

    assert main(["validate", str(tmp_path / "missing.zarr")]) == 1
    assert "no such RSS store" in capsys.readouterr().err


def test_check_logs_warnings(caplog):
    ds = make_rss()
    del ds["seeing_fwhm"].attrs["units"]
    with caplog.at_level(logging.WARNING, logger="crrxr.io.schema"):
        open_rss(ds)
    assert "seeing_fwhm: no 'units' attr" in caplog.text
