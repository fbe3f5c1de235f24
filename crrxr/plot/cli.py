"""``crrxr plot CUBE.zarr [--out DIR] [--rss RSS.zarr] [--compare OTHER.zarr]``."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plot",
        help="quick-look PNGs: white light, PSF, correlations, a spectrum, masks, fits",
        description="Write quick-look figures of a cube into --out: white-light image (with the "
        "fiber footprint when --rss is given), PSF image and radial profile against the kernel, "
        "correlation against pixel separation (with --compare cubes, e.g. CRR and Shepard), a "
        "spaxel's spectrum with its error band, the mask map, and every fit stored in the cube.",
    )
    p.add_argument("cube", help="cube Zarr store written by crrxr build")
    p.add_argument("--out", default="crrxr-plots", help="output folder (default: crrxr-plots)")
    p.add_argument("--rss", default=None, help="the RSS the cube was built from (fiber footprint)")
    p.add_argument("--compare", nargs="*", default=[], metavar="CUBE", help="more cubes to compare")
    p.add_argument("--spaxel", type=int, nargs=2, default=None, metavar=("IY", "IX"))
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crrxr.fit.channels import check_rss_matches
    from crrxr.io.cube_reader import open_cube
    from crrxr.plot.figures import all_figures

    cube = open_cube(args.cube)
    rss = check_rss_matches(cube, args.rss) if args.rss else None
    others = [open_cube(c) for c in args.compare]
    paths = all_figures(cube, Path(args.out), rss=rss, compare=others, spaxel=args.spaxel)
    for p in paths:
        print(p)
    return 0
