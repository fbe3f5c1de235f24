"""``DerivedResolver``: transforms that compute derived parameters, registered on an explicit object.

A resolver belongs to one system id (the spec's ``system_id``). Nothing is registered at import: a
factory such as :func:`crrxr.params.reconstruction.reconstruction_resolver` builds a fresh resolver
and registers its transforms, so two resolvers never see each other's transforms.

Resolution is recursive: a value present in the store wins over its transform; otherwise the
transform runs on its resolved dependencies and on the (read-only) context, e.g. the ``wavelength``
array of an RSS. Cycles, too-deep chains, missing dependencies and missing context entries raise
errors that print the chain and the system id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import (
    CycleError,
    DepthError,
    MissingContextError,
    MissingDependencyError,
    ParamError,
    ParamValidationError,
    ResolveError,
    TransformRegistrationError,
    UnknownKeyError,
)
from .spec import ParamSpec
from .store import ParameterStore, _freeze

Transform = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


@dataclass(frozen=True)
class RegisteredTransform:
    """A transform: ``fn(deps, context) -> value`` for ``key``.

    ``deps`` maps each key of ``depends_on`` to its resolved value; ``context`` is the read-only
    context mapping (arrays are read-only views). ``context_keys`` are the context entries the
    transform cannot do without (checked before it runs); it may read optional ones too.
    """

    key: str
    fn: Transform
    depends_on: tuple[str, ...]
    context_keys: tuple[str, ...]


def read_only_context(context: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only view of ``context``: a mapping proxy whose arrays are read-only views (no copy)."""
    out: dict[str, Any] = {}
    for k, v in (context or {}).items():
        if isinstance(v, np.ndarray):
            v = v.view()
            v.setflags(write=False)
        out[k] = v
    return MappingProxyType(out)


