"""``crrxr build``, ``crrxr estimate`` and ``crrxr verify``.

Exit status of ``crrxr build``: 0 built; 1 failed (damaged input, a task error, another build holds
the store); 2 usage error (bad option values, a refused resume/overwrite: nothing was changed);
75 interrupted by SIGTERM/SIGUSR1/SIGINT (finished chunks kept: rerun with ``--resume``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from crrxr.executors import SCHEDULER_NAMES
from crrxr.executors.base import GRACE_SECONDS
from crrxr.executors.options import add_executor_options, executor_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: try again (--resume) later
#: Signals that stop a build cleanly (SLURM sends SIGTERM at the time limit, or --signal USR1).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _workers(text: str) -> int:
    value = _positive_int(text)
    limit = 4 * (os.cpu_count() or 1)
    if value > limit:
        raise argparse.ArgumentTypeError(
            f"{value} workers on a machine with {os.cpu_count()} cores; use at most {limit}"
        )
    return value


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
        type=_positive_int,
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
        type=_workers,
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


@contextlib.contextmanager
def stop_on_signals(grace: float) -> Iterator[threading.Event]:
    """While inside, SIGTERM/SIGUSR1/SIGINT set the yielded event (no new chunk starts, running ones
    get ``grace`` seconds, then the main thread is interrupted); a second signal stops at once."""
    import _thread

    stop = threading.Event()
    timer: list[threading.Timer] = []

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if stop.is_set():
            raise KeyboardInterrupt(name)
        stop.set()
        print(
            f"crrxr build: {name} received: no new chunk starts; running chunks get {grace:.0f} s "
            "to finish (signal again to stop now)",
            file=sys.stderr,
            flush=True,
        )
        t = threading.Timer(grace + 5.0, _thread.interrupt_main)
        t.daemon = True
        t.start()
        timer.append(t)

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for t in timer:
            t.cancel()
        for s_, h in old.items():
            signal.signal(s_, h)


def _build(args: argparse.Namespace) -> int:
    # the handlers go in first: a signal while the engine is still importing stops cleanly too
    with stop_on_signals(GRACE_SECONDS) as stop:
        try:
            return _run_build(args, stop)
        except KeyboardInterrupt:
            print(
                f"crrxr build: interrupted (stopped at once); rerun with: crrxr build {args.rss} "
                f"{args.cube} --resume",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED


def _run_build(args: argparse.Namespace, stop: threading.Event) -> int:
    from crrxr.engine.build import BuildInterrupted, ResumeRefused, run_build
    from crrxr.engine.lock import StoreLockedError
    from crrxr.engine.plan import PlanError
    from crrxr.io.atomic import OutputOverlapError
    from crrxr.params.errors import ParamError

    kw = _kwargs(args)
    # Failed channels are flagged DONOTUSE, listed in attrs and in the summary; the build succeeded.
    # --no-progress drops the progress bar / lines, never the plan and the final summary
    progress = "summary" if args.progress is False else args.progress
    resume_hint = f"rerun with: crrxr build {args.rss} {args.cube} --resume"
    try:
        run_build(
            args.rss,
            args.cube,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=progress,
            sky_subtract=args.sky_subtract,
            stop=stop,
            **kw,
        )
    except BuildInterrupted as exc:
        print(f"crrxr build: interrupted ({exc}); {resume_hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StoreLockedError as exc:
        print(f"crrxr build: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ResumeRefused, PlanError, ParamError, OutputOverlapError) as exc:
        print(f"crrxr build: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - every failure ends in one clear line
        return _failed(exc, args.cube, resume_hint)
    return EXIT_OK


def _failed(exc: BaseException, store: str, resume_hint: str) -> int:
    """Print a failure as one line naming the cause (full traceback with ``-vv``)."""
    import logging

    from crrxr.engine.store import is_crrxr_cube

    logging.getLogger(__name__).debug("build failed", exc_info=exc)
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    ours = type(exc).__module__.startswith("crrxr") or type(exc) in (ValueError, OSError)
    msg = text if ours else f"{type(exc).__name__}: {text}"
    if type(exc).__name__ == "BrokenProcessPool":
        msg = (
            "a worker process died during the build (killed, or out of memory: try fewer "
            "--workers or a smaller --max-memory)"
        )
    hint = f"; fix the cause, then {resume_hint}" if is_crrxr_cube(store) else ""
    print(f"crrxr build: error: {msg}{hint}", file=sys.stderr)
    return EXIT_FAILED


def _verify(args: argparse.Namespace) -> int:
    from crrxr.engine.integrity import bad_chunks
    from crrxr.engine.store import is_crrxr_cube, read_ledger

    if not is_crrxr_cube(args.store):
        print(f"crrxr verify: error: {args.store} is not a crrxr cube store", file=sys.stderr)
        return EXIT_USAGE
    ledger = read_ledger(args.store)
    bad = bad_chunks(args.store)
    missing = [int(k) for k in range(len(ledger)) if not ledger[k]]
    for k, why in sorted(bad.items()):
        print(f"  chunk {k}: {why}", file=sys.stderr)
    if bad or missing:
        print(
            f"BAD {args.store}: {len(bad)} chunk(s) fail verification, {len(missing)} of "
            f"{len(ledger)} not done; repair with: crrxr build RSS {args.store} --resume",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"OK {args.store}: {len(ledger)} chunk(s) done, every checksum matches")
    return EXIT_OK


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
        help="finish an interrupted build: every parameter comes from the store itself (an "
        "explicit differing value refuses); a missing store starts a new build",
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

    v = subparsers.add_parser(
        "verify",
        help="re-check every done chunk of a cube store against its checksum",
        description="Read every chunk marked done and compare it with the checksum recorded when "
        "it was written; exit 0 when all match and every chunk is done, 1 otherwise.",
    )
    v.add_argument("store", help="cube Zarr store written by `crrxr build`")
    v.set_defaults(func=_verify)
