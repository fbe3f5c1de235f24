"""The ``crrxr`` command.

Each subcommand lives next to the code it drives and exposes ``add_parser(subparsers)``; the list
below is explicit (no registry filled at import) and each module is imported only when the command
line is parsed, so ``crrxr --version`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import crrxr

# (module, attribute) pairs; each add_parser(subparsers) registers one or more subcommands.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "crrxr.params.cli",
    "crrxr.io.cli",
    "crrxr.io.manga_cli",
    "crrxr.simulate.cli",
    "crrxr.engine.cli",
    "crrxr.fit.cli",
    "crrxr.quality.cli",
    "crrxr.plot.cli",
)


class CLIError(Exception):
    """An error meant for the user: printed without a traceback, exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crrxr",
        description="Covariance-Regularized Reconstruction of IFU data cubes (out-of-core).",
    )
    parser.add_argument("--version", action="version", version=f"crrxr {crrxr.__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that layer is not built yet
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("crrxr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, KeyError, OSError) as exc:
        # Errors raised by crrxr carry a message naming the problem and the fix.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"crrxr {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