class DerivedResolver:
    """Registry of derived-value transforms for one ``system_id``, and the recursive resolver."""

    def __init__(self, system_id: str, max_depth: int = 32):
        if not isinstance(system_id, str) or not system_id:
            raise ValueError("DerivedResolver needs a non-empty system_id")
        self._system_id = system_id
        self._max_depth = int(max_depth)
        self._transforms: dict[str, RegisteredTransform] = {}

    @property
    def system_id(self) -> str:
        return self._system_id

    @property
    def max_depth(self) -> int:
        return self._max_depth

    @property
    def transforms(self) -> Mapping[str, RegisteredTransform]:
        return MappingProxyType(self._transforms)

    def __contains__(self, key: object) -> bool:
        return key in self._transforms

    def __repr__(self) -> str:
        return f"DerivedResolver({self._system_id!r}, {len(self._transforms)} transforms)"

    def register_transform(
        self, key: str, depends_on: Iterable[str] = (), context: Iterable[str] = ()
    ) -> Callable[[Transform], Transform]:
        """Decorator: register ``fn(deps, context) -> value`` as the transform of ``key``.

        Registering a key twice on one resolver is an error. Returns ``fn`` unchanged.
        """
        depends_on = tuple(depends_on)
        context_keys = tuple(context)

        def decorator(fn: Transform) -> Transform:
            if key in self._transforms:
                raise TransformRegistrationError(
                    f"[{self._system_id}] a transform for {key!r} is already registered"
                )
            if not callable(fn):
                raise TransformRegistrationError(
                    f"[{self._system_id}] transform for {key!r} is not callable"
                )
            self._transforms[key] = RegisteredTransform(key, fn, depends_on, context_keys)
            return fn

        return decorator

    def check_spec(self, spec: ParamSpec) -> None:
        """Raise unless ``spec`` belongs to this resolver's system and every transform's key and
        dependencies are in it."""
        if spec.system_id != self._system_id:
            raise ResolveError(
                f"spec {spec.name!r} has system id {spec.system_id!r}; this resolver serves "
                f"{self._system_id!r}"
            )
        for t in self._transforms.values():
            for k in (t.key, *t.depends_on):
                if k not in spec:
                    raise TransformRegistrationError(
                        f"[{self._system_id}] transform {t.key!r} uses {k!r}, which spec "
                        f"{spec.name!r} lacks"
                    )
            if not spec[t.key].is_derived:
                raise TransformRegistrationError(
                    f"[{self._system_id}] {t.key!r} has a transform but is a primitive in {spec.name!r}"
                )

    # -- resolution -------------------------------------------------------------------------
    def resolve(
        self,
        store: Mapping[str, Any],
        key: str,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        """The value of ``key``: the store's if present, else its transform's (recursively)."""
        return self.resolve_many(store, [key], context)[key]

    def resolve_many(
        self,
        store: Mapping[str, Any],
        keys: Iterable[str],
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Values of several keys, sharing intermediate results."""
        ctx = context if isinstance(context, MappingProxyType) else read_only_context(context)
        cache: dict[str, Any] = {}
        return {k: self._resolve(store, k, ctx, cache, ()) for k in keys}

    def _resolve(
        self,
        store: Mapping[str, Any],
        key: str,
        ctx: Mapping[str, Any],
        cache: dict[str, Any],
        chain: tuple[str, ...],
    ) -> Any:
        if key in store:
            return store[key]  # store wins
        if key in cache:
            return cache[key]
        path = " -> ".join((*chain, key))
        if key in chain:
            raise CycleError(f"[{self._system_id}] dependency cycle: {path}")
        if len(chain) >= self._max_depth:
            raise DepthError(
                f"[{self._system_id}] dependency chain deeper than {self._max_depth}: {path}"
            )
        t = self._transforms.get(key)
        if t is None:
            where = f" (needed by {' -> '.join(chain)})" if chain else ""
            raise MissingDependencyError(
                f"[{self._system_id}] {key!r} has no value in the store and no registered "
                f"transform{where}; chain: {path}"
            )
        deps = {d: self._resolve(store, d, ctx, cache, (*chain, key)) for d in t.depends_on}
        missing = [c for c in t.context_keys if c not in ctx]
        if missing:
            raise MissingContextError(
                f"[{self._system_id}] {key!r} needs context {', '.join(repr(m) for m in missing)} "
                f"(chain: {path}); pass context={{{', '.join(repr(m) + ': ...' for m in missing)}}}"
            )
        try:
            value = t.fn(MappingProxyType(deps), ctx)
        except ResolveError as exc:  # raised by the transform itself: add the chain and system id
            msg = str(exc)
            if not msg.startswith(f"[{self._system_id}]"):
                msg = f"[{self._system_id}] {msg}"
            raise type(exc)(f"{msg} (chain: {path})") from exc
        except ParamError:
            raise
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise ResolveError(
                f"[{self._system_id}] transform {key!r} failed (chain: {path}): {exc}"
            ) from exc
        value = _freeze(value)
        cache[key] = value
        return value


def refresh_derived(
    store: ParameterStore,
    spec: ParamSpec,
    resolver: DerivedResolver,
    context: Mapping[str, Any] | None = None,
    keys: Iterable[str] | None = None,
) -> ParameterStore:
    """A store whose derived values (all of the spec's, or ``keys``) are recomputed from the
    primitives: stale derived values are dropped first, the new ones are checked against the spec."""
    resolver.check_spec(spec)
    keys = list(spec.derived_keys() if keys is None else keys)
    for k in keys:
        if not spec[k].is_derived:
            raise ResolveError(f"[{resolver.system_id}] {k!r} is a primitive, not a derived key")
    base = strip_derived(store, spec)
    values = resolver.resolve_many(base, keys, context)
    for k, v in values.items():
        spec[k].check(v)
    return base.replace(values)


def resolvable_derived(
    store: ParameterStore,
    spec: ParamSpec,
    resolver: DerivedResolver,
    context: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Try every derived key: ``(values, reasons)`` with the values that resolve and, for the
    others, why not (e.g. "needs context 'wavelength'"). Used by ``crrxr params show``."""
    resolver.check_spec(spec)
    base = strip_derived(store, spec)
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for k in spec.derived_keys():
        try:
            values[k] = resolver.resolve(base, k, context)
        except ResolveError as exc:
            reasons[k] = str(exc).split("] ", 1)[-1]
    return values, reasons


def strip_derived(store: ParameterStore, spec: ParamSpec) -> ParameterStore:
    """The store without the spec's derived keys."""
    return store.without(spec.derived_keys())


def check_consistency(
    store: ParameterStore,
    spec: ParamSpec,
    resolver: DerivedResolver,
    context: Mapping[str, Any] | None = None,
    rtol: float = 0.0,
    atol: float = 0.0,
) -> None:
    """Raise :class:`ResolveError` listing every derived value in ``store`` that differs from what
    its transform computes from the store's primitives (exact by default; ``rtol``/``atol`` loosen)."""
    resolver.check_spec(spec)
    present = [k for k in spec.derived_keys() if k in store]
    fresh = resolver.resolve_many(strip_derived(store, spec), present, context)
    bad = []
    for k in present:
        have, want = np.asarray(store[k]), np.asarray(fresh[k])
        if have.shape != want.shape or not np.allclose(
            have, want, rtol=rtol, atol=atol, equal_nan=False
        ):
            bad.append(f"{k}: stored {_brief(store[k])}, recomputed {_brief(fresh[k])}")
    if bad:
        raise ResolveError(
            f"[{resolver.system_id}] derived values are stale (refresh_derived() recomputes them):\n  - "
            + "\n  - ".join(bad)
        )


def _brief(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return np.array2string(v, threshold=6, separator=", ")
    return repr(v)


def _pack_keys(spec: ParamSpec, keys: Iterable[str] | None) -> list[str]:
    if keys is None:
        keys = [f.key for f in spec if not f.is_derived and f.dtype in ("float64", "float32")]
    keys = list(keys)
    for k in keys:
        f = spec.get(k)
        if f.dtype not in ("float64", "float32", "int64"):
            raise ParamValidationError(f"{k}: dtype {f.dtype} cannot be packed into a float vector")
    return keys


def pack(
    store: Mapping[str, Any], spec: ParamSpec, keys: Iterable[str] | None = None
) -> np.ndarray:
    """A flat float64 vector of ``keys`` (default: every float primitive) in spec order; arrays
    are raveled in C order. For optimizers; :func:`unpack` inverts it."""
    keys = _pack_keys(spec, keys)
    order = [k for k in spec.keys() if k in set(keys)]
    parts = []
    for k in order:
        if k not in store:
            raise UnknownKeyError(f"{k}: cannot pack a key the store lacks")
        parts.append(np.asarray(store[k], dtype=np.float64).ravel())
    return np.concatenate(parts) if parts else np.zeros(0)


def unpack(
    vector: np.ndarray, store: ParameterStore, spec: ParamSpec, keys: Iterable[str] | None = None
) -> ParameterStore:
    """A new store with ``keys`` replaced by the values in ``vector`` (shapes taken from ``store``).

    int64 keys must receive integral values. The result is validated against the spec's rules for
    those keys (bounds, finiteness)."""
    keys = _pack_keys(spec, keys)
    order = [k for k in spec.keys() if k in set(keys)]
    vector = np.asarray(vector, dtype=np.float64)
    if vector.ndim != 1:
        raise ValueError(f"unpack needs a 1-D vector, got shape {vector.shape}")
    sizes = [np.asarray(store[k]).size for k in order]
    if vector.size != sum(sizes):
        raise ValueError(
            f"unpack: vector has {vector.size} values, the keys {order} need {sum(sizes)}"
        )
    updates: dict[str, Any] = {}
    offset = 0
    for k, n in zip(order, sizes):
        chunk = vector[offset : offset + n]
        offset += n
        field = spec[k]
        template = store[k]
        if isinstance(template, np.ndarray):
            value: Any = chunk.astype(field.dtype).reshape(template.shape)
        elif field.dtype == "int64":
            if not float(chunk[0]).is_integer():
                raise ParamValidationError(f"{k}: int64 parameter cannot take {chunk[0]!r}")
            value = int(chunk[0])
        else:
            value = float(chunk[0])
        field.check(value)
        updates[k] = value
    return store.replace(updates)
