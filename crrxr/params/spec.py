"""``ParamSpec``: an ordered, immutable set of ``ParamField`` with a name, system id and version."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from .codec import SPEC_SCHEMA, SUPPORTED_CODEC_VERSIONS, canonical_json, load_versioned_json
from .errors import CodecError, DuplicateKeyError, SpecError, UnknownKeyError, did_you_mean
from .field import KIND_DERIVED, KIND_PRIMITIVE, ParamField

CODEC_VERSION = SUPPORTED_CODEC_VERSIONS[-1]


class ParamSpec:
    """An ordered, immutable collection of fields.

    ``name`` names the set (``"reconstruction"``), ``system_id`` the registry of derived transforms
    that serves it (``"crrxr.reconstruction"``), ``schema_version`` its version (bump it when keys
    change meaning). Iterating yields fields in order; ``key in spec`` tests keys; ``spec[key]`` and
    ``spec.get(key)`` return a field or raise :class:`UnknownKeyError` with a suggestion.
    """

    __slots__ = ("_fields", "_index", "_name", "_system_id", "_schema_version", "_fingerprint")

    def __init__(
        self, fields: Iterable[ParamField], name: str, system_id: str, schema_version: int = 1
    ):
        fields = tuple(fields)
        if not isinstance(name, str) or not name:
            raise SpecError("a ParamSpec needs a non-empty name")
        if not isinstance(system_id, str) or not system_id:
            raise SpecError(f"ParamSpec {name!r} needs a non-empty system_id")
        if (
            not isinstance(schema_version, int)
            or isinstance(schema_version, bool)
            or schema_version < 1
        ):
            raise SpecError(f"ParamSpec {name!r}: schema_version must be an int >= 1")
        index: dict[str, ParamField] = {}
        for f in fields:
            if not isinstance(f, ParamField):
                raise SpecError(f"ParamSpec {name!r}: expected ParamField, got {type(f).__name__}")
            if f.key in index:
                raise DuplicateKeyError(f"ParamSpec {name!r}: key {f.key!r} appears twice")
            index[f.key] = f
        for f in fields:
            for dep in f.depends_on:
                if dep not in index:
                    raise SpecError(
                        f"ParamSpec {name!r}: {f.key} depends on {dep!r}, which is not in the spec"
                        f"{did_you_mean(dep, index)}"
                    )
        s = object.__setattr__
        s(self, "_fields", fields)
        s(self, "_index", index)
        s(self, "_name", name)
        s(self, "_system_id", system_id)
        s(self, "_schema_version", schema_version)
        s(self, "_fingerprint", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ParamSpec is immutable")

    def __reduce__(self):
        return (self.__class__, (self._fields, self._name, self._system_id, self._schema_version))

    # -- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def system_id(self) -> str:
        return self._system_id

    @property
    def schema_version(self) -> int:
        return self._schema_version

    @property
    def fields(self) -> tuple[ParamField, ...]:
        return self._fields

    # -- lookup -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[ParamField]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __getitem__(self, key: str) -> ParamField:
        return self.get(key)

    def get(self, key: str) -> ParamField:
        """The field of ``key``; an unknown key raises :class:`UnknownKeyError` with a suggestion."""
        try:
            return self._index[key]
        except (KeyError, TypeError):
            raise UnknownKeyError(
                f"unknown parameter {key!r} in spec {self._name!r}{did_you_mean(str(key), self._index)}"
            ) from None

    def keys(self, kind: str | None = None) -> tuple[str, ...]:
        """Keys in order; ``kind="primitive"`` or ``"derived"`` selects one kind."""
        return tuple(f.key for f in self._fields if kind is None or f.kind == kind)

    def primitive_keys(self) -> tuple[str, ...]:
        return self.keys(KIND_PRIMITIVE)

    def derived_keys(self) -> tuple[str, ...]:
        return self.keys(KIND_DERIVED)

    def defaults(self) -> dict[str, Any]:
        """Defaults of the primitive fields that have one (required fields are left out)."""
        return {
            f.key: f.default for f in self._fields if f.kind == KIND_PRIMITIVE and not f.is_required
        }

    # -- derived specs ----------------------------------------------------------------------
    def _check_known(self, keys: Iterable[str]) -> list[str]:
        keys = list(keys)
        for k in keys:
            self.get(k)  # raises with a suggestion
        return keys

    def subset(self, keys: Iterable[str], name: str | None = None) -> ParamSpec:
        """A spec with only ``keys`` (in this spec's order)."""
        wanted = set(self._check_known(keys))
        return ParamSpec(
            [f for f in self._fields if f.key in wanted],
            name or self._name,
            self._system_id,
            self._schema_version,
        )

    def without(self, keys: Iterable[str], name: str | None = None) -> ParamSpec:
        """A spec without ``keys``."""
        dropped = set(self._check_known(keys))
        return ParamSpec(
            [f for f in self._fields if f.key not in dropped],
            name or self._name,
            self._system_id,
            self._schema_version,
        )

    def merge(
        self,
        other: ParamSpec,
        name: str | None = None,
        system_id: str | None = None,
        schema_version: int | None = None,
    ) -> ParamSpec:
        """This spec's fields followed by ``other``'s; a key in both is a :class:`DuplicateKeyError`
        unless the two fields are identical. Name, system id and version default to this spec's."""
        fields = list(self._fields)
        for f in other:
            if f.key in self._index:
                if self._index[f.key] != f:
                    raise DuplicateKeyError(
                        f"cannot merge {other.name!r} into {self._name!r}: key {f.key!r} is defined "
                        "differently in both"
                    )
                continue
            fields.append(f)
        return ParamSpec(
            fields,
            name or self._name,
            system_id or self._system_id,
            schema_version or self._schema_version,
        )

    # -- serialization ----------------------------------------------------------------------
    def to_json_dict(self, include_docs: bool = True) -> dict[str, Any]:
        fields = [f.to_json_dict() for f in self._fields]
        if not include_docs:
            for f in fields:
                f.pop("doc")
        return {
            "schema": SPEC_SCHEMA,
            "codec_version": CODEC_VERSION,
            "name": self._name,
            "system_id": self._system_id,
            "schema_version": self._schema_version,
            "fields": fields,
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, compact, ``allow_nan=False``); fields keep their order."""
        return canonical_json(self.to_json_dict())

    @classmethod
    def from_json(cls, text: str) -> ParamSpec:
        """Inverse of :meth:`to_json`; refuses another schema or an unsupported codec version."""
        data = load_versioned_json(text, SPEC_SCHEMA, "parameter spec")
        try:
            fields = [ParamField.from_json_dict(f) for f in data["fields"]]
            return cls(fields, data["name"], data["system_id"], data["schema_version"])
        except (KeyError, TypeError) as exc:
            raise CodecError(f"malformed parameter spec JSON: missing or bad {exc}") from None

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical JSON without the docs: rewording a doc keeps it, any
        change of keys, units, kinds, dtypes, shapes, defaults, bounds or choices changes it."""
        if self._fingerprint is None:
            text = canonical_json(self.to_json_dict(include_docs=False))
            object.__setattr__(
                self, "_fingerprint", hashlib.sha256(text.encode("ascii")).hexdigest()
            )
        return self._fingerprint

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParamSpec):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return (
            f"ParamSpec(name={self._name!r}, system_id={self._system_id!r}, "
            f"schema_version={self._schema_version}, {len(self._fields)} fields)"
        )
