"""``crrxr fit psf|source|binary CUBE.zarr --rss RSS.zarr``."""

from __future__ import annotations

import argparse

import numpy as np

from crrxr.executors import SCHEDULER_NAMES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a PSF, point source or binary per channel; stored in the cube store",
        description="Fit a model per wavelength channel (or bin of channels) to a cube through "
        "its own weights and covariance (--data cube) or to the RSS fibers it was built from "
        "(--data rss). The result is stored as the group fits/<model>[_rss] of the cube store "
        "(xr.open_zarr(cube, group='fits/source')).",
    )
    p.add_argument("model", choices=("psf", "source", "binary"))
    p.add_argument("cube", help="cube Zarr store written by crrxr build")
    p.add_argument("--rss", required=True, help="the RSS store the cube was built from")
    p.add_argument("--data", choices=("cube", "rss"), default="cube", help="fit route")
    p.add_argument(
        "--wavelengths",
        type=float,
        nargs="+",
        default=None,
        metavar="A",
        help="fit only the channels nearest these wavelengths (Angstrom)",
    )
    p.add_argument("--bin", type=int, default=1, metavar="N", help="channels per fit (mean)")
    p.add_argument(
        "--scheduler",
        default="synchronous",
        metavar="NAME|ADDRESS",
        help=f"{' | '.join(SCHEDULER_NAMES)} | a scheduler address (default: synchronous)",
    )
    p.add_argument("--workers", type=int, default=None, metavar="N")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier fit of this group")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from crrxr.fit.run import fit_cube, fit_group

    ds = fit_cube(
        args.cube,
        args.model,
        args.rss,
        route=args.data,
        wavelengths=args.wavelengths,
        bin_size=args.bin,
        scheduler=args.scheduler,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    done = np.flatnonzero(ds["fit_status"].values != 4)
    keys = [str(k) for k in ds["param"].values]
    print(
        f"crrxr fit {args.model} ({args.data}): {done.size} fit(s) -> {args.cube} group "
        f"{fit_group(args.model, args.data)}"
    )
    print("wavelength  status  chi2/dof  " + "  ".join(keys))
    for c in done[:10]:
        row = ds.isel(wavelength=int(c))
        vals = "  ".join(
            f"{v:.4g}+-{e:.2g}"
            for v, e in zip(row["fit_coefficients"].values, row["fit_stderr"].values)
        )
        dof = max(int(row["fit_dof"]), 1)
        print(
            f"{float(row['wavelength']):10.2f}  {int(row['fit_status']):6d}  "
            f"{float(row['fit_chi2']) / dof:8.3f}  {vals}"
        )
    if done.size > 10:
        print(f"... ({done.size - 10} more)")
    return 0
