"""``ParamField``: one parameter's key, units, kind, dtype, shape, default, bounds, choices and doc.

Values a field accepts (checked by :meth:`ParamField.check`):

==========  =====================================================================================
dtype       scalar value (shape ``()``)            array value (shape with ``-1`` = any length)
==========  =====================================================================================
float64     ``float`` / ``np.float64``, finite      ``np.ndarray`` of dtype float64, all finite
float32     ``float`` / ``np.float32``, finite      ``np.ndarray`` of dtype float32, all finite
int64       ``int`` / ``np.integer`` (not bool)     ``np.ndarray`` of dtype int64
bool        ``bool`` / ``np.bool_``                 ``np.ndarray`` of dtype bool
str         ``str``                                 (not supported)
==========  =====================================================================================

:meth:`ParamField.coerce` turns loose input (YAML numbers, ``--set`` strings, lists) into that form.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import (
    BoundsError,
    ChoiceError,
    NonFiniteError,
    ParamShapeError,
    ParamTypeError,
    SpecError,
)

KIND_PRIMITIVE = "primitive"
KIND_DERIVED = "derived"
KINDS = (KIND_PRIMITIVE, KIND_DERIVED)
DTYPES = ("float64", "float32", "int64", "bool", "str")
_FLOAT_DTYPES = ("float64", "float32")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
# astropy parses "as" as attoseconds: a classic trap for arcsec.
_FORBIDDEN_UNITS = {"as": "arcsec", "asec": "arcsec", "A": "Angstrom", "AA": "Angstrom"}


class _Required:
    """The default of a field that has no default (distinct from ``None``). A singleton."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"  # pickles as the module-level name: stays a singleton

    def __bool__(self) -> bool:
        return False


REQUIRED = _Required()


