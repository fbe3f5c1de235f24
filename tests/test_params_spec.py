"""ParamField and ParamSpec: construction rules, derived specs, canonical JSON, fingerprints, units."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import astropy.units as u
import numpy as np
import pytest

from crrxr.params import (
    REQUIRED,
    Bounds,
    CodecError,
    DuplicateKeyError,
    ParamField,
    ParamSpec,
    SpecError,
    UnknownKeyError,
    reconstruction_spec,
)


def tiny_spec() -> ParamSpec:
    return ParamSpec(
        [
            ParamField("a.x_arcsec", "arcsec", default=1.5, bounds="(0, inf)", doc="x"),
            ParamField("a.n", "", dtype="int64", default=3, bounds=(1, 10)),
            ParamField("a.mode", "", dtype="str", default="fast", choices=("fast", "slow")),
            ParamField("a.w_angstrom", "Angstrom", shape=(-1,), default=[5000.0, 6000.0]),
            ParamField("a.req", "arcsec", default=REQUIRED),
            ParamField("b.y_arcsec", "arcsec", kind="derived", depends_on=("a.x_arcsec",)),
        ],
        name="tiny",
        system_id="test.tiny",
        schema_version=2,
    )


# -- ParamField ---------------------------------------------------------------------------------
def test_required_is_a_singleton_distinct_from_none():
    assert REQUIRED is not None
    assert repr(REQUIRED) == "REQUIRED"
    assert pickle.loads(pickle.dumps(REQUIRED)) is REQUIRED
    f_none = ParamField("a.s", "", dtype="str", default="x")
    f_req = ParamField("a.t", "")
    assert f_req.is_required and not f_none.is_required
    assert f_req.default is REQUIRED


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"key": "Grid.Pixel"}, "dotted lower-case"),
        ({"key": "a..b"}, "dotted lower-case"),
        ({"key": "a.b", "units": "as"}, "write 'arcsec'"),
        ({"key": "a.b", "kind": "other"}, "kind must be"),
        ({"key": "a.b", "dtype": "complex128"}, "dtype must be"),
        ({"key": "a.b", "shape": (-2,)}, "shape entries"),
        ({"key": "a.b", "dtype": "str", "shape": (3,)}, "string arrays"),
        ({"key": "a.b", "dtype": "str", "bounds": "(0, 1)"}, "numeric fields only"),
        ({"key": "a.b", "choices": ("x",)}, "choices are a tuple of strings"),
        ({"key": "a.b", "kind": "derived", "default": 1.0}, "has no default"),
        ({"key": "a.b", "depends_on": ("c.d",)}, "only derived"),
        ({"key": "a.b", "default": -1.0, "bounds": "(0, inf)"}, "out of bounds"),
        ({"key": "a.b", "default": float("nan")}, "NaN"),
        ({"key": "a.b", "dtype": "str", "default": "z", "choices": ("x", "y")}, "not allowed"),
        ({"key": "a.b", "bounds": "0..1"}, "interval notation"),
        ({"key": "a.b", "bounds": "[2, 1]"}, "exceeds"),
    ],
)
def test_field_rejects_malformed_definitions(kwargs, match):
    with pytest.raises(SpecError, match=match):
        ParamField(**kwargs)


def test_bounds_parse_print_and_contain():
    b = Bounds.parse("(0, inf)")
    assert (b.lo, b.hi, b.lo_open) == (0, None, True)
    assert str(b) == "(0, inf)"
    assert not b.contains(np.array([0.0])) and b.contains(np.array([1e-300, 1e300]))
    c = Bounds.parse("[-1.5, 2]")
    assert str(c) == "[-1.5, 2]"
    assert c.contains(np.array([-1.5, 2])) and not c.contains(np.array([2.0000001]))
    assert Bounds.parse(str(Bounds(0, 1, hi_open=True))) == Bounds(0, 1, hi_open=True)
    assert Bounds.coerce((0, 4)) == Bounds(0, 4)


def test_field_coerces_loose_input():
    f = ParamField("a.x", "", default=1.0)
    assert f.coerce(2) == 2.0 and isinstance(f.coerce(2), float)
    assert f.coerce("1e-4") == 1e-4
    with pytest.raises(ValueError, match="a.x: expected a float64"):
        f.coerce(True)
    i = ParamField("a.n", "", dtype="int64", default=1)
    assert i.coerce("0b11111") == 31 and i.coerce("0x10") == 16 and i.coerce(4.0) == 4
    with pytest.raises(ValueError, match="expected a int64"):
        i.coerce(2.5)
    b = ParamField("a.flag", "", dtype="bool", default=False)
    assert b.coerce("yes") is True and b.coerce("0") is False
    arr = ParamField("a.v", "", shape=(-1,), default=[1.0])
    out = arr.coerce("1, 2.5 3")
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.5, 3.0]
    assert arr.coerce([1, 2]).dtype == np.float64
    m = ParamField("a.m", "", shape=(2, -1), default=[[1.0], [2.0]])
    assert m.default.shape == (2, 1)
    with pytest.raises(ValueError, match=r"a.v: expected shape \(any,\), got \(1, 2\)"):
        arr.check(arr.coerce([[1.0, 2.0]]))  # nested input is not silently flattened
    with pytest.raises(ValueError, match="ragged"):
        m.coerce([[1.0], [2.0, 3.0]])
    f32 = ParamField("a.h", "", dtype="float32", default=0.1)
    assert f32.default == float(np.float32(0.1))


# -- ParamSpec -----------------------------------------------------------------------------------
def test_spec_is_ordered_immutable_and_looks_up_keys():
    spec = tiny_spec()
    assert spec.keys() == ("a.x_arcsec", "a.n", "a.mode", "a.w_angstrom", "a.req", "b.y_arcsec")
    assert spec.derived_keys() == ("b.y_arcsec",)
    assert [f.key for f in spec] == list(spec.keys())
    assert "a.n" in spec and "a.q" not in spec
    assert spec.get("a.n").default == 3 and spec["a.mode"].choices == ("fast", "slow")
    with pytest.raises(UnknownKeyError, match="did you mean 'a.mode'"):
        spec.get("a.mod")
    with pytest.raises(KeyError):
        spec["nope"]
    with pytest.raises(AttributeError):
        spec.name = "other"
    with pytest.raises(AttributeError):
        spec["a.n"].default = 4
    assert "a.req" not in spec.defaults()
    with pytest.raises(ValueError, match="read-only"):
        spec["a.w_angstrom"].default[0] = 1.0


def test_duplicate_keys_are_an_error():
    f = ParamField("a.x", "", default=1.0)
    with pytest.raises(DuplicateKeyError, match="'a.x' appears twice"):
        ParamSpec([f, ParamField("a.x", "", default=2.0)], "d", "test.d")


def test_dependency_outside_the_spec_is_an_error():
    with pytest.raises(SpecError, match="depends on 'a.z'"):
        ParamSpec([ParamField("b.y", "", kind="derived", depends_on=("a.z",))], "d", "test.d")


def test_subset_without_merge():
    spec = tiny_spec()
    sub = spec.subset(["a.mode", "a.x_arcsec"])
    assert sub.keys() == ("a.x_arcsec", "a.mode")  # spec order kept
    assert sub.system_id == spec.system_id and sub.schema_version == 2
    assert spec.without(["a.req", "b.y_arcsec"]).keys() == (
        "a.x_arcsec",
        "a.n",
        "a.mode",
        "a.w_angstrom",
    )
    with pytest.raises(UnknownKeyError):
        spec.subset(["a.nope"])
    with pytest.raises(SpecError, match="depends on 'a.x_arcsec'"):
        spec.without(["a.x_arcsec"])
    extra = ParamSpec([ParamField("c.z", "", default=0.0)], "extra", "test.extra")
    merged = spec.merge(extra)
    assert merged.keys()[-1] == "c.z" and merged.name == "tiny"
    assert spec.merge(spec.subset(["a.n"])).keys() == spec.keys()  # identical fields dedupe
    clash = ParamSpec([ParamField("a.n", "", dtype="int64", default=4)], "clash", "test.c")
    with pytest.raises(DuplicateKeyError, match="'a.n' is defined differently"):
        spec.merge(clash)


def test_json_round_trip_and_canonical_form():
    spec = tiny_spec()
    text = spec.to_json()
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"))
    back = ParamSpec.from_json(text)
    assert back == spec and back.to_json() == text
    assert back.fingerprint() == spec.fingerprint()
    assert back["a.req"].default is REQUIRED
    assert back["a.w_angstrom"].default.tolist() == [5000.0, 6000.0]
    rec = reconstruction_spec()
    assert ParamSpec.from_json(rec.to_json()) == rec
    assert pickle.loads(pickle.dumps(rec)) == rec


def test_from_json_refuses_other_schemas():
    data = json.loads(tiny_spec().to_json())
    with pytest.raises(CodecError, match="expected 'crrxr.paramspec'"):
        ParamSpec.from_json(json.dumps({**data, "schema": "other"}))
    with pytest.raises(CodecError, match="codec version 99"):
        ParamSpec.from_json(json.dumps({**data, "codec_version": 99}))
    with pytest.raises(CodecError, match="not valid JSON"):
        ParamSpec.from_json("{")


def test_fingerprint_tracks_meaning_not_docs():
    spec = tiny_spec()
    fp = spec.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    reworded = ParamSpec(
        [ParamField(**{**_field_kwargs(f), "doc": "changed"}) for f in spec],
        spec.name,
        spec.system_id,
        spec.schema_version,
    )
    assert reworded.fingerprint() == fp
    for change in ({"units": "deg"}, {"default": 1.25}, {"bounds": "[0, inf)"}):
        f0 = spec["a.x_arcsec"]
        changed = ParamSpec(
            [ParamField(**{**_field_kwargs(f0), **change}), *spec.fields[1:]],
            spec.name,
            spec.system_id,
            spec.schema_version,
        )
        assert changed.fingerprint() != fp, change
    bumped = ParamSpec(spec.fields, spec.name, spec.system_id, 3)
    assert bumped.fingerprint() != fp


def _field_kwargs(f: ParamField) -> dict:
    return {
        "key": f.key,
        "units": f.units,
        "kind": f.kind,
        "dtype": f.dtype,
        "shape": f.shape,
        "default": f.default,
        "bounds": f.bounds,
        "choices": f.choices,
        "doc": f.doc,
        "depends_on": f.depends_on,
    }


def test_fingerprint_is_byte_stable_across_processes():
    code = (
        "from crrxr.params import reconstruction_spec as r; s = r(); "
        "print(s.fingerprint()); print(s.to_json())"
    )
    outs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=120,
        )
        outs.append(res.stdout)
    assert outs[0] == outs[1]
    spec = reconstruction_spec()
    assert outs[0] == f"{spec.fingerprint()}\n{spec.to_json()}\n"


# -- the reconstruction spec ---------------------------------------------------------------------
CONTRACT_KEYS = {  # docs/contracts.md section 1: key -> (units, default)
    "method": ("", "crr"),
    "grid.pixel_scale_arcsec": ("arcsec", 0.75),
    "grid.extent_arcsec": ("arcsec", 0.0),
    "grid.margin_arcsec": ("arcsec", 2.0),
    "crr.lambda": ("", 1e-3),
    "crr.sv_floor": ("", 1e-6),
    "crr.variant": ("", "code"),
    "crr.solver": ("", "auto"),
    "crr.reuse_tolerance": ("", 0.0),
    "crr.select_radius_arcsec": ("arcsec", 1.6),
    "kernel.truncation_radius_arcsec": ("arcsec", 4.0),
    "kernel.fiber_radius_arcsec": ("arcsec", 1.0),
    "shepard.sigma_arcsec": ("arcsec", 0.7),
    "shepard.rlim_arcsec": ("arcsec", 1.6),
    "seeing.lambda_ref_angstrom": ("Angstrom", 5400.0),
    "seeing.exponent": ("", -0.2),
    "seeing.sigma_ratio": ("", 2.0),
    "seeing.wing_ratio": ("", 1 / 9),
    "seeing.wing_convention": ("", "flux"),
    "mask.bad_bits": ("", 0b11111),
    "mask.lowcov_threshold": ("", 2.0),
    "mask.deadfiber_share": ("", 0.1),
    "output.correlation_wavelengths_angstrom": ("Angstrom", [4702.50, 6176.58, 7496.12, 8946.71]),
    "output.correlation_bands": ("", "g,r,i,z"),
    "output.correlation_max_sep_arcsec": ("arcsec", 5.0),
    "output.dtype": ("", "float32"),
    "engine.wave_chunk": ("", 64),
    "sky.enabled": ("", False),
    "sky.method": ("", "mean"),
}


def test_reconstruction_spec_matches_the_contract():
    spec = reconstruction_spec()
    assert spec.system_id == "crrxr.reconstruction"
    assert set(spec.primitive_keys()) == set(CONTRACT_KEYS)
    for key, (units, default) in CONTRACT_KEYS.items():
        f = spec[key]
        assert f.units == units, key
        if isinstance(default, list):
            assert f.default.tolist() == default
        else:
            assert f.default == default and type(f.default) is type(default), key
    assert {
        "grid.nside",
        "grid.length_arcsec",
        "output.flux_factor",
        "seeing.fwhm_arcsec",
        "seeing.sigma1_arcsec",
        "seeing.sigma2_arcsec",
    } <= set(spec.derived_keys())
    # the RSS bad-bit default is every crrxr RSS bit
    from crrxr.core.masks import RSS_ALL_BITS

    assert spec["mask.bad_bits"].default == RSS_ALL_BITS
    assert reconstruction_spec() is not spec and reconstruction_spec() == spec


PHYSICAL_TYPES = {"arcsec": "angle", "Angstrom": "length", "": "dimensionless"}


def test_every_unit_string_parses_in_astropy_to_the_expected_physical_type():
    spec = reconstruction_spec()
    for f in spec:
        unit = u.Unit(f.units)
        assert f.units in PHYSICAL_TYPES, f"{f.key}: unexpected units {f.units!r}"
        assert str(unit.physical_type) == PHYSICAL_TYPES[f.units], f.key
        # key suffixes say the units
        if f.key.endswith("_arcsec"):
            assert unit == u.arcsec, f.key
        if f.key.endswith("_angstrom"):
            assert unit == u.AA, f.key
    # the trap the field guards against: astropy reads "as" as attoseconds
    assert str(u.Unit("as").physical_type) == "time"
