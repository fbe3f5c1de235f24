"""``build_cube``: plan, lay out the store, run the chunk tasks under an executor, resume, finish.

The driver never holds the cube: each task writes its own regions and ledger mark
(:mod:`crrxr.engine.chunk`); the driver writes the template, schedules the missing chunks and, at the
end, records the failed channels and history and consolidates the metadata.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr
from dask.utils import format_bytes

import crrxr
from crrxr.engine import settings
from crrxr.engine import store as S
from crrxr.engine.chunk import ChunkResult, ChunkTask, solve_chunk
from crrxr.engine.lock import StoreLock
from crrxr.engine.memory import PeakMemory
from crrxr.engine.plan import Plan, make_plan
from crrxr.executors import Executor, available_cores, make_executor
from crrxr.io import cube as C

log = logging.getLogger(__name__)


class ResumeError(ValueError):
    """The existing store cannot be resumed with these inputs (or needs --resume/--overwrite)."""


@dataclass
class BuildReport:
    """What a build did; ``summary()`` is the text printed at the end."""

    store: str
    plan: Plan
    executor: str
    chunks_total: int
    chunks_solved: int
    chunks_skipped: int
    wall_seconds: float
    peak_memory: int  # bytes, this process and its children (local workers) together
    peak_process_memory: int = 0  # bytes, the largest single process
    channels_solved: int = 0
    solve_seconds: float = 0.0  # wall time of the task phase alone (no planning, template, finish)
    failed_channels: list[int] = field(default_factory=list)
    failure_messages: list[str] = field(default_factory=list)
    resumed: bool = False
    removed_partials: list[str] = field(default_factory=list)

    @property
    def channels_per_second(self) -> float:
        """Channels solved in this run per second of wall time (planning and writing included)."""
        return self.channels_solved / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def summary(self) -> str:
        failed = (
            f"{len(self.failed_channels)} failed channel(s): {self.failed_channels[:20]}"
            + (" ..." if len(self.failed_channels) > 20 else "")
            if self.failed_channels
            else "no failed channels"
        )
        resumed = (
            f" (resumed: {self.chunks_skipped} chunk(s) already done"
            f"{f', {len(self.removed_partials)} orphan partial file(s) removed' if self.removed_partials else ''})"
            if self.resumed
            else ""
        )
        return "\n".join(
            [
                f"built {self.store}: {self.chunks_solved}/{self.chunks_total} chunk(s) solved{resumed}",
                f"wall time {self.wall_seconds:.1f} s, {self.channels_per_second:.1f} channels/s, "
                f"peak memory {format_bytes(self.peak_memory)}"
                + (
                    f" (largest process {format_bytes(self.peak_process_memory)})"
                    if self.peak_process_memory and self.peak_process_memory < self.peak_memory
                    else ""
                )
                + f", {self.executor}",
                failed,
            ]
        )


def _progress_mode(progress: bool | str | None) -> str:
    if progress is None:
        return "bar" if sys.stderr.isatty() else "log"
    if progress is True:
        return "bar" if sys.stderr.isatty() else "log"
    if progress is False:
        return "off"
    if progress in ("bar", "log", "summary", "off"):
        return str(progress)
    raise ValueError(
        "progress must be True, False, None, 'bar', 'log', 'summary' (plan and summary, no "
        f"progress lines) or 'off', got {progress!r}"
    )


def _echo(msg: str, mode: str) -> None:
    if mode != "off":
        print(msg, file=sys.stderr, flush=True)


class _RSSSource:
    """The RSS as a Zarr path every task can read: the given path, or a temporary copy of an
    in-memory Dataset (removed when the build ends)."""

    def __init__(self, rss: xr.Dataset | str | os.PathLike):
        self._tmp: str | None = None
        if isinstance(rss, xr.Dataset):
            self._tmp = tempfile.mkdtemp(prefix="crrxr-rss-")
            self.path = os.path.join(self._tmp, "rss.zarr")
            rss.drop_encoding().to_zarr(self.path, mode="w", consolidated=False)
        else:
            self.path = os.fspath(rss)
            if not os.path.exists(self.path):
                raise FileNotFoundError(f"RSS store {self.path} does not exist")
        self.dataset = settings.open_rss(self.path)

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


def prepare(
    rss: xr.Dataset | str | os.PathLike,
    params=None,
    *,
    method: str | None = None,
    profile: str | None = None,
    config: str | os.PathLike | None = None,
    overrides: list[str] | dict | None = None,
    scheduler: str = "threads",
    workers: int | None = None,
    max_memory: str | int | None = None,
    wave_chunk: int | None = None,
    sky_subtract: bool = False,
    count_usable: bool = True,
):
    """Resolve parameters, grid and plan for an RSS Dataset (no store touched): ``(store, grid, plan)``."""
    pstore = settings.resolve_params(
        params,
        method=method,
        profile=profile,
        config=config,
        overrides=overrides,
        rss_attrs=rss.attrs,
    )
    if sky_subtract:
        pstore = pstore.replace({"sky.enabled": True})
    if pstore["sky.enabled"] and not any(v in rss.variables for v in ("sky_fiber", "sky")):
        raise ValueError(
            "sky subtraction needs a `sky_fiber` (spectrum) flag or a `sky` (exposure, "
            "wavelength) spectrum in the RSS; drop --sky-subtract / sky.enabled or add one"
        )
    grid = settings.make_grid(rss, pstore)
    n_workers = 1 if scheduler == "synchronous" else (workers or available_cores())
    if wave_chunk is None and max_memory is None:
        wave_chunk = int(pstore["engine.wave_chunk"]) or None
        if wave_chunk is not None and wave_chunk == settings.default_wave_chunk():
            # the untouched default: keep every worker busy on short cubes (>= 4 chunks each)
            n_chan = int(rss.sizes["wavelength"])
            wave_chunk = min(wave_chunk, max(1, -(-n_chan // (4 * n_workers))))
    usable = settings.count_usable(rss, pstore) if count_usable else None
    plan = make_plan(
        int(rss.sizes["wavelength"]),
        int(rss.sizes["spectrum"]),
        len(grid.x),
        len(grid.y),
        wave_chunk=wave_chunk,
        max_memory=max_memory,
        workers=n_workers,
        cores=available_cores(),
        n_usable=usable,
        output_dtype_bytes=np.dtype(pstore["output.dtype"]).itemsize,
        method=str(pstore["method"]),
        n_pairs=_n_pairs(grid, pstore),
        n_neighbours=_n_neighbours(int(rss.sizes["spectrum"]), grid, pstore),
    )
    pstore = pstore.replace({"engine.wave_chunk": plan.wave_chunk})
    return pstore, grid, plan


def _n_pairs(grid, pstore) -> int:
    """Number of stored correlation pairs (upper triangle within the maximum separation)."""
    return C.count_correlation_pairs(
        len(grid.x),
        len(grid.y),
        grid.pixel_scale,
        float(pstore["output.correlation_max_sep_arcsec"]),
    )


def _n_neighbours(n_samples: int, grid, pstore) -> int:
    """Sample-pixel pairs within the kernel's reach (upper bound: every pixel of the grid)."""
    cfg = settings.core_config(pstore)
    per_sample = np.pi * cfg.neighbour_radius**2 / grid.pixel_scale**2
    return int(n_samples * min(len(grid.x) * len(grid.y), np.ceil(per_sample)))


