"""Canonical JSON and the attrs codec (``crrxr_paramspec`` / ``crrxr_params``).

Canonical JSON: sorted keys, no whitespace, ASCII only, ``allow_nan=False``. Python writes a float
with ``repr``, the shortest text that reads back to the same double, so floats round-trip bitwise
(``-0.0`` included). Arrays are written as ``{"__ndarray__": {"dtype", "shape", "data"}}`` so their
dtype and shape (also empty ones) survive. Zarr stores attrs as JSON, so the two strings pass
through ``to_zarr``/``open_zarr`` (zarr formats 2 and 3) unchanged.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import CodecError, FingerprintMismatchError, NonFiniteError, ParamError

if TYPE_CHECKING:
    from .spec import ParamSpec
    from .store import ParameterStore

SPEC_ATTR = "crrxr_paramspec"
PARAMS_ATTR = "crrxr_params"
SPEC_SCHEMA = "crrxr.paramspec"
PARAMS_SCHEMA = "crrxr.params"
CODEC_VERSION = 1
SUPPORTED_CODEC_VERSIONS = (1,)


def load_versioned_json(text: str, schema: str, what: str) -> dict[str, Any]:
    """Parse a codec JSON document and check its ``schema`` and ``codec_version``.

    ``what`` names the document in errors (e.g. "attr 'crrxr_params'").
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise CodecError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise CodecError(f"{what} has schema {got!r}, expected {schema!r}")
    if data.get("codec_version") not in SUPPORTED_CODEC_VERSIONS:
        raise CodecError(
            f"{what} has codec version {data.get('codec_version')!r}; this crrxr reads versions "
            f"{SUPPORTED_CODEC_VERSIONS}: upgrade crrxr"
        )
    return data


_ARRAY_TAG = "__ndarray__"


def canonical_json(obj: Any) -> str:
    """Serialize plain JSON data canonically (sorted keys, compact, ASCII, no NaN/Inf)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def encode_value(value: Any, key: str = "?") -> Any:
    """A parameter value as plain JSON data; NaN and infinity raise :class:`NonFiniteError`."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise NonFiniteError(f"{key}: NaN and infinity cannot be stored in JSON attrs")
        if value.dtype.kind not in "biuf":
            raise CodecError(f"{key}: arrays of dtype {value.dtype} cannot be encoded")
        return {
            _ARRAY_TAG: {
                "dtype": value.dtype.name,
                "shape": list(value.shape),
                "data": value.ravel().tolist(),  # exact: float32 widens to float64 losslessly
            }
        }
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        raise NonFiniteError(f"{key}: NaN and infinity cannot be stored in JSON attrs")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [encode_value(v, key) for v in value]
    raise CodecError(f"{key}: values of type {type(value).__name__} cannot be encoded")


def decode_value(data: Any) -> Any:
    """Inverse of :func:`encode_value`."""
    if isinstance(data, dict):
        if set(data) != {_ARRAY_TAG}:
            raise CodecError(f"cannot decode a parameter value from {data!r}")
        a = data[_ARRAY_TAG]
        try:
            arr = np.array(a["data"], dtype=np.dtype(a["dtype"])).reshape(a["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"malformed array value {a!r}: {exc}") from None
        arr.setflags(write=False)
        return arr
    if isinstance(data, list):
        return tuple(decode_value(v) for v in data)
    return data


def to_attrs(store: ParameterStore, spec: ParamSpec) -> dict[str, str]:
    """``{"crrxr_paramspec": json, "crrxr_params": json}`` for xarray/zarr attrs.

    The store is validated first (derived values are allowed and kept; missing primitives are not).
    """
    store.validate_against(spec, allow_derived=True)
    values = {k: encode_value(store[k], k) for k in spec.keys() if k in store}
    params = {
        "schema": PARAMS_SCHEMA,
        "codec_version": CODEC_VERSION,
        "spec_name": spec.name,
        "system_id": spec.system_id,
        "schema_version": spec.schema_version,
        "fingerprint": spec.fingerprint(),
        "values": values,
    }
    return {SPEC_ATTR: spec.to_json(), PARAMS_ATTR: canonical_json(params)}


def from_attrs(attrs: Any, expected: ParamSpec | None = None) -> tuple[ParamSpec, ParameterStore]:
    """Decode ``(spec, store)`` from attrs written by :func:`to_attrs`.

    Refuses a wrong schema, an unsupported codec version or a fingerprint mismatch; with
    ``expected``, also a spec whose fingerprint differs from the expected one (e.g. a cube written
    by another crrxr version).
    """
    from .spec import ParamSpec
    from .store import ParameterStore

    for name in (SPEC_ATTR, PARAMS_ATTR):
        if name not in attrs:
            raise CodecError(f"attrs have no {name!r}: not written by crrxr's parameter codec")
        if not isinstance(attrs[name], str):
            raise CodecError(
                f"attr {name!r} must be a JSON string, got {type(attrs[name]).__name__}"
            )
    spec = ParamSpec.from_json(attrs[SPEC_ATTR])
    params = load_versioned_json(attrs[PARAMS_ATTR], PARAMS_SCHEMA, f"attr {PARAMS_ATTR!r}")
    fingerprint = spec.fingerprint()
    if params.get("fingerprint") != fingerprint:
        raise FingerprintMismatchError(
            f"the values were written for spec fingerprint {params.get('fingerprint')!r}, but the "
            f"stored spec {spec.name!r} has fingerprint {fingerprint!r}: the attrs were edited or mixed"
        )
    for name, have in (
        ("spec_name", spec.name),
        ("system_id", spec.system_id),
        ("schema_version", spec.schema_version),
    ):
        if params.get(name) != have:
            raise CodecError(
                f"attr {PARAMS_ATTR!r} names {name} {params.get(name)!r}, the spec {have!r}"
            )
    if expected is not None and expected.fingerprint() != fingerprint:
        raise FingerprintMismatchError(
            f"stored spec {spec.name!r} v{spec.schema_version} (fingerprint {fingerprint[:12]}) differs "
            f"from the expected {expected.name!r} v{expected.schema_version} "
            f"(fingerprint {expected.fingerprint()[:12]})"
        )
    raw = params.get("values")
    if not isinstance(raw, dict):
        raise CodecError(f"attr {PARAMS_ATTR!r} has no 'values' mapping")
    values: dict[str, Any] = {}
    for key, data in raw.items():
        value = decode_value(data)
        if key in spec:
            try:
                value = spec[key].coerce(value) if not isinstance(value, np.ndarray) else value
            except ParamError as exc:
                raise CodecError(f"attr {PARAMS_ATTR!r}: {exc}") from None
        values[key] = value
    store = ParameterStore(values)
    store.validate_against(spec, allow_derived=True)
    return spec, store
