"""``crrxr ingest-manga`` and ``crrxr export-fits``."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest-manga",
        help="convert a MaNGA LOGRSS FITS file into a crrxr RSS Zarr store",
        description="Read FLUX/IVAR/MASK/XPOS/YPOS/WAVE/OBSINFO of a manga-PLATE-IFU-LOGRSS.fits[.gz] "
        "and write the crrxr RSS schema, one wavelength chunk at a time.",
    )
    p.add_argument("rss", help="manga-PLATE-IFU-LOGRSS.fits or .fits.gz")
    p.add_argument("out", help="output RSS Zarr store (must not exist unless --overwrite)")
    p.add_argument(
        "--wave-chunk", type=int, default=64, metavar="N", help="channels per chunk (default 64)"
    )
    p.add_argument(
        "--seeing",
        type=float,
        default=None,
        metavar="ARCSEC",
        help="seeing FWHM at 5400 A for every exposure (needed if the file has no OBSINFO)",
    )
    p.add_argument(
        "--allow-unknown-mask-bits",
        action="store_true",
        help="reject samples with mask bits undefined in MANGA_DRP2PIXMASK instead of failing",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output store")
    p.set_defaults(func=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    from crrxr.io.manga import ingest_manga_rss

    out = ingest_manga_rss(
        args.rss,
        args.out,
        wave_chunk=args.wave_chunk,
        seeing=args.seeing,
        allow_unknown_mask_bits=args.allow_unknown_mask_bits,
        overwrite=args.overwrite,
    )
    print(f"wrote {out}")
    return 0
