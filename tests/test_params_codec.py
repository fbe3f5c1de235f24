"""The attrs codec: bitwise float round trips (attrs, real zarr v2/v3 stores), refusals."""

from __future__ import annotations

import json
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crrxr.params import (
    CodecError,
    FingerprintMismatchError,
    MissingKeyError,
    NonFiniteError,
    ParameterStore,
    ParamField,
    ParamSpec,
    reconstruction_resolver,
    reconstruction_spec,
    refresh_derived,
)


def free_spec() -> ParamSpec:
    """Unbounded float fields, so that hypothesis can try every finite double."""
    return ParamSpec(
        [
            ParamField("t.x", "", default=0.0),
            ParamField("t.v", "", shape=(-1,), default=[0.0]),
            ParamField("t.f32", "", dtype="float32", shape=(-1,), default=[0.0]),
            ParamField("t.n", "", dtype="int64", default=0),
            ParamField("t.s", "", dtype="str", default=""),
        ],
        "free",
        "test.free",
    )


finite = st.floats(allow_nan=False, allow_infinity=False)
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def bits(x) -> bytes:
    return struct.pack("<d", float(x))


def assert_bitwise_equal(a: ParameterStore, b: ParameterStore) -> None:
    assert set(a) == set(b)
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape, k
            assert x.tobytes() == y.tobytes(), k
        elif isinstance(x, float):
            assert type(y) is float and bits(x) == bits(y), k
        else:
            assert type(x) is type(y) and x == y, k


def make_store(x, v, f32, n, s) -> ParameterStore:
    return ParameterStore(
        {
            "t.x": x,
            "t.v": np.array(v, dtype=np.float64),
            "t.f32": np.array(f32, dtype=np.float32),
            "t.n": n,
            "t.s": s,
        }
    )


@settings(max_examples=150, deadline=None)
@given(
    finite,
    st.lists(finite, max_size=6),
    st.lists(finite32, max_size=4),
    int64s,
    st.text(max_size=8),
)
def test_attrs_round_trip_is_bitwise(x, v, f32, n, s):
    spec = free_spec()
    store = make_store(x, v, f32, n, s)
    attrs = store.to_attrs(spec)
    assert set(attrs) == {"crrxr_paramspec", "crrxr_params"}
    assert all(isinstance(a, str) for a in attrs.values())
    # the attrs survive a plain JSON trip (what zarr does to attrs)
    attrs = json.loads(json.dumps(attrs))
    spec2, back = ParameterStore.from_attrs(attrs)
    assert spec2 == spec and spec2.fingerprint() == spec.fingerprint()
    assert_bitwise_equal(store, back)
    assert np.float64(back["t.x"]).tobytes() == np.float64(x).tobytes()


def test_negative_zero_and_extremes_survive():
    spec = free_spec()
    extremes = [-0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3]
    store = make_store(
        -0.0, extremes, [np.float32(1e-45).item(), 3.4028234663852886e38], -(2**63), "é"
    )
    _, back = ParameterStore.from_attrs(store.to_attrs(spec))
    assert_bitwise_equal(store, back)
    assert np.signbit(back["t.x"])


def _zarr_round_trip(attrs: dict, zarr_format: int, where: Path) -> dict:
    ds = xr.Dataset(
        {"flux": ("wavelength", np.zeros(3, dtype=np.float32))},
        coords={"wavelength": [5000.0, 5001.0, 5002.0]},
        attrs=attrs,
    )
    path = where / f"s{zarr_format}.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v2 format deprecation notices
        ds.to_zarr(path, zarr_format=zarr_format, consolidated=False, mode="w")
        with xr.open_zarr(path, zarr_format=zarr_format, consolidated=False) as opened:
            return dict(opened.attrs)