def estimate(rss, params=None, **kwargs) -> Plan:
    """The plan of a build without running it (what ``crrxr estimate`` prints)."""
    src = _RSSSource(rss)
    try:
        return prepare(src.dataset, params, **kwargs)[2]
    finally:
        src.close()


def _template(rss: xr.Dataset, pstore, grid, plan: Plan, identity: dict) -> tuple[xr.Dataset, dict]:
    bands = C.select_bands(
        rss["wavelength"].values,
        list(np.atleast_1d(pstore["output.correlation_wavelengths_angstrom"])),
        [b.strip() for b in str(pstore["output.correlation_bands"]).split(",") if b.strip()],
    )
    pairs = C.correlation_pairs(
        len(grid.x),
        len(grid.y),
        grid.pixel_scale,
        float(pstore["output.correlation_max_sep_arcsec"]),
    )
    attrs: dict[str, Any] = dict(settings.params_attrs(pstore))
    attrs[C.ATTR_VERSION] = crrxr.__version__
    attrs[C.ATTR_FINGERPRINT] = settings.params_fingerprint(pstore)
    attrs[C.ATTR_RSS_IDENTITY] = C.canonical_json(identity)
    ra, dec = rss.attrs.get("ifu_ra"), rss.attrs.get("ifu_dec")
    if ra is not None and dec is not None:
        attrs["ifu_ra"], attrs["ifu_dec"] = float(ra), float(dec)
    attrs[C.ATTR_WCS] = C.canonical_json(settings.wcs_header(grid, ra, dec))
    attrs[C.ATTR_HISTORY] = ""
    attrs["Conventions"] = "CF-1.10"
    return C.cube_template(
        rss["wavelength"].values,
        grid.x,
        grid.y,
        plan.wave_chunk,
        bands,
        pairs,
        attrs,
        dtype=str(pstore["output.dtype"]),
    )


