"""``crrxr params show|validate|list``: inspect and check reconstruction parameters."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from .errors import ParamError, ProfileError
from .profiles import (
    list_profiles,
    load_profile,
    parse_set_options,
    profile_description,
    profile_values,
)
from .reconstruction import reconstruction_resolver, reconstruction_spec
from .resolver import resolvable_derived
from .table import format_value, text_table


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``crrxr params`` and its subcommands."""
    p = subparsers.add_parser(
        "params",
        help="show, validate and list reconstruction parameters and profiles",
        description="Show, validate and list reconstruction parameters and instrument profiles.",
    )
    sub = p.add_subparsers(dest="params_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _no_subcommand(p))

    show = sub.add_parser(
        "show",
        help="print the resolved parameters of a profile (or the defaults)",
        description="Print the resolved reconstruction parameters (spec defaults <- PROFILE <- --set), "
        "with units, and the derived values that need no data (grid size, flux factor).",
    )
    show.add_argument(
        "profile",
        nargs="?",
        default=None,
        metavar="PROFILE",
        help="a shipped profile name (see 'crrxr params list') or a YAML file; "
        "default: the spec defaults",
    )
    show.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. --set crr.lambda=1e-4 (repeatable)",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(func=_show)

    validate = sub.add_parser(
        "validate",
        help="check a parameter YAML file; exit 0 if valid, 1 otherwise",
        description="Check a parameter YAML file (keys, types, bounds, base profile).",
    )
    validate.add_argument("file", metavar="FILE.yaml")
    validate.set_defaults(func=_validate)

    lst = sub.add_parser("list", help="list the shipped instrument profiles")
    lst.set_defaults(func=_list)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def _show(args: argparse.Namespace) -> int:
    spec = reconstruction_spec()
    overrides = parse_set_options(args.sets, spec)
    store = load_profile(args.profile, overrides=overrides, spec=spec)
    derived, reasons = resolvable_derived(store, spec, reconstruction_resolver())
    name = args.profile or "defaults"
    if args.json:
        out = {
            "profile": name,
            "spec": {
                "name": spec.name,
                "system_id": spec.system_id,
                "schema_version": spec.schema_version,
                "fingerprint": spec.fingerprint(),
            },
            "params": {k: _jsonable(store[k]) for k in spec.primitive_keys()},
            "derived": {k: _jsonable(v) for k, v in derived.items()},
            "unresolved": reasons,
        }
        print(json.dumps(out, indent=2, allow_nan=False))
        return 0

    desc = profile_description(args.profile) if args.profile else ""
    set_by_profile = profile_values(args.profile, spec) if args.profile else {}
    print(f"crrxr reconstruction parameters: {name}" + (f" - {desc}" if desc else ""))
    print(
        f"spec {spec.name} v{spec.schema_version} ({spec.system_id}), "
        f"fingerprint {spec.fingerprint()[:16]}"
    )
    print()
    rows = []
    for key in spec.primitive_keys():
        source = "--set" if key in overrides else "profile" if key in set_by_profile else "default"
        rows.append([key, format_value(store[key]), spec[key].units, source])
    print(text_table(rows, header=["parameter", "value", "units", "from"]), end="")
    print()
    drows = []
    for key in spec.derived_keys():
        f = spec[key]
        if key in derived:
            drows.append([key, format_value(derived[key]), f.units])
        else:
            drows.append([key, "-", f.units, _why(reasons[key])])
    print(text_table(drows, header=["derived", "value", "units", "note"]), end="")
    return 0


def _why(reason: str) -> str:
    """A short note for an unresolved derived value."""
    if "automatic" in reason:
        return "automatic extent: computed from the fiber positions"
    if "needs context" in reason:
        names = reason.split("needs context ", 1)[1].split(" (", 1)[0]
        return f"needs data: {names}"
    return reason.splitlines()[0]


def _validate(args: argparse.Namespace) -> int:
    try:
        store = load_profile(args.file)
    except ProfileError as exc:
        print(f"INVALID {args.file}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    except ParamError as exc:
        print(f"INVALID {args.file}\n  - {exc}", file=sys.stderr)
        return 1
    spec = reconstruction_spec()
    n_changed = sum(
        1
        for k, d in spec.defaults().items()
        if not (np.array_equal(d, store[k]) if isinstance(d, np.ndarray) else d == store[k])
    )
    print(f"OK {args.file} ({n_changed} parameter(s) differ from the spec defaults)")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = [[name, profile_description(name)] for name in list_profiles()]
    print(text_table(rows, header=["profile", "description"]), end="")
    return 0