@pytest.mark.parametrize("zarr_format", [2, 3])
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(x=finite, v=st.lists(finite, min_size=1, max_size=5))
def test_zarr_round_trip_is_bitwise(zarr_format, x, v):
    spec = free_spec()
    store = make_store(x, v, [0.5], 7, "zarr")
    with tempfile.TemporaryDirectory() as tmp:
        attrs = _zarr_round_trip(store.to_attrs(spec), zarr_format, Path(tmp))
    spec2, back = ParameterStore.from_attrs(attrs)
    assert spec2.fingerprint() == spec.fingerprint()
    assert_bitwise_equal(store, back)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_reconstruction_params_with_derived_values_through_zarr(zarr_format, tmp_path):
    spec = reconstruction_spec()
    base = ParameterStore.from_spec_defaults(spec).replace(
        {"grid.extent_arcsec": 36.0, "crr.lambda": (0.1 + 0.2) / 1000}
    )
    ctx = {
        "wavelength": np.geomspace(3622.0, 10354.0, 17),
        "seeing_fwhm_ref": np.array([1.19, 1.5, 1.37]),
    }
    full = refresh_derived(base, spec, reconstruction_resolver(), ctx)
    attrs = _zarr_round_trip(full.to_attrs(spec), zarr_format, tmp_path)
    spec2, back = ParameterStore.from_attrs(attrs, expected=spec)
    assert spec2 == spec
    assert_bitwise_equal(full, back)
    assert back["seeing.fwhm_arcsec"].shape == (3, 17)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_are_rejected(bad):
    spec = free_spec()
    with pytest.raises(NonFiniteError, match="t.x"):
        make_store(bad, [1.0], [1.0], 0, "").to_attrs(spec)
    with pytest.raises(NonFiniteError, match="t.v"):
        make_store(1.0, [1.0, bad], [1.0], 0, "").to_attrs(spec)
    # a hand-made payload with a NaN token is refused too (NaN is not a valid value of the spec)
    attrs = make_store(1.0, [1.0], [1.0], 0, "").to_attrs(spec)
    params = attrs["crrxr_params"].replace('"t.x":1.0', '"t.x":NaN')
    assert params != attrs["crrxr_params"]
    with pytest.raises(NonFiniteError):
        ParameterStore.from_attrs({**attrs, "crrxr_params": params})


def test_to_attrs_validates_the_store():
    spec = reconstruction_spec()
    with pytest.raises(MissingKeyError):
        ParameterStore({"crr.lambda": 1e-3}).to_attrs(spec)


def _edit(attrs: dict, name: str, **changes) -> dict:
    data = json.loads(attrs[name])
    data.update(changes)
    return {**attrs, name: json.dumps(data)}


def test_refusals():
    spec = reconstruction_spec()
    attrs = ParameterStore.from_spec_defaults(spec).to_attrs(spec)
    with pytest.raises(CodecError, match="no 'crrxr_params'"):
        ParameterStore.from_attrs({"crrxr_paramspec": attrs["crrxr_paramspec"]})
    with pytest.raises(CodecError, match="schema 'other.schema'"):
        ParameterStore.from_attrs(_edit(attrs, "crrxr_params", schema="other.schema"))
    with pytest.raises(CodecError, match="expected 'crrxr.paramspec'"):
        ParameterStore.from_attrs(_edit(attrs, "crrxr_paramspec", schema="x"))
    with pytest.raises(CodecError, match="codec version 2"):
        ParameterStore.from_attrs(_edit(attrs, "crrxr_params", codec_version=2))
    with pytest.raises(FingerprintMismatchError, match="fingerprint"):
        ParameterStore.from_attrs(_edit(attrs, "crrxr_params", fingerprint="0" * 64))
    # a spec edited after writing (a bound changed) no longer matches the values' fingerprint
    spec_data = json.loads(attrs["crrxr_paramspec"])
    spec_data["fields"][1]["bounds"] = "[0, inf)"
    with pytest.raises(FingerprintMismatchError):
        ParameterStore.from_attrs({**attrs, "crrxr_paramspec": json.dumps(spec_data)})
    # expected spec: another version is refused
    other = ParamSpec(spec.fields, spec.name, spec.system_id, schema_version=2)
    with pytest.raises(FingerprintMismatchError, match="differs from the expected"):
        ParameterStore.from_attrs(attrs, expected=other)
    # the values are validated on the way in
    params = json.loads(attrs["crrxr_params"])
    params["values"]["grid.pixel_scale_arcsec"] = -1.0
    with pytest.raises(ValueError, match="grid.pixel_scale_arcsec"):
        ParameterStore.from_attrs({**attrs, "crrxr_params": json.dumps(params)})