def _check_resume(store: str, pstore, identity: dict) -> None:
    old = S.read_attrs(store)
    if C.ATTR_RSS_IDENTITY not in old or C.ATTR_FINGERPRINT not in old:
        raise ResumeError(
            f"{store} was not written by crrxr build (no RSS identity or parameter "
            "fingerprint); use --overwrite to start over"
        )
    old_id = json.loads(old[C.ATTR_RSS_IDENTITY])
    if old_id.get("sha256") != identity["sha256"]:
        diff = [k for k in identity if k != "sha256" and old_id.get(k) != identity[k]]
        raise ResumeError(
            f"cannot resume {store}: it was built from a different RSS "
            f"({', '.join(diff) or 'same shapes, different wavelengths/fibers/positions'}); "
            "use --overwrite to start over"
        )
    if old[C.ATTR_FINGERPRINT] != settings.params_fingerprint(pstore):
        keys = settings.params_diff(old, settings.params_attrs(pstore))
        raise ResumeError(
            f"cannot resume {store}: parameters differ from the stored build in "
            f"{', '.join(keys) or '(the parameter spec)'}; rerun with the stored values or use "
            "--overwrite to start over"
        )


def run_build(
    rss: xr.Dataset | str | os.PathLike,
    store: str | os.PathLike,
    params=None,
    *,
    scheduler: str = "threads",
    workers: int | None = None,
    max_memory: str | int | None = None,
    wave_chunk: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | str | None = None,
    method: str | None = None,
    profile: str | None = None,
    config: str | os.PathLike | None = None,
    overrides: list[str] | dict | None = None,
    sky_subtract: bool = False,
    executor: Executor | None = None,
) -> BuildReport:
    """Build (or resume) the cube at ``store``; returns a :class:`BuildReport`. See :func:`build_cube`."""
    if resume and overwrite:
        raise ValueError("give either resume or overwrite, not both")
    mode = _progress_mode(progress)
    store = os.fspath(store)
    t0 = time.perf_counter()
    src = _RSSSource(rss)
    try:
        rds = src.dataset
        exists = S.store_exists(store)
        if resume and exists and wave_chunk is None:
            stored = S.read_attrs(store)
            try:  # the chunk layout is the stored one unless the user asks for another
                wave_chunk = int(json.loads(stored[C.ATTR_PARAMS])["values"]["engine.wave_chunk"])
            except (KeyError, ValueError, TypeError):
                pass
        pstore, grid, plan = prepare(
            rds,
            params,
            method=method,
            profile=profile,
            config=config,
            overrides=overrides,
            scheduler=scheduler,
            workers=workers,
            max_memory=max_memory,
            wave_chunk=wave_chunk,
            sky_subtract=sky_subtract,
        )
        identity = S.rss_identity(rds)
        ex = executor or make_executor(
            scheduler, plan.workers, memory_limit=plan.budget_bytes, task_memory=plan.task_bytes
        )
        _echo(
            f"crrxr build: {src.path if not isinstance(rss, xr.Dataset) else 'RSS Dataset'} -> "
            f"{store} ({pstore['method']})\n{plan.describe()}\nexecutor:        {ex.describe()}",
            mode,
        )

        if not exists and S.store_has_content(store) and not overwrite:
            raise ResumeError(
                f"{store} exists but is not a cube store; use --overwrite to replace it"
            )
        if exists and not (resume or overwrite):
            raise ResumeError(
                f"{store} already exists; use --resume to finish it or --overwrite to start over"
            )
        with StoreLock(store) as lock:
            if lock.took_over:
                log.warning(
                    "took over a stale lock of pid %s on %s (started %s)",
                    lock.took_over.get("pid"),
                    lock.took_over.get("host"),
                    lock.took_over.get("acquired"),
                )
            removed: list[str] = []
            resumed = False
            if exists and resume:
                try:
                    _check_resume(store, pstore, identity)
                    S.read_ledger(store)
                except (KeyError, FileNotFoundError, zarr.errors.BaseZarrError) as exc:
                    raise ResumeError(
                        f"{store} is not a complete cube template ({exc}); use "
                        "--overwrite to start over"
                    ) from exc
                removed = S.remove_partials(store)
                S.drop_consolidated(store)
                resumed = True
            else:
                if overwrite:
                    S.clear_store(store)
                template, encoding = _template(rds, pstore, grid, plan, identity)
                with S.lock_file_tolerated():
                    template.to_zarr(
                        store,
                        mode="a",
                        compute=False,
                        consolidated=False,
                        zarr_format=3,
                        encoding=encoding,
                    )
            ledger = S.read_ledger(store)
            if len(ledger) != plan.n_chunks:
                raise ResumeError(
                    f"{store} has {len(ledger)} ledger entries but the plan has "
                    f"{plan.n_chunks} chunks; use --overwrite to start over"
                )
            tasks = make_tasks(
                src.path,
                store,
                pstore,
                grid,
                plan,
                rds,
                todo=[k for k in range(plan.n_chunks) if not ledger[k]],
            )
            if resumed:
                _echo(
                    f"crrxr build: resuming, {plan.n_chunks - len(tasks)}/{plan.n_chunks} chunk(s) "
                    f"already done"
                    + (f", removed {len(removed)} orphan partial file(s)" if removed else ""),
                    mode,
                )
            graph = [
                dask.delayed(solve_chunk, pure=True)(t, dask_key_name=f"solve_chunk-{t.index}")
                for t in tasks
            ]
            results: list[ChunkResult] = []
            with PeakMemory() as peak:
                if graph:  # nothing to start (no cluster) when every chunk is already done
                    with ex:
                        t_solve = time.perf_counter()
                        results = ex.compute(graph, progress="off" if mode == "summary" else mode)
                        solve_seconds = time.perf_counter() - t_solve
                else:
                    solve_seconds = 0.0
            failed = S.read_failed_channels(store)
            messages = [m for r in results for m in r.messages]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            old_history = S.read_attrs(store).get(C.ATTR_HISTORY, "")
            line = (
                f"{stamp} crrxr {crrxr.__version__} build method={pstore['method']} "
                f"chunks={len(tasks)}/{plan.n_chunks}{' resumed' if resumed else ''} "
                f"executor={ex.name}"
            )
            S.update_attrs(
                store,
                {
                    C.ATTR_FAILED: json.dumps(failed),
                    C.ATTR_HISTORY: (old_history + "\n" + line).strip(),
                },
            )
            S.consolidate(store)
        report = BuildReport(
            store=store,
            plan=plan,
            executor=ex.describe(),
            chunks_total=plan.n_chunks,
            chunks_solved=len(tasks),
            chunks_skipped=plan.n_chunks - len(tasks),
            channels_solved=sum(r.n_channels for r in results),
            solve_seconds=solve_seconds,
            wall_seconds=time.perf_counter() - t0,
            peak_memory=peak.peak,
            peak_process_memory=peak.peak_process,
            failed_channels=failed,
            failure_messages=messages,
            resumed=resumed,
            removed_partials=removed,
        )
        _echo(report.summary(), mode)
        return report
    finally:
        src.close()


