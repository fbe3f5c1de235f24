"""``crrxr quality CUBE.zarr [--rss RSS.zarr] [--psf-map]``."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quality",
        help="PSF FWHM, pseudo-Strehl, neighbour correlation, mask fractions per band",
        description="Measure a cube's quality per band, print it and store it as the group "
        "'quality' of the cube store. --rss (the RSS the cube was built from) makes the "
        "pseudo-Strehl relative to the true kernel; --psf-map also maps FWHM and Strehl of "
        "point sources injected over the field (group 'quality_psf_map').",
    )
    p.add_argument("cube", help="cube Zarr store written by crrxr build")
    p.add_argument("--rss", default=None, help="the RSS store the cube was built from")
    p.add_argument(
        "--psf-map", action="store_true", help="map the PSF over the field (needs --rss)"
    )
    p.add_argument("--step", type=float, default=1.0, metavar="ARCSEC", help="PSF map spacing")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from crrxr.fit.run import write_group
    from crrxr.io.cube_reader import open_cube
    from crrxr.quality.measures import PSF_MAP_GROUP, QUALITY_GROUP, measure, psf_map, table

    if args.psf_map and not args.rss:
        raise ValueError("--psf-map injects sources through the RSS geometry: give --rss RSS.zarr")
    cube = open_cube(args.cube)
    q = measure(cube, args.rss)
    print(table(q))
    write_group(q, cube.path, QUALITY_GROUP, cube)
    if args.psf_map:
        m = psf_map(cube, args.rss, step=args.step)
        for b, name in enumerate(m["band"].values):
            print(
                f"PSF map {name}: {int(m['psf_fwhm'].isel(band=b).count())} positions, FWHM "
                f'{float(m["psf_fwhm"].isel(band=b).mean()):.3f}" scatter '
                f"{100 * m.attrs['fwhm_fractional_scatter'][b]:.1f}%, Strehl "
                f"{float(m['psf_strehl'].isel(band=b).mean()):.3f} scatter "
                f"{100 * m.attrs['strehl_fractional_scatter'][b]:.1f}%"
            )
        write_group(m, cube.path, PSF_MAP_GROUP, cube)
    return 0
