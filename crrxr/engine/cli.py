"""``crrxr build`` and ``crrxr estimate``."""

from __future__ import annotations

import argparse

from crrxr.executors import SCHEDULER_NAMES
from crrxr.executors.options import add_executor_options, executor_settings


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("rss", help="RSS Zarr store (crrxr simulate / crrxr ingest output)")
    add_build_options(p)


def add_build_options(p: argparse.ArgumentParser) -> None:
    """Every option of a build after the RSS (shared with ``crrxr submit``)."""
    p.add_argument(
        "--method",
        choices=("crr", "shepard"),
        default=None,
        help="reconstruction method (default: the profile's, else crr)",
    )
    p.add_argument(
        "--profile", default=None, help="instrument profile, e.g. manga-127 (crrxr params list)"
    )
    p.add_argument(
        "--config", default=None, metavar="FILE.yaml", help="YAML file of parameter values"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. --set crr.lambda=1e-4 (repeatable)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--wave-chunk",
        type=int,
        default=None,
        metavar="N",
        help="wavelength channels per task (default: engine.wave_chunk)",
    )
    size.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help="memory budget per worker, e.g. 2GB; the chunk length is planned from it",
    )
    p.add_argument(
        "--scheduler",
        default="threads",
        metavar="NAME|ADDRESS",
        help=f"{' | '.join(SCHEDULER_NAMES)} | a scheduler address tcp://host:port "
        "(default: threads)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="parallel tasks / workers (default: the cores available)",
    )
    p.add_argument(
        "--sky-subtract",
        action="store_true",
        help="subtract the sky (crrxr.io.sky.subtract_sky) inside each task before the solve",
    )
    add_executor_options(p)  # --ray-address, SLURM site settings (crrxr.executors.options)


def _kwargs(args: argparse.Namespace) -> dict:
    return dict(
        method=args.method,
        profile=args.profile,
        config=args.config,
        overrides=args.overrides or None,
        scheduler=executor_settings(args),
        workers=args.workers,
        max_memory=args.max_memory,
        wave_chunk=args.wave_chunk,
    )


def _build(args: argparse.Namespace) -> int:
    from crrxr.engine.build import run_build

    kw = _kwargs(args)
    # Failed channels are flagged DONOTUSE, listed in attrs and in the summary; the build succeeded.
    # --no-progress drops the progress bar / lines, never the plan and the final summary
    progress = "summary" if args.progress is False else args.progress
    run_build(
        args.rss,
        args.cube,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=progress,
        sky_subtract=args.sky_subtract,
        **kw,
    )
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from crrxr.engine.build import estimate
    from crrxr.executors import make_executor

    plan = estimate(args.rss, **_kwargs(args))
    ex = make_executor(executor_settings(args), plan.workers, plan.budget_bytes, plan.task_bytes)
    print(plan.describe())
    print(f"executor:        {ex.describe()}")
    return 0


def add_parser(subparsers) -> None:
    b = subparsers.add_parser(
        "build",
        help="reconstruct a cube from an RSS (chunked, resumable)",
        description="Reconstruct a CRR or Shepard cube from an RSS Zarr store "
        "into a Zarr cube, chunk by chunk over wavelength.",
    )
    _common(b)
    b.add_argument("cube", help="output cube Zarr store")
    again = b.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted build (same RSS and parameters)",
    )
    again.add_argument("--overwrite", action="store_true", help="replace an existing cube store")
    b.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on a terminal / log lines otherwise (default: on); the plan and the "
        "final summary are printed either way",
    )
    b.set_defaults(func=_build)

    e = subparsers.add_parser(
        "estimate",
        help="print the build plan (chunks, memory) without running",
        description="Plan a build: channels, chunks, pixels, samples, memory per "
        "task and output size; refuses plans that cannot work.",
    )
    _common(e)
    e.set_defaults(func=_estimate)