def make_tasks(
    rss_path: str, store: str, pstore, grid, plan: Plan, rss: xr.Dataset, todo: list[int]
) -> list[ChunkTask]:
    """One :class:`ChunkTask` per chunk index in ``todo`` (sky subtraction when ``sky.enabled``)."""
    sky_method = str(pstore["sky.method"]) if bool(pstore["sky.enabled"]) else None
    band_index = [int(i) for i in zarr.open_array(store, path=C.BAND_INDEX, mode="r")[:]]
    cfg = settings.core_config(pstore)
    slices = plan.chunk_slices()
    tasks = []
    for k in todo:
        sl = slices[k]
        bands = tuple((b, ch) for b, ch in enumerate(band_index) if sl.start <= ch < sl.stop)
        tasks.append(
            ChunkTask(
                index=k,
                start=sl.start,
                stop=sl.stop,
                rss_path=os.path.abspath(rss_path),
                store_path=os.path.abspath(store),
                pixel_scale=float(grid.pixel_scale),
                nside=len(grid.x),
                config=cfg,
                lambda_ref=float(pstore["seeing.lambda_ref_angstrom"]),
                seeing_exponent=float(pstore["seeing.exponent"]),
                out_dtype=str(pstore["output.dtype"]),
                bands=bands,
                max_sep=float(pstore["output.correlation_max_sep_arcsec"]),
                blas_threads=plan.blas_threads,
                sky_method=sky_method,
            )
        )
    return tasks


