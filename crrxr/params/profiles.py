"""Instrument profiles (YAML shipped in ``crrxr/params/profiles/``) and user overrides.

A profile or user file is a YAML mapping (read with ``yaml.safe_load``)::

    profile: manga-127          # optional base profile (a shipped name or a path to another YAML)
    description: my settings    # optional, free text
    crr.lambda: 1.0e-4          # dotted keys ...
    grid:                       # ... or nested mappings; both may be mixed
      pixel_scale_arcsec: 0.5

Layers, later winning: spec defaults <- base profile(s) <- this file <- ``overrides``. Unknown keys
(with a "did you mean" suggestion), derived keys, bad types and out-of-bounds values are errors that
name the file, the key and the allowed range.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ParamError, ParamValidationError, ProfileError, did_you_mean
from .reconstruction import SYSTEM_ID, check_reconstruction, reconstruction_spec
from .spec import ParamSpec
from .store import ParameterStore

RESERVED_KEYS = ("profile", "description")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_BASE_DEPTH = 8


def _profile_dir():
    return resources.files("crrxr.params").joinpath("profiles")


def list_profiles() -> list[str]:
    """Names of the profiles shipped with crrxr, sorted."""
    names = [p.name[:-5] for p in _profile_dir().iterdir() if p.name.endswith(".yaml")]
    return sorted(
        names, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]
    )


def profile_description(name_or_path: str | Path) -> str:
    """The ``description`` line of a profile ("" when absent)."""
    _, data = _read_yaml(name_or_path)
    return str(data.get("description", "") or "")


def _locate(name_or_path: str | Path) -> tuple[str, str]:
    """``(label, text)`` for a shipped profile name or a YAML path."""
    text_name = str(name_or_path)
    is_path = (
        isinstance(name_or_path, Path) or "/" in text_name or text_name.endswith((".yaml", ".yml"))
    )
    if not is_path and _NAME_RE.match(text_name):
        res = _profile_dir().joinpath(f"{text_name}.yaml")
        if res.is_file():
            return f"profile {text_name!r}", res.read_text(encoding="utf-8")
        if not Path(text_name).is_file():
            names = list_profiles()
            raise ProfileError(
                f"unknown profile {text_name!r}{did_you_mean(text_name, names)}; shipped profiles: "
                f"{', '.join(names)} (or give a path to a YAML file)"
            )
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file {str(path)!r} does not exist")
    try:
        return str(path), path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(
            f"{str(path)!r} is not a text (UTF-8 YAML) file ({exc.reason} at byte {exc.start}); "
            "give a YAML parameter file"
        ) from None


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (a few nested aliases expand exponentially) and
    keys given twice in one mapping (YAML's last-one-wins would silently drop a value)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "aliases (*name) are not allowed in crrxr parameter files; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice in one mapping; keep one",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, label: str) -> Any:
    """YAML text parsed with :class:`_StrictLoader`; errors name ``label`` (a file or profile)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ProfileError(f"{label}: not valid YAML: {exc}") from None


def read_yaml(name_or_path: str | Path) -> tuple[str, dict[str, Any]]:
    """``(label, mapping)`` of a shipped profile name or a YAML file (strict: see _StrictLoader)."""
    return _read_yaml(name_or_path)


def _read_yaml(name_or_path: str | Path) -> tuple[str, dict[str, Any]]:
    label, text = _locate(name_or_path)
    data = parse_yaml(text, label)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(
            f"{label}: expected a mapping of parameter keys, got {type(data).__name__}"
        )
    return label, data


def flatten_keys(data: Mapping[str, Any], label: str = "overrides") -> dict[str, Any]:
    """Nested mappings to dotted keys (``{"grid": {"pixel_scale_arcsec": 1}}`` ->
    ``{"grid.pixel_scale_arcsec": 1}``); a key given twice is an error."""
    out: dict[str, Any] = {}

    def walk(prefix: str, mapping: Mapping[Any, Any]) -> None:
        for k, v in mapping.items():
            if not isinstance(k, str):
                raise ProfileError(f"{label}: key {k!r} is not a string")
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, Mapping):
                walk(key, v)
            elif key in out:
                raise ProfileError(f"{label}: key {key!r} is given twice")
            else:
                out[key] = v

    walk("", data)
    return out


