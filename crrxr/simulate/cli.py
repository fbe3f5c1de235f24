"""``crrxr simulate OUT.zarr``: write a synthetic RSS store."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .geometry import MANGA_BUNDLE_SIZES
from .scenes import SCENE_NAMES

log = logging.getLogger(__name__)


def _noise(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--noise takes 'none' or a positive S/N, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--noise S/N must be > 0, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="write a synthetic RSS Zarr store (bundles/lenslets, dithers, DAR, seeing, scenes, noise)",
        description="Simulate an IFU observation and write it as a chunked RSS Zarr store (streamed "
        "chunk by chunk; written to a temporary path and renamed on success). The truth is stored in "
        "the attrs crrxr_truth_paramspec/crrxr_truth.",
    )
    p.add_argument("out", help="output Zarr store (e.g. sim.zarr)")
    geo = p.add_mutually_exclusive_group()
    geo.add_argument(
        "--bundle",
        type=int,
        choices=MANGA_BUNDLE_SIZES,
        default=None,
        help='MaNGA hex bundle size (2" fibers, 2.5" pitch; default 19)',
    )
    geo.add_argument(
        "--lenslets",
        type=int,
        default=None,
        metavar="N",
        help="contiguous hexagonal lenslet array of N lenslets (fiber radius: equal-area radius of the hexagonal cell, 0.525 x pitch)",
    )
    p.add_argument(
        "--lenslet-pitch", type=float, default=0.75, metavar="ARCSEC", help="lenslet pitch (0.75)"
    )
    p.add_argument(
        "--fiber-radius",
        type=float,
        default=None,
        metavar="ARCSEC",
        help="top-hat radius (default 1.0 for bundles, 0.525 x pitch for lenslets)",
    )
    p.add_argument(
        "--exposures",
        type=int,
        default=None,
        metavar="N",
        help="number of exposures (default 9 for bundles, 1 for lenslets)",
    )
    p.add_argument(
        "--seeing", type=float, default=1.19, metavar="FWHM", help="seeing FWHM at 5400 A (1.19)"
    )
    p.add_argument(
        "--seeing-jitter",
        type=float,
        default=0.05,
        metavar="FRAC",
        help="fractional rms of the per-exposure seeing (0.05)",
    )
    p.add_argument(
        "--jitter",
        type=float,
        default=0.05,
        metavar="ARCSEC",
        help="dither position jitter rms (0.05)",
    )
    p.add_argument(
        "--nwave",
        type=int,
        default=None,
        metavar="N",
        help="channels (default: MaNGA spacing Dlog10 = 1e-4 over --wave-range)",
    )
    p.add_argument(
        "--wave-range",
        type=float,
        nargs=2,
        default=(3622.0, 10354.0),
        metavar=("MIN", "MAX"),
        help="wavelength range in Angstrom (3622 10354)",
    )
    p.add_argument(
        "--scene",
        choices=SCENE_NAMES,
        default="point",
        help="scene with default parameters (point)",
    )
    p.add_argument(
        "--noise",
        type=_noise,
        default=None,
        metavar="none|SNR",
        help="S/N of the brightest fiber at 5400 A (default none)",
    )
    p.add_argument("--dead-fibers", type=int, default=0, metavar="K", help="dead fibers (0)")
    p.add_argument(
        "--bad-pixels",
        type=float,
        default=0.0,
        metavar="FRAC",
        help="fraction of rejected samples (0)",
    )
    p.add_argument(
        "--dar",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="differential atmospheric refraction (on)",
    )
    p.add_argument(
        "--dar-amplitude",
        type=float,
        default=1.0,
        metavar="ARCSEC",
        help="DAR shift between 3600 and 10000 A (1.0)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument(
        "--wave-chunk", type=int, default=64, metavar="N", help="channels per Zarr chunk (64)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from .rss_writer import simulate_rss

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    ds = simulate_rss(
        out,
        bundle=19 if args.bundle is None and args.lenslets is None else args.bundle,
        lenslets=args.lenslets,
        lenslet_pitch=args.lenslet_pitch,
        fiber_radius=args.fiber_radius,
        exposures=args.exposures,
        seeing=args.seeing,
        seeing_jitter=args.seeing_jitter,
        jitter=args.jitter,
        nwave=args.nwave,
        wave_range=tuple(args.wave_range),
        scene=args.scene,
        noise=args.noise,
        dead_fibers=args.dead_fibers,
        bad_pixel_fraction=args.bad_pixels,
        dar=args.dar,
        dar_amplitude=args.dar_amplitude,
        seed=args.seed,
        wave_chunk=args.wave_chunk,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {out}: {ds.sizes['spectrum']} spectra x {ds.sizes['wavelength']} channels "
        f"({ds.sizes['exposure']} exposures, scene {args.scene})"
    )
    return 0