def build_cube(
    rss: xr.Dataset | str | os.PathLike,
    store: str | os.PathLike,
    params=None,
    scheduler: str = "threads",
    workers: int | None = None,
    max_memory: str | int | None = None,
    wave_chunk: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | str | None = None,
    method: str | None = None,
    profile: str | None = None,
    sky_subtract: bool = False,
    **kwargs: Any,
) -> xr.Dataset:
    """Reconstruct a cube from an RSS into the Zarr store ``store`` and return a lazy view of it.

    ``rss``: an RSS Zarr path (read lazily by every task) or an RSS Dataset (copied to a temporary
    Zarr for the run). ``params``: a ``ParameterStore``, or a mapping of overrides (``{"method":
    "shepard"}``) applied over ``profile`` (e.g. ``"manga-127"``) and the defaults. ``scheduler``:
    ``synchronous``, ``threads`` (default), ``processes``, ``distributed`` (a LocalCluster with a
    per-worker memory limit of ``max_memory``) or a scheduler address. ``max_memory`` (per worker,
    e.g. ``"2GB"``) or ``wave_chunk`` (channels per task) set the chunking. ``resume`` finishes an
    interrupted build of the same RSS and parameters; ``overwrite`` starts over. ``progress``: None
    (a bar on a terminal, log lines otherwise), True, False. Returns ``xr.open_zarr(store)``.
    """
    run_build(
        rss,
        store,
        params,
        scheduler=scheduler,
        workers=workers,
        max_memory=max_memory,
        wave_chunk=wave_chunk,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        method=method,
        profile=profile,
        sky_subtract=sky_subtract,
        **kwargs,
    )
    return xr.open_zarr(os.fspath(store))


__all__ = ["build_cube", "run_build", "estimate", "prepare", "BuildReport", "ResumeError"]