@dataclass(frozen=True)
class Bounds:
    """A numeric interval; ``None`` ends are unbounded; ``lo_open``/``hi_open`` exclude the end.

    Written and parsed in interval notation: ``"(0, inf)"``, ``"[0, 1]"``, ``"[-1, 0)"``.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __post_init__(self) -> None:
        for end in (self.lo, self.hi):
            if end is not None and (
                not isinstance(end, int | float) or isinstance(end, bool) or not math.isfinite(end)
            ):
                raise SpecError(f"bounds ends must be finite numbers or None, got {end!r}")
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            raise SpecError(f"bounds lower end {self.lo} exceeds upper end {self.hi}")

    @classmethod
    def parse(cls, text: str) -> Bounds:
        """Parse interval notation, e.g. ``"(0, inf)"`` or ``"[0, 4294967295]"``."""
        m = re.fullmatch(r"\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*", text)
        if not m:
            raise SpecError(
                f"bounds {text!r} are not in interval notation like '(0, inf)' or '[0, 1]'"
            )
        lo_s, hi_s = m.group(2), m.group(3)
        lo = None if lo_s in ("-inf", "inf") else _number(lo_s)
        hi = None if hi_s in ("inf", "+inf") else _number(hi_s)
        return cls(lo, hi, lo_open=m.group(1) == "(", hi_open=m.group(4) == ")")

    @classmethod
    def coerce(cls, value: Bounds | str | tuple | None) -> Bounds | None:
        """Accept a ``Bounds``, an interval string, a closed ``(lo, hi)`` tuple or ``None``."""
        if value is None or isinstance(value, Bounds):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, tuple | list) and len(value) == 2:
            return cls(*value)
        raise SpecError(
            f"bounds must be an interval string, a (lo, hi) tuple or None, got {value!r}"
        )

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else _fmt_number(self.lo)
        hi = "inf" if self.hi is None else _fmt_number(self.hi)
        return f"{'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"

    def contains(self, values: np.ndarray) -> bool:
        """True when every element lies inside the interval."""
        v = np.asarray(values)
        if v.size == 0:
            return True
        ok = np.ones(v.shape, dtype=bool)
        if self.lo is not None:
            ok &= (v > self.lo) if self.lo_open else (v >= self.lo)
        if self.hi is not None:
            ok &= (v < self.hi) if self.hi_open else (v <= self.hi)
        return bool(ok.all())


def _number(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise SpecError(f"bounds end {text!r} is not a number") from None


def _fmt_number(x: float | int) -> str:
    return str(x) if isinstance(x, int) else repr(float(x))


@dataclass(frozen=True, eq=False)
class ParamField:
    """One parameter.

    key:        dotted name, e.g. ``grid.pixel_scale_arcsec``.
    units:      astropy-parseable unit string (``"arcsec"``, ``"Angstrom"``), ``""`` = dimensionless.
    kind:       ``"primitive"`` (set by users) or ``"derived"`` (computed by a transform).
    dtype:      one of ``float64, float32, int64, bool, str``.
    shape:      ``()`` for a scalar; a tuple of lengths for an array, ``-1`` = any length.
    default:    the default value, or ``REQUIRED`` (no default; derived fields never have one).
    bounds:     numeric interval (``"(0, inf)"``, ``Bounds`` or closed ``(lo, hi)``), or ``None``.
    choices:    allowed strings for a ``str`` field, or ``()`` for any string.
    doc:        one sentence for the README table and ``crrxr params show``.
    depends_on: for derived fields, the keys its transform reads (documentation; the resolver's
                registration is what runs).
    """

    key: str
    units: str = ""
    kind: str = KIND_PRIMITIVE
    dtype: str = "float64"
    shape: tuple[int, ...] | None = ()
    default: Any = REQUIRED
    bounds: Bounds | str | tuple | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""
    depends_on: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY_RE.match(self.key):
            raise SpecError(
                f"parameter key {self.key!r} must be dotted lower-case words, e.g. 'grid.pixel_scale_arcsec'"
            )
        if not isinstance(self.units, str):
            raise SpecError(
                f"{self.key}: units must be a string ('' for dimensionless), got {self.units!r}"
            )
        if self.units.strip() in _FORBIDDEN_UNITS:
            raise SpecError(
                f"{self.key}: units {self.units!r} are ambiguous in astropy; write "
                f"{_FORBIDDEN_UNITS[self.units.strip()]!r}"
            )
        if self.kind not in KINDS:
            raise SpecError(f"{self.key}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.dtype not in DTYPES:
            raise SpecError(f"{self.key}: dtype must be one of {DTYPES}, got {self.dtype!r}")
        shape = () if self.shape is None else tuple(self.shape)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= -1 for n in shape):
            raise SpecError(
                f"{self.key}: shape entries must be lengths >= 0 or -1 (any), got {self.shape!r}"
            )
        if shape and self.dtype == "str":
            raise SpecError(
                f"{self.key}: string arrays are not supported; use a comma-separated string"
            )
        object.__setattr__(self, "shape", shape)
        bounds = Bounds.coerce(self.bounds)
        if bounds is not None and self.dtype not in (*_FLOAT_DTYPES, "int64"):
            raise SpecError(f"{self.key}: bounds apply to numeric fields only (dtype {self.dtype})")
        object.__setattr__(self, "bounds", bounds)
        choices = tuple(self.choices)
        if choices and (self.dtype != "str" or not all(isinstance(c, str) for c in choices)):
            raise SpecError(f"{self.key}: choices are a tuple of strings for a 'str' field")
        object.__setattr__(self, "choices", choices)
        object.__setattr__(self, "depends_on", tuple(self.depends_on))
        if self.kind == KIND_DERIVED and self.default is not REQUIRED:
            raise SpecError(f"{self.key}: a derived field has no default (it is computed)")
        if self.kind == KIND_PRIMITIVE and self.depends_on:
            raise SpecError(f"{self.key}: only derived fields have depends_on")
        if self.default is not REQUIRED:
            try:
                default = self.coerce(self.default)
                self.check(default)
            except SpecError:
                raise
            except Exception as exc:
                raise SpecError(f"{self.key}: the default is invalid: {exc}") from None
            if isinstance(default, np.ndarray):
                default.setflags(write=False)  # the field is immutable, so is its default
            object.__setattr__(self, "default", default)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParamField):
            return NotImplemented
        return self.to_json_dict() == other.to_json_dict()

    def __hash__(self) -> int:
        from .codec import canonical_json

        return hash(canonical_json(self.to_json_dict()))

    # -- properties -------------------------------------------------------------------------
    @property
    def is_derived(self) -> bool:
        return self.kind == KIND_DERIVED

    @property
    def is_required(self) -> bool:
        return self.kind == KIND_PRIMITIVE and self.default is REQUIRED

    @property
    def is_scalar(self) -> bool:
        return self.shape == ()

    def describe_type(self) -> str:
        """``float64`` for a scalar, ``float64[*]`` / ``float64[2, *]`` for arrays (``*`` = any length)."""
        if self.is_scalar:
            return self.dtype
        return f"{self.dtype}[{', '.join('*' if n == -1 else str(n) for n in self.shape)}]"

    def describe_allowed(self) -> str:
        """Bounds or choices in words, for error messages and tables."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.bounds is not None:
            return str(self.bounds) + (f" {self.units}" if self.units else "")
        return "any " + self.describe_type()

    # -- checking ---------------------------------------------------------------------------
    def check(self, value: Any) -> None:
        """Raise a :class:`ParamValidationError` subclass if ``value`` does not fit this field."""
        key = self.key
        if self.is_scalar:
            if isinstance(value, np.ndarray):
                raise ParamShapeError(
                    f"{key}: expected a scalar {self.dtype}, got an array of shape {value.shape}"
                )
            _check_scalar_type(key, self.dtype, value)
            arr = np.asarray(value)
        else:
            if not isinstance(value, np.ndarray):
                raise ParamTypeError(
                    f"{key}: expected a numpy array {self.describe_type()}, got {type(value).__name__}"
                )
            if value.dtype != np.dtype(self.dtype):
                raise ParamTypeError(f"{key}: expected dtype {self.dtype}, got dtype {value.dtype}")
            if value.ndim != len(self.shape) or any(
                want not in (-1, got) for want, got in zip(self.shape, value.shape)
            ):
                raise ParamShapeError(
                    f"{key}: expected shape {_fmt_shape(self.shape)}, got {value.shape}"
                )
            arr = value
        if self.dtype in _FLOAT_DTYPES and not np.isfinite(arr).all():
            raise NonFiniteError(f"{key}: NaN and infinity are not allowed (got {_short(value)})")
        if self.bounds is not None and not self.bounds.contains(arr):
            raise BoundsError(
                f"{key}: {_short(value)} is out of bounds; allowed range {self.describe_allowed()}"
            )
        if self.choices and value not in self.choices:
            raise ChoiceError(f"{key}: {value!r} is not allowed; {self.describe_allowed()}")

    def coerce(self, value: Any) -> Any:
        """Turn loose input into this field's value form (see module doc); no bounds checks.

        Accepts YAML numbers (``1`` for a float field), strings from ``--set`` (``"1e-4"``,
        ``"0b11111"``, ``"true"``, ``"4702.5,6176.58"``), lists and tuples for arrays.
        """
        key = self.key
        if self.is_scalar:
            return _coerce_scalar(key, self.dtype, value)
        if isinstance(value, str):
            parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
            value = [_coerce_scalar(key, self.dtype, p) for p in parts]
        if isinstance(value, np.ndarray):
            arr = value
        elif isinstance(value, list | tuple):
            try:
                arr = np.array(value, dtype=object)
            except ValueError:
                arr = None
            if arr is None or any(isinstance(v, list | tuple) for v in arr.ravel().tolist()):
                raise ParamShapeError(f"{key}: ragged nested lists are not an array")
        else:
            raise ParamTypeError(
                f"{key}: expected a list of {self.dtype} values (shape {_fmt_shape(self.shape)}), "
                f"got {type(value).__name__} {value!r}"
            )
        if arr.dtype.kind == "O":
            flat = [_coerce_scalar(key, self.dtype, v) for v in arr.ravel().tolist()]
            arr = np.array(flat, dtype=self.dtype).reshape(arr.shape)
        elif arr.dtype != np.dtype(self.dtype):
            if self.dtype in _FLOAT_DTYPES and arr.dtype.kind in "iuf":
                converted = arr.astype(self.dtype)
                if arr.dtype.kind == "f" and not np.array_equal(converted, arr, equal_nan=True):
                    raise ParamTypeError(f"{key}: {arr.dtype} values are not exact in {self.dtype}")
                arr = converted
            elif self.dtype == "int64" and arr.dtype.kind in "iu":
                arr = arr.astype("int64")
            else:
                raise ParamTypeError(f"{key}: expected dtype {self.dtype}, got {arr.dtype}")
        if arr.ndim == 0:
            arr = arr.reshape(1)
        return np.array(arr, dtype=self.dtype, copy=True)

    def to_json_dict(self) -> dict[str, Any]:
        """The field as plain JSON data (used by :meth:`ParamSpec.to_json`)."""
        from .codec import encode_value

        out: dict[str, Any] = {
            "key": self.key,
            "units": self.units,
            "kind": self.kind,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "bounds": None if self.bounds is None else str(self.bounds),
            "choices": list(self.choices),
            "doc": self.doc,
            "depends_on": list(self.depends_on),
        }
        if self.default is REQUIRED:
            out["required"] = True
        else:
            out["default"] = encode_value(self.default, self.key)
        return out

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> ParamField:
        """Inverse of :meth:`to_json_dict`."""
        from .codec import decode_value

        d = dict(data)
        default = REQUIRED if d.pop("required", False) else decode_value(d.pop("default"))
        d.pop("required", None)
        return cls(
            key=d["key"],
            units=d["units"],
            kind=d["kind"],
            dtype=d["dtype"],
            shape=tuple(d["shape"]),
            default=default,
            bounds=d["bounds"],
            choices=tuple(d["choices"]),
            doc=d["doc"],
            depends_on=tuple(d["depends_on"]),
        )


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _check_scalar_type(key: str, dtype: str, value: Any) -> None:
    ok: bool
    if dtype == "float64":
        ok = isinstance(value, float) or (
            isinstance(value, np.floating) and value.dtype == np.float64
        )
    elif dtype == "float32":
        ok = isinstance(value, float | np.floating) and float(np.float32(value)) == float(value)
    elif dtype == "int64":
        ok = isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    elif dtype == "bool":
        ok = isinstance(value, bool | np.bool_)
    else:  # str
        ok = isinstance(value, str)
    if not ok:
        raise ParamTypeError(
            f"{key}: expected a {dtype} scalar, got {type(value).__name__} {_short(value)}"
        )


def _coerce_scalar(key: str, dtype: str, value: Any) -> Any:
    """One scalar to its canonical Python type (float, int, bool, str)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    bad = ParamTypeError(f"{key}: expected a {dtype} value, got {type(value).__name__} {value!r}")
    if dtype in _FLOAT_DTYPES:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise bad from None
        if isinstance(value, int | float):
            # float32 fields: loose input (YAML, --set) rounds to the nearest float32
            return float(np.float32(value)) if dtype == "float32" else float(value)
        raise bad
    if dtype == "int64":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text, 0)
            except ValueError:
                try:
                    as_float = float(text)
                except ValueError:
                    raise bad from None
                if as_float.is_integer():
                    return int(as_float)
        raise bad
    if dtype == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad
    if isinstance(value, str):
        return value
    raise bad


def _fmt_shape(shape: tuple[int, ...]) -> str:
    if not shape:
        return "() (scalar)"
    return (
        "("
        + ", ".join("any" if n == -1 else str(n) for n in shape)
        + ("," if len(shape) == 1 else "")
        + ")"
    )


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 6:
            return np.array2string(value, separator=", ")
        return f"array{value.shape}"
    return repr(value.item() if isinstance(value, np.generic) else value)
