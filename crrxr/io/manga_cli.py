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
    p.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip the schema validation of the written store (saves one pass over the data)",
    )
    p.set_defaults(func=_ingest)
    add_export_parser(subparsers)


def _ingest(args: argparse.Namespace) -> int:
    from crrxr.io.atomic import refuse_overlap
    from crrxr.io.manga import ingest_manga_rss

    refuse_overlap([args.rss], args.out, "ingest-manga")
    out = ingest_manga_rss(
        args.rss,
        args.out,
        wave_chunk=args.wave_chunk,
        seeing=args.seeing,
        allow_unknown_mask_bits=args.allow_unknown_mask_bits,
        overwrite=args.overwrite,
        validate=args.validate,
    )
    print(f"wrote {out}")
    return 0


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-fits",
        help="write a cube store as a MaNGA-style LOGCUBE FITS file",
        description="FLUX/IVAR/MASK with a celestial+spectral WCS, WAVE, PSF images and "
        "GCORREL-style correlation tables, streamed one wavelength chunk at a time.",
    )
    p.add_argument("cube", help="cube Zarr store written by `crrxr build`")
    p.add_argument("out", help="output FITS file, e.g. manga-PLATE-IFU-LOGCUBE.fits")
    p.add_argument(
        "--ifu-ra", type=float, default=None, metavar="DEG", help="override IFU centre RA"
    )
    p.add_argument(
        "--ifu-dec", type=float, default=None, metavar="DEG", help="override IFU centre Dec"
    )
    p.add_argument(
        "--allow-incomplete", action="store_true", help="export even if some chunks are not done"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from crrxr.engine.integrity import bad_chunks
    from crrxr.io.atomic import refuse_overlap
    from crrxr.io.manga import export_logcube

    refuse_overlap([args.cube], args.out, "export-fits")
    bad = bad_chunks(args.cube)
    if bad:  # never export NaN flux with ivar > 0 from a damaged chunk
        k, why = sorted(bad.items())[0]
        raise ValueError(
            f"{args.cube}: {len(bad)} chunk(s) fail verification (chunk {k}: {why}); repair the "
            f"store with `crrxr build RSS {args.cube} --resume`, then export again"
        )
    out = export_logcube(
        args.cube,
        args.out,
        ifu_ra=args.ifu_ra,
        ifu_dec=args.ifu_dec,
        overwrite=args.overwrite,
        allow_incomplete=args.allow_incomplete,
    )
    print(f"wrote {out}")
    return 0
