"""``crrxr validate PATH``: check an RSS Zarr store against the schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .rss import open_zarr_unchecked
from .schema import inspect_rss


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate",
        help="check an RSS Zarr store against the crrxr schema",
        description="Check an RSS Zarr store against the crrxr schema (DESIGN.md section 2). Prints OK "
        "and a one-line summary, or every problem found; exit code 0 or 1. Reads metadata, the small "
        "coordinates and, chunk by chunk, ivar/mask/positions (never the flux).",
    )
    p.add_argument("path", help="RSS Zarr store")
    p.add_argument(
        "--bad-bits",
        type=lambda s: int(s, 0),
        default=None,
        help="RSS mask bits that make a sample unusable (default: the store's mask.bad_bits "
        "or 0b11111)",
    )
    p.add_argument(
        "--data",
        action="store_true",
        help="also read every chunk of flux/ivar/mask/positions: a chunk that is missing (reads "
        "as NaN) or cannot be decoded is an error",
    )
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    path = Path(args.path)
    ds = open_zarr_unchecked(path)
    report = inspect_rss(ds, bad_bits=args.bad_bits)
    if args.data:
        report.errors.extend(_data_errors(str(path), ds))
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if report.ok:
        print(f"OK {path}: {report.summary}")
        return 0
    print(f"INVALID {path}: {report.summary}", file=sys.stderr)
    for e in report.errors:
        print(f"  - {e}", file=sys.stderr)
    return 1


def _data_errors(path: str, ds) -> list[str]:
    """Every stored chunk of the per-sample variables, read once: missing or undecodable ones."""
    from crrxr.engine.integrity import InputChunkError, check_input_slice

    names = [n for n in ("flux", "ivar", "mask", "xpos", "ypos") if n in ds.variables]
    n_wave = int(ds.sizes.get("wavelength", 0))
    chunks = ds["flux"].chunks if "flux" in ds.variables else None
    step = int(chunks[-1][0]) if chunks else max(n_wave, 1)
    errors = []
    for start in range(0, n_wave, step):
        stop = min(n_wave, start + step)
        try:
            check_input_slice(path, names, start, stop)
            ds[names].isel(wavelength=slice(start, stop)).load()
        except InputChunkError as exc:
            errors.append(str(exc))
        except (OSError, ValueError, RuntimeError) as exc:
            errors.append(f"channels {start}:{stop} cannot be read ({type(exc).__name__}: {exc})")
    return errors
