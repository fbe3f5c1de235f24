"""The ``crrxr`` command.

Each subcommand lives next to the code it drives, in a module exposing ``add_parser(subparsers)``.
:data:`COMMANDS` maps every command name to that module and a one-line help; only the module of the
command being run is imported, so ``crrxr --help`` and ``crrxr --version`` start at once. To add a
command, add one line to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

import crrxr

# command name -> (module whose add_parser(subparsers) registers it, one-line help for `crrxr --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("crrxr.simulate.cli", "write a synthetic RSS Zarr store"),
    "ingest-manga": (
        "crrxr.io.manga_cli",
        "convert a MaNGA LOGRSS FITS file into an RSS Zarr store",
    ),
    "validate": ("crrxr.io.cli", "check an RSS Zarr store against the crrxr schema"),
    "params": (
        "crrxr.params.cli",
        "show, validate and list reconstruction parameters and profiles",
    ),
    "estimate": ("crrxr.engine.cli", "print the build plan (chunks, memory) without running"),
    "build": ("crrxr.engine.cli", "reconstruct a cube from an RSS (chunked, resumable)"),
    "export-fits": ("crrxr.io.manga_cli", "write a cube store as a MaNGA LOGCUBE FITS file"),
    "verify": (
        "crrxr.engine.cli",
        "re-check every done chunk of a cube store against its checksum",
    ),
    "fit": ("crrxr.fit.cli", "fit a PSF, point source or binary to a cube (or its RSS fibers)"),
    "quality": ("crrxr.quality.cli", "PSF, correlation and coverage quality of a cube"),
    "plot": ("crrxr.plot.cli", "quick-look PNG figures of a cube (and its fits)"),
    "submit": ("crrxr.batch.cli", "submit many IFUs as one SLURM job array (resumable)"),
    "status": ("crrxr.batch.cli", "per-IFU state of cube stores (complete, partial, running, ...)"),
}


class CLIError(Exception):
    """An error meant for the user: printed without a traceback, exit code 1."""


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is one), or None."""
    return next((a for a in argv if a in COMMANDS), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported, the others get a help-only entry."""
    parser = argparse.ArgumentParser(
        prog="crrxr",
        description="Covariance-Regularized Reconstruction of IFU data cubes (out-of-core).",
    )
    parser.add_argument("--version", action="version", version=f"crrxr {crrxr.__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command is not None:
        importlib.import_module(COMMANDS[command][0]).add_parser(sub)
    for name, (_module, help_text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
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
