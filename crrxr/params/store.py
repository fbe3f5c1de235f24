"""``ParameterStore``: an immutable, picklable mapping of parameter values."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .errors import (
    DerivedKeyError,
    MissingKeyError,
    ParamValidationError,
    UnknownKeyError,
    did_you_mean,
    raise_problems,
)
from .spec import ParamSpec

_MISSING = object()


def _freeze(value: Any) -> Any:
    """A private, immutable copy: arrays copied and made read-only, lists of numbers to arrays."""
    if isinstance(value, np.ndarray):
        arr = np.array(value, copy=True)
        arr.setflags(write=False)
        return arr
    if isinstance(value, list | tuple):
        try:
            arr = np.asarray(value)
        except ValueError:  # ragged
            arr = None
        if arr is not None and arr.dtype.kind in "biuf" and arr.size > 0:
            arr = np.array(arr, copy=True)
            arr.setflags(write=False)
            return arr
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        raise TypeError(
            "parameter values cannot be mappings; use dotted keys ('grid.pixel_scale_arcsec')"
        )
    return copy.deepcopy(value)


class ParameterStore(Mapping[str, Any]):
    """Parameter values by dotted key. Immutable: built from a deep copy, arrays read-only.

    ``store[key]`` / ``store.get(key)`` read, ``store.replace({...})`` returns a new store,
    ``store.as_dict()`` gives a writable deep copy. Pickles (dask ships it to workers).
    A store knows nothing of its spec until :meth:`validate_against` checks it.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None):
        frozen: dict[str, Any] = {}
        for key, value in (values or {}).items():
            if not isinstance(key, str):
                raise TypeError(f"parameter keys are strings, got {key!r}")
            frozen[key] = _freeze(value)
        object.__setattr__(self, "_values", frozen)

    @classmethod
    def from_spec_defaults(cls, spec: ParamSpec) -> ParameterStore:
        """The defaults of the spec's primitive fields (required fields without default are left out)."""
        return cls(spec.defaults())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ParameterStore is immutable; use replace()")

    def __reduce__(self):
        return (self.__class__, (self._values,))

    # -- mapping ----------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise UnknownKeyError(
                f"no parameter {key!r} in this store{did_you_mean(key, self._values)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value of ``key``; without ``default`` an absent key raises :class:`UnknownKeyError`."""
        if key in self._values:
            return self._values[key]
        if default is _MISSING:
            return self[key]
        return default

    def replace(self, mapping: Mapping[str, Any]) -> ParameterStore:
        """A new store with the values in ``mapping`` (dotted keys) set, added or replaced."""
        merged = dict(self._values)
        merged.update(mapping or {})
        return ParameterStore(merged)

    def without(self, keys: Any) -> ParameterStore:
        """A new store without ``keys`` (absent keys are ignored)."""
        drop = set(keys)
        return ParameterStore({k: v for k, v in self._values.items() if k not in drop})

    def as_dict(self) -> dict[str, Any]:
        """A writable deep copy of the values."""
        out = {}
        for k, v in self._values.items():
            out[k] = np.array(v, copy=True) if isinstance(v, np.ndarray) else copy.deepcopy(v)
        return out

    def __eq__(self, other: object) -> bool:
        """Equal keys and values; floats compare by value, arrays by dtype, shape and elements."""
        if not isinstance(other, ParameterStore):
            return NotImplemented
        if self._values.keys() != other._values.keys():
            return False
        for k, a in self._values.items():
            b = other._values[k]
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (
                    isinstance(a, np.ndarray)
                    and isinstance(b, np.ndarray)
                    and a.dtype == b.dtype
                    and a.shape == b.shape
                    and np.array_equal(a, b)
                ):
                    return False
            elif type(a) is not type(b) or a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable-looking contents (arrays)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {_short_repr(v)}" for k, v in self._values.items())
        return f"ParameterStore({{{inner}}})"

    # -- validation -------------------------------------------------------------------------
    def validate_against(
        self,
        spec: ParamSpec,
        allow_missing: bool = False,
        allow_extra: bool = False,
        allow_derived: bool = False,
    ) -> ParameterStore:
        """Check key sets and every value (dtype, shape, bounds, choices, finiteness) against ``spec``.

        allow_missing: primitive keys without a value are fine (derived keys are never required).
        allow_extra:   keys not in the spec are ignored instead of rejected.
        allow_derived: derived keys may carry values (they are checked like primitives).
        Returns ``self``; raises the first problem's :class:`ParamValidationError` subclass with a
        message listing every problem (``exc.problems``).
        """
        problems: list[ParamValidationError] = []
        for key in self._values:
            if key not in spec:
                if not allow_extra:
                    problems.append(
                        UnknownKeyError(
                            f"{key}: not a parameter of {spec.name!r}{did_you_mean(key, spec.keys())}"
                        )
                    )
                continue
            field = spec[key]
            if field.is_derived and not allow_derived:
                problems.append(
                    DerivedKeyError(
                        f"{key}: is derived (computed from {', '.join(field.depends_on) or 'data'}); "
                        "remove it or set the primitives it depends on"
                    )
                )
                continue
            try:
                field.check(self._values[key])
            except ParamValidationError as exc:
                problems.append(exc)
        if not allow_missing:
            for field in spec:
                if field.is_required and field.key not in self._values:
                    problems.append(
                        MissingKeyError(f"{field.key}: required parameter has no value")
                    )
                elif not field.is_derived and field.key not in self._values:
                    problems.append(
                        MissingKeyError(
                            f"{field.key}: missing (default {_short_repr(field.default)}); start from "
                            "ParameterStore.from_spec_defaults(spec)"
                        )
                    )
        raise_problems(
            problems,
            ""
            if len(problems) == 1
            else f"parameters do not match spec {spec.name!r} ({len(problems)} problems)",
        )
        return self

    # -- attrs codec ------------------------------------------------------------------------
    def to_attrs(self, spec: ParamSpec) -> dict[str, str]:
        """``{"crrxr_paramspec": json, "crrxr_params": json}``; see :mod:`crrxr.params.codec`."""
        from .codec import to_attrs

        return to_attrs(self, spec)

    @staticmethod
    def from_attrs(
        attrs: Mapping[str, Any], expected: ParamSpec | None = None
    ) -> tuple[ParamSpec, ParameterStore]:
        """``(spec, store)`` from attrs written by :meth:`to_attrs` (schema, version and
        fingerprint checked; with ``expected``, the spec must have the same fingerprint)."""
        from .codec import from_attrs

        return from_attrs(attrs, expected)


def _short_repr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return np.array2string(value, separator=", ", threshold=8)
    return repr(value)