def coerce_values(values: Mapping[str, Any], spec: ParamSpec, label: str) -> dict[str, Any]:
    """Coerce loose values (YAML/CLI) to each field's type and check them; collects every problem
    and raises one :class:`ProfileError` naming ``label``, each key and its allowed range."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in spec:
            problems.append(f"{key}: unknown parameter{did_you_mean(key, spec.keys())}")
            continue
        field = spec[key]
        if field.is_derived:
            problems.append(
                f"{key}: is derived (computed); set {', '.join(field.depends_on)} instead"
            )
            continue
        try:
            value = field.coerce(raw)
            field.check(value)
        except ParamValidationError as exc:
            msg = str(exc)
            if field.bounds is not None or field.choices:
                allowed = field.describe_allowed()
                if allowed not in msg:
                    msg += f" (allowed: {allowed})"
            problems.append(msg)
            continue
        out[key] = value
    if problems:
        raise ProfileError(
            f"{label}: "
            + (
                "\n  - ".join(["invalid parameters", *problems])
                if len(problems) > 1
                else problems[0]
            ),
            [f"{label}: {p}" for p in problems],
        )
    return out


def _layers(name_or_path: str | Path, spec: ParamSpec, seen: tuple[str, ...]) -> dict[str, Any]:
    label, data = _read_yaml(name_or_path)
    if label in seen:
        raise ProfileError(f"{label}: profile bases form a cycle: {' -> '.join((*seen, label))}")
    if len(seen) >= _MAX_BASE_DEPTH:
        raise ProfileError(f"{label}: profile bases nest deeper than {_MAX_BASE_DEPTH}")
    base = data.pop("profile", None)
    data.pop("description", None)
    values: dict[str, Any] = {}
    if base is not None:
        if not isinstance(base, str):
            raise ProfileError(
                f"{label}: 'profile' must name a profile or a YAML path, got {base!r}"
            )
        if isinstance(name_or_path, str | Path) and (
            "/" in base or base.endswith((".yaml", ".yml"))
        ):
            here = (
                Path(str(name_or_path)).parent if Path(str(name_or_path)).is_file() else Path(".")
            )
            base_path: str | Path = here / base if not Path(base).is_absolute() else Path(base)
        else:
            base_path = base
        try:
            values.update(_layers(base_path, spec, (*seen, label)))
        except ProfileError as exc:
            raise ProfileError(f"{label}: base {base!r}: {exc}", exc.problems) from None
    values.update(coerce_values(flatten_keys(data, label), spec, label))
    return values


def profile_values(name_or_path: str | Path, spec: ParamSpec | None = None) -> dict[str, Any]:
    """The values a profile (with its bases) sets, coerced and checked, without the spec defaults."""
    return _layers(name_or_path, spec or reconstruction_spec(), ())


def load_profile(
    name_or_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    spec: ParamSpec | None = None,
) -> ParameterStore:
    """Resolved primitive parameters: spec defaults <- profile (and its bases) <- ``overrides``.

    name_or_path: a shipped profile name (``crrxr params show`` lists them, e.g. ``manga-127``), a
        path to a YAML file, or ``None`` for the spec defaults alone.
    overrides: dotted (or nested) keys to values; loose types are coerced (``"1e-4"`` -> 1e-4).
    spec: defaults to :func:`reconstruction_spec`.
    Returns a validated :class:`ParameterStore` (primitives only). Raises :class:`ProfileError`.
    """
    spec = spec or reconstruction_spec()
    values = dict(spec.defaults())
    if name_or_path is not None:
        values.update(_layers(name_or_path, spec, ()))
    if overrides:
        values.update(coerce_values(flatten_keys(overrides, "overrides"), spec, "overrides"))
    store = ParameterStore(values)
    try:
        store.validate_against(spec)
        if spec.system_id == SYSTEM_ID:
            check_reconstruction(store)
    except ParamError as exc:
        raise ProfileError(f"{name_or_path or 'defaults'}: {exc}") from None
    return store


def parse_set_options(items: Iterable[str], spec: ParamSpec | None = None) -> dict[str, Any]:
    """``["crr.lambda=1e-4", "method=shepard"]`` -> ``{"crr.lambda": 1e-4, "method": "shepard"}``,
    each value coerced to its field's type (arrays: comma-separated). Errors name the option."""
    spec = spec or reconstruction_spec()
    raw: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ProfileError(f"--set {item!r}: expected KEY=VALUE, e.g. --set crr.lambda=1e-4")
        if key in raw:
            raise ProfileError(f"--set: key {key!r} is given twice")
        raw[key] = value.strip()
    return coerce_values(raw, spec, "--set")
