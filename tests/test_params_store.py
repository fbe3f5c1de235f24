"""ParameterStore: immutability, validation rules (keys, dtype, shape, bounds, choices, finiteness),
pickling and use inside dask.delayed."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest

from crrxr.params import (
    REQUIRED,
    BoundsError,
    ChoiceError,
    DerivedKeyError,
    MissingKeyError,
    NonFiniteError,
    ParameterStore,
    ParamField,
    ParamShapeError,
    ParamSpec,
    ParamTypeError,
    ParamValidationError,
    UnknownKeyError,
    reconstruction_resolver,
    reconstruction_spec,
)


@pytest.fixture
def spec() -> ParamSpec:
    return reconstruction_spec()


@pytest.fixture
def store(spec) -> ParameterStore:
    return ParameterStore.from_spec_defaults(spec)


def test_defaults_store_is_valid_and_primitive_only(spec, store):
    assert set(store) == set(spec.primitive_keys())
    assert store.validate_against(spec) is store
    assert store["crr.lambda"] == 1e-3


def test_store_is_immutable_and_deep_copies(spec):
    wl = np.array([5000.0, 6000.0])
    nested = [1.0, 2.0]
    s = ParameterStore({"output.correlation_wavelengths_angstrom": wl, "x.list": nested})
    wl[0] = -1.0
    nested[0] = -1.0
    got = s["output.correlation_wavelengths_angstrom"]
    assert got[0] == 5000.0 and s["x.list"][0] == 1.0
    assert not got.flags.writeable
    with pytest.raises(ValueError):
        got[0] = 1.0
    with pytest.raises(AttributeError):
        s.foo = 1
    with pytest.raises(TypeError):
        s["crr.lambda"] = 1.0  # type: ignore[index]
    d = s.as_dict()
    d["output.correlation_wavelengths_angstrom"][0] = 7.0  # as_dict is a writable copy
    assert s["output.correlation_wavelengths_angstrom"][0] == 5000.0


def test_get_replace_without(store):
    assert store.get("crr.lambda") == 1e-3
    assert store.get("crr.nope", None) is None
    with pytest.raises(UnknownKeyError, match="did you mean 'crr.lambda'"):
        store.get("crr.lamda")
    with pytest.raises(KeyError):
        store["crr.lamda"]
    new = store.replace({"crr.lambda": 1e-4})
    assert new["crr.lambda"] == 1e-4 and store["crr.lambda"] == 1e-3
    assert new != store and store.replace({"crr.lambda": 1e-3}) == store
    assert "method" not in store.without(["method"])


def _problem(spec, store, exc_type, match, **kwargs):
    with pytest.raises(exc_type, match=match) as info:
        store.validate_against(spec, **kwargs)
    return info.value


def test_unknown_missing_and_derived_keys(spec, store):
    e = _problem(
        spec,
        store.replace({"crr.lamda": 1.0}),
        UnknownKeyError,
        r"crr.lamda: not a parameter of 'reconstruction' \(did you mean 'crr.lambda'\?\)",
    )
    assert isinstance(e, KeyError) and isinstance(e, ValueError)
    store.replace({"crr.lamda": 1.0}).validate_against(spec, allow_extra=True)

    _problem(spec, store.without(["crr.lambda"]), MissingKeyError, "crr.lambda: missing")
    store.without(["crr.lambda"]).validate_against(spec, allow_missing=True)

    with_derived = store.replace({"grid.nside": 49})
    _problem(spec, with_derived, DerivedKeyError, "grid.nside: is derived")
    with_derived.validate_against(spec, allow_derived=True)
    # allowed derived values are still checked
    _problem(spec, store.replace({"grid.nside": 0}), BoundsError, "grid.nside", allow_derived=True)


def test_required_field_without_value():
    spec = ParamSpec([ParamField("a.r", "", default=REQUIRED)], "r", "test.r")
    assert len(ParameterStore.from_spec_defaults(spec)) == 0
    with pytest.raises(MissingKeyError, match="a.r: required parameter has no value"):
        ParameterStore().validate_against(spec)


@pytest.mark.parametrize(
    "key, value, exc, match",
    [
        (
            "grid.pixel_scale_arcsec",
            -0.5,
            BoundsError,
            r"out of bounds; allowed range \(0, inf\) arcsec",
        ),
        ("grid.pixel_scale_arcsec", 0.0, BoundsError, r"\(0, inf\)"),
        ("seeing.exponent", 3.0, BoundsError, r"\[-2, 2\]"),
        ("mask.bad_bits", -1, BoundsError, r"\[0, 4294967295\]"),
        (
            "output.correlation_wavelengths_angstrom",
            np.array([5000.0, -1.0]),
            BoundsError,
            "out of bounds",
        ),
        ("method", "mle", ChoiceError, "one of 'crr', 'shepard'"),
        ("crr.lambda", float("nan"), NonFiniteError, "crr.lambda: NaN and infinity"),
        ("crr.lambda", float("inf"), NonFiniteError, "NaN and infinity"),
        (
            "output.correlation_wavelengths_angstrom",
            np.array([5000.0, np.inf]),
            NonFiniteError,
            "NaN",
        ),
        ("crr.lambda", 1, ParamTypeError, "crr.lambda: expected a float64 scalar, got int"),
        ("crr.lambda", np.float32(0.5), ParamTypeError, "expected a float64 scalar"),
        ("crr.lambda", "0.1", ParamTypeError, "got str"),
        ("engine.wave_chunk", 64.0, ParamTypeError, "expected a int64 scalar"),
        ("engine.wave_chunk", True, ParamTypeError, "got bool"),
        ("method", 1, ParamTypeError, "expected a str scalar"),
        ("crr.lambda", np.array([1.0]), ParamShapeError, "expected a scalar"),
        (
            "output.correlation_wavelengths_angstrom",
            np.ones((2, 2)),
            ParamShapeError,
            r"expected shape \(any,\)",
        ),
        (
            "output.correlation_wavelengths_angstrom",
            np.array([5000, 6000]),
            ParamTypeError,
            "expected dtype float64, got dtype int64",
        ),
        (
            "output.correlation_wavelengths_angstrom",
            5000.0,
            ParamTypeError,
            "expected a numpy array",
        ),
    ],
)
def test_value_rules(spec, store, key, value, exc, match):
    e = _problem(spec, store.replace({key: value}), exc, match)
    assert key in str(e)
    assert isinstance(e, ParamValidationError) and isinstance(e, ValueError)


def test_fixed_shape_fields():
    spec = ParamSpec(
        [ParamField("a.m", "", shape=(2, -1), default=[[1.0, 2.0], [3.0, 4.0]])], "m", "t.m"
    )
    ParameterStore({"a.m": np.zeros((2, 7))}).validate_against(spec)
    with pytest.raises(ParamShapeError, match=r"expected shape \(2, any\), got \(3, 7\)"):
        ParameterStore({"a.m": np.zeros((3, 7))}).validate_against(spec)


def test_all_problems_are_listed(spec, store):
    bad = store.replace({"crr.lambda": -1.0, "method": "x", "crr.lamda": 2.0})
    with pytest.raises(ParamValidationError) as info:
        bad.validate_against(spec)
    msg = str(info.value)
    assert "3 problems" in msg and "crr.lambda" in msg and "method" in msg and "crr.lamda" in msg
    assert len(info.value.problems) == 3
    assert {type(p) for p in info.value.problems} == {BoundsError, ChoiceError, UnknownKeyError}


def test_numpy_scalars_of_the_right_dtype_are_accepted(spec, store):
    store.replace(
        {"crr.lambda": np.float64(1e-4), "engine.wave_chunk": np.int64(8)}
    ).validate_against(spec)


def test_pickle_round_trip_keeps_values_and_read_only_arrays(spec, store):
    s = store.replace({"output.correlation_wavelengths_angstrom": np.array([0.1, 1e-300, 5e300])})
    back = pickle.loads(pickle.dumps(s))
    assert back == s and type(back) is ParameterStore
    arr = back["output.correlation_wavelengths_angstrom"]
    assert not arr.flags.writeable
    assert arr.tobytes() == np.array([0.1, 1e-300, 5e300]).tobytes()
    back.validate_against(spec)


def _nside_and_lambda(store: ParameterStore) -> tuple[int, float]:
    resolver = reconstruction_resolver()  # built inside the task: nothing global is shipped
    return int(resolver.resolve(store, "grid.nside")), store["crr.lambda"]


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_store_inside_dask_delayed(store, scheduler):
    s = store.replace({"grid.extent_arcsec": 36.0, "crr.lambda": 2.5e-3})
    task = dask.delayed(_nside_and_lambda)(s)
    nside, lam = task.compute(scheduler=scheduler)
    assert nside == 49 and lam == 2.5e-3
    # a store returned from a task comes back intact
    back = dask.delayed(lambda x: x.replace({"crr.lambda": 1e-5}))(s).compute(scheduler=scheduler)
    assert back["crr.lambda"] == 1e-5 and back["grid.extent_arcsec"] == 36.0
