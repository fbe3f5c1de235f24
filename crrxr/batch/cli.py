"""``crrxr submit`` and ``crrxr status``."""

from __future__ import annotations

import argparse

#: submit's own options (never passed on to the builds)
_SUBMIT_DESTS = {"rss", "out", "array", "max_concurrent", "dry_run", "job_name", "func", "command"}


def _build_option_parsers() -> tuple[argparse.ArgumentParser, set]:
    """A parser with every build option, and the dests of the executor (Ray/SLURM) options."""
    from crrxr.engine.cli import add_build_options
    from crrxr.executors.options import add_executor_options

    build = argparse.ArgumentParser(add_help=False)
    add_build_options(build)
    executor = argparse.ArgumentParser(add_help=False)
    add_executor_options(executor)
    return build, {a.dest for a in executor._actions}


def _submit(args: argparse.Namespace) -> int:
    from crrxr.batch.submit import build_argv, default_job_memory, job_script, plan_submit, submit
    from crrxr.executors.options import slurm_settings

    if args.scheduler == "slurm":
        raise ValueError(
            "crrxr submit runs each build inside its own SLURM job: drop --scheduler slurm "
            "(the build in the job uses threads unless --scheduler says otherwise)"
        )
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ValueError("--max-concurrent must be >= 1")
    settings = slurm_settings(args)
    build_parser, executor_dests = _build_option_parsers()
    build_args = build_argv(args, build_parser, executor_dests | _SUBMIT_DESTS)
    if args.ray_address:
        build_args.append(f"--ray-address={args.ray_address}")
    workers = args.workers or settings.cores
    if args.workers is None:
        build_args.append(f"--workers={workers}")
    plan = plan_submit(args.out, args.rss)
    script = job_script(
        args.out,
        settings,
        build_args,
        array=args.array,
        indexes=plan.todo,
        max_concurrent=args.max_concurrent,
        job_name=args.job_name,
        memory=default_job_memory(settings, workers, args.max_memory),
    )
    skipped = ", ".join(f"{n} {why}" for why, n in plan.skipped.items())
    if args.dry_run:
        submit(plan, script, dry_run=True)
        return 0
    if not plan.todo:
        print(f"crrxr submit: nothing to submit in {plan.folder} ({skipped or 'no IFUs'})")
        return 0
    ids = submit(plan, script)
    what = f"array job {ids[0]}" if args.array else f"{len(ids)} job(s) {', '.join(ids[:5])}"
    print(
        f"crrxr submit: {len(plan.todo)} of {len(plan.entries)} IFU(s) submitted as {what}"
        + (f" (skipped: {skipped})" if skipped else "")
        + f"; follow with: crrxr status {plan.folder}"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from crrxr.batch.status import find_stores, store_status, summary

    print(summary([store_status(s) for s in find_stores(args.paths)]))
    return 0


def add_parser(subparsers) -> None:
    from crrxr.engine.cli import add_build_options

    s = subparsers.add_parser(
        "submit",
        help="build many cubes as one SLURM job array (resumable, requeued at time limits)",
        description="Write a manifest of IFUs into --out and submit one SLURM job array whose "
        "elements run `crrxr build RSS OUT/<name>.cube.zarr --resume`. Rerunning submits only "
        "IFUs that are not complete, running or queued.",
    )
    s.add_argument("rss", nargs="*", help="RSS Zarr stores (none: resubmit the manifest's)")
    s.add_argument("--out", required=True, metavar="DIR", help="survey folder (cubes, manifest)")
    s.add_argument(
        "--array",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one job array (default) or, with --no-array, one job per IFU",
    )
    s.add_argument(
        "--max-concurrent", type=int, default=None, metavar="K", help="array elements at once"
    )
    s.add_argument("--job-name", default="crrxr", help="SLURM job name (default crrxr)")
    s.add_argument(
        "--dry-run", action="store_true", help="print the manifest and the job script only"
    )
    add_build_options(s)
    s.set_defaults(func=_submit)

    t = subparsers.add_parser(
        "status",
        help="state of cube builds: complete / partial / running / not started",
        description="Per IFU, from the stores themselves (ledger, attrs, lease): complete, "
        "unfinished (chunks done, finish pending), partial (k of n chunks), running (where), "
        "not started; with totals.",
    )
    t.add_argument("paths", nargs="+", metavar="DIR|STORE", help="survey folders or cube stores")
    t.set_defaults(func=_status)
