"""``build_cube``: plan, lay out the store, run the chunk tasks under an executor, resume, finish.

The driver never holds the cube: each task writes its own regions and ledger mark
(:mod:`crrxr.engine.chunk`); the driver writes the template, schedules the missing chunks and, at the
end, records the failed channels and history and consolidates the metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr
from dask.utils import format_bytes
from scipy.spatial import cKDTree

import crrxr
from crrxr.core.reuse import BLOCK as REUSE_BLOCK
from crrxr.core.reuse import COND_MAX
from crrxr.engine import settings
from crrxr.engine import store as S
from crrxr.engine.chunk import ChunkResult, ChunkTask, solve_chunk
from crrxr.engine.integrity import add_checksum_array, bad_chunks, unmark_chunks
from crrxr.engine.lock import StoreLock
from crrxr.engine.memory import PeakMemory, worker_metrics
from crrxr.engine.plan import Plan, keeps_factor, make_plan
from crrxr.engine.reuse import CHUNK_BLOCKS as REUSE_CHUNK_BLOCKS
from crrxr.engine.reuse import cut_limits, reuse_enabled
from crrxr.executors import Executor, available_cores, make_executor
from crrxr.executors.base import GRACE_SECONDS, Interrupted
from crrxr.io import cube as C
from crrxr.io.atomic import atomic_output
from crrxr.params import ParameterStore
from crrxr.params.codec import PARAMS_ATTR
from crrxr.params.reconstruction import with_added_keys

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
    rechecked_chunks: list[int] = field(
        default_factory=list
    )  # done chunks recomputed (bad checksum)
    worker_peak_memory: int = 0  # bytes, the largest peak resident memory of a worker process
    worker_blas_threads: int = 0  # BLAS threads in effect inside the tasks (max over tasks)
    # weight reuse (crr.reuse_tolerance > 0): (tolerance sigma, kernel cut arcsec, interpolated
    # channels, channels, largest bound sigma, the cut beyond which the kernel cut never limits
    # reuse at the RSS's largest seeing (arcsec), the condition limit at this build's cut); None
    # when every channel is solved exactly by design
    reuse: tuple[float, float, int, int, float, float, float] | None = None

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
                *(
                    [
                        f"workers: peak memory {format_bytes(self.worker_peak_memory)} (largest "
                        f"worker process), {self.worker_blas_threads} BLAS thread(s) per task"
                    ]
                    if self.worker_peak_memory
                    else []
                ),
                *(
                    [f"recomputed {len(self.rechecked_chunks)} chunk(s) that failed verification"]
                    if self.rechecked_chunks
                    else []
                ),
                *([self._reuse_line()] if self.reuse else []),
                failed,
            ]
        )

    def _reuse_line(self) -> str:
        tol, cut, n_interp, n_chan, bound, need, limit = self.reuse
        line = (
            f"weight reuse (tolerance {tol:g} sigma): {n_interp}/{n_chan} channel(s) interpolated, "
            f"largest certified bound {bound:.2g} sigma"
        )
        if cut < need:
            fix = f"kernel.truncation_radius_arcsec={np.ceil(need * 10) / 10:g}"
            line += (
                f'; at a {cut:g}" kernel cut W is interpolated only where its condition number '
                f"stays below {limit:.2g} (sample-pixel pairs crossing the cut make W jitter from "
                f"channel to channel, the more the larger the condition); set {fix} to lift that "
                f"limit to {COND_MAX:.2g} (docs/benchmarks.md)"
            )
        elif n_interp == 0:
            line += (
                "; none met the bound (channels far apart in wavelength, a masked sample in "
                "every channel, or ill-conditioned weights: docs/benchmarks.md)"
            )
        return line


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
    core = settings.core_config(pstore)
    # with weight reuse a chunk solves every reuse block it touches: auto chunks stay whole blocks
    align = REUSE_BLOCK if reuse_enabled(core) else 1
    grid = settings.make_grid(rss, pstore)
    n_workers = 1 if scheduler == "synchronous" else (workers or available_cores())
    if wave_chunk is None and max_memory is None:
        wave_chunk = int(pstore["engine.wave_chunk"]) or None
        if wave_chunk is not None and wave_chunk == settings.default_wave_chunk():
            # the untouched default: reuse blocks share their boundary solves within a chunk;
            # keep every worker busy on short cubes (>= 4 chunks each)
            if align > 1:
                wave_chunk = max(wave_chunk, REUSE_CHUNK_BLOCKS * align)
            n_chan = int(rss.sizes["wavelength"])
            short = max(1, -(-n_chan // (4 * n_workers)))
            wave_chunk = min(wave_chunk, max(align, short // align * align))
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
        align=align,
        reuse=reuse_enabled(core),
        reuse_factor=keeps_factor(
            core.variant, int(rss.sizes["spectrum"]), _n_selected(rss, grid, core)
        ),
    )
    if plan.wave_chunk % align and plan.wave_chunk < plan.n_channels:
        log.warning(
            "wave chunk %d is not a multiple of the weight-reuse block (%d channels): each chunk "
            "solves the whole blocks it touches, so their node solves repeat; use a multiple of %d",
            plan.wave_chunk,
            align,
            align,
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


def _n_selected(rss: xr.Dataset, grid, core) -> int:
    """Pixels within ``select_radius`` of a sample at the first channel (what a CRR solve there
    selects, dead fibers aside)."""
    x = np.asarray(rss["xpos"].isel(wavelength=0).values, dtype=float).ravel()
    y = np.asarray(rss["ypos"].isel(wavelength=0).values, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    px, py = grid.centres()
    dist, _ = cKDTree(np.column_stack([x[ok], y[ok]])).query(np.column_stack([px, py]))
    return int(np.count_nonzero(dist <= core.select_radius))


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
    else:  # no sky position is invented
        attrs[C.ATTR_SKY_POSITION] = C.no_sky_position_note()
    attrs.update(C.carried_attrs(rss.attrs))
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
        lsf=[v for v in C.LSF_VARIABLES if v in rss.variables],
    )


class ResumeRefused(ResumeError):
    """Resume refused because parameters/RSS differ (a usage error, not a damaged store)."""


def _stored_params(store: str, attrs: dict) -> ParameterStore:
    """The build's own parameters from its attrs, with the fingerprint recomputed from the values
    as written (a tampered ``crrxr_params`` with an untouched fingerprint attr is refused); keys
    added to the spec since the store was written get the value its build used
    (:data:`crrxr.params.reconstruction.ADDED_KEYS`)."""
    try:
        _, stored = ParameterStore.from_attrs(attrs)
        written = json.loads(attrs[PARAMS_ATTR])["values"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ResumeError(
            f"cannot resume {store}: its stored parameters cannot be read ({exc}); use "
            "--overwrite to start over"
        ) from exc
    if settings.values_fingerprint(written) != attrs.get(C.ATTR_FINGERPRINT):
        raise ResumeError(
            f"cannot resume {store}: its stored parameters do not match their fingerprint "
            f"({C.ATTR_FINGERPRINT}); the attrs were edited or damaged; use --overwrite to start over"
        )
    return with_added_keys(stored)


def _resume_params(
    store: str,
    attrs: dict,
    rss_attrs: dict,
    *,
    params,
    method,
    profile,
    config,
    overrides,
    sky_subtract: bool,
    wave_chunk: int | None,
) -> ParameterStore:
    """Parameters of a resumed build: the store's own; anything given explicitly must agree with
    them (a differing value refuses, naming the key)."""
    stored = _stored_params(store, attrs)
    explicit_full = params is not None or method is not None or profile is not None or config
    if explicit_full:
        wanted = settings.resolve_params(
            params,
            method=method,
            profile=profile,
            config=config,
            overrides=overrides,
            rss_attrs=rss_attrs,
        )
    elif overrides:
        wanted = settings.resolve_params(stored, overrides=overrides)
    else:
        wanted = stored
    if sky_subtract:
        wanted = wanted.replace({"sky.enabled": True})
    wanted = wanted.replace(
        {"engine.wave_chunk": int(wave_chunk) if wave_chunk else int(stored["engine.wave_chunk"])}
    )
    if settings.params_fingerprint(wanted) != settings.params_fingerprint(stored):
        keys = settings.params_diff(attrs, settings.params_attrs(wanted))
        raise ResumeRefused(
            f"cannot resume {store}: parameters differ from the stored build in "
            f"{', '.join(keys) or '(the parameter spec)'}; drop them (--resume takes every "
            "parameter from the store) or use --overwrite to start over"
        )
    return stored


def _check_identity(store: str, attrs: dict, identity: dict) -> None:
    old_id = json.loads(attrs[C.ATTR_RSS_IDENTITY])
    if old_id.get("sha256") != identity["sha256"]:
        diff = [k for k in identity if k != "sha256" and old_id.get(k) != identity[k]]
        raise ResumeRefused(
            f"cannot resume {store}: it was built from a different RSS "
            f"({', '.join(diff) or 'same shapes, different data (flux/ivar/mask/positions)'}); "
            "use --overwrite to start over"
        )


def refuse_overlap(inputs: list[str], output: str, command: str = "build") -> None:
    """Refuse an output equal to, inside or containing one of the inputs."""
    from crrxr.io.atomic import refuse_overlap as _refuse

    _refuse(inputs, output, command)


@dataclass
class CubeBuild:
    """One prepared cube build (the plan object): the store is laid out (or checked for resume),
    its lease is held, and :attr:`tasks` lists the chunks still to solve.

    Life cycle: :func:`prepare_build` -> ``delayed()`` run on any executor (alone or with other
    builds' tasks, see :func:`run_chunks`) -> :meth:`finish` -> :meth:`close` (also a context
    manager). Nothing here starts or stops an executor.
    """

    store: str
    rss_path: str
    params: ParameterStore
    grid: Any
    plan: Plan
    tasks: list[ChunkTask]
    resumed: bool
    mode: str
    lease: StoreLock
    source: _RSSSource
    started: float
    removed_partials: list[str] = field(default_factory=list)
    rechecked: dict[int, str] = field(default_factory=dict)  # done chunks that failed verification
    finished: bool = False

    @property
    def token(self) -> str:
        """Short hash of the store's absolute path (task keys of different stores never clash)."""
        return hashlib.sha1(os.path.abspath(self.store).encode()).hexdigest()[:10]

    def delayed(self) -> list:
        """One dask Delayed per missing chunk (keys unique per store, so builds can share a graph)."""
        return [
            dask.delayed(solve_chunk, pure=True)(
                t, dask_key_name=f"solve_chunk-{self.token}-{t.index}"
            )
            for t in self.tasks
        ]

    def finish(
        self,
        results: list[ChunkResult],
        *,
        executor: str = "",
        solve_seconds: float = 0.0,
        peak: PeakMemory | None = None,
    ) -> BuildReport:
        """Check the ledger, record failed channels and history, consolidate; the report."""
        ledger = S.read_ledger(self.store)
        missing = [int(k) for k in np.flatnonzero(ledger == 0)]
        if missing:
            raise BuildIncomplete(
                f"{self.store}: {len(missing)} chunk(s) not done after the run ({missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}); rerun with --resume"
            )
        failed = S.read_failed_channels(self.store)
        messages = [m for r in results for m in r.messages]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        old_history = S.read_attrs(self.store).get(C.ATTR_HISTORY, "")
        line = (
            f"{stamp} crrxr {crrxr.__version__} build method={self.params['method']} "
            f"chunks={len(self.tasks)}/{self.plan.n_chunks}{' resumed' if self.resumed else ''} "
            f"executor={executor.split(' ')[0]}"
        )
        S.update_attrs(
            self.store,
            {
                C.ATTR_FAILED: json.dumps(failed),
                C.ATTR_HISTORY: (old_history + "\n" + line).strip(),
            },
        )
        S.consolidate(self.store)
        workers = worker_metrics(results)
        report = BuildReport(
            store=self.store,
            plan=self.plan,
            executor=executor,
            chunks_total=self.plan.n_chunks,
            chunks_solved=len(self.tasks),
            chunks_skipped=self.plan.n_chunks - len(self.tasks),
            channels_solved=sum(r.n_channels for r in results),
            solve_seconds=solve_seconds,
            wall_seconds=time.perf_counter() - self.started,
            peak_memory=peak.peak if peak else 0,
            peak_process_memory=peak.peak_process if peak else 0,
            failed_channels=failed,
            failure_messages=messages,
            resumed=self.resumed,
            removed_partials=self.removed_partials,
            rechecked_chunks=sorted(self.rechecked),
            worker_peak_memory=workers["peak_rss"],
            worker_blas_threads=workers["blas_threads"],
            reuse=self._reuse_summary(),
        )
        self.finished = True
        _echo(report.summary(), self.mode)
        return report

    def _reuse_summary(self) -> tuple[float, float, int, int, float, float, float] | None:
        tol = float(self.params["crr.reuse_tolerance"])
        if self.params["method"] != "crr" or tol <= 0:
            return None
        cut = float(self.params["kernel.truncation_radius_arcsec"])
        need, limit = cut_limits(
            settings.core_config(self.params),
            self.source.dataset,
            float(self.params["seeing.lambda_ref_angstrom"]),
            float(self.params["seeing.exponent"]),
        )
        return (tol, cut, *S.read_reuse_summary(self.store), need, limit)

    def close(self) -> None:
        """Release the lease and any temporary RSS copy (idempotent)."""
        self.lease.release()
        self.source.close()

    def __enter__(self) -> CubeBuild:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BuildIncomplete(RuntimeError):
    """Chunks are still missing after the run (their tasks failed or were interrupted)."""


def prepare_build(
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
    executor_name: str | None = None,
) -> CubeBuild:
    """Validate, plan, take the store's lease and lay out the template (atomically: written under a
    temporary name and renamed) or check the existing store for resume (parameters from its attrs,
    RSS identity, every done chunk's checksum). Returns a :class:`CubeBuild` holding the lease;
    the caller must ``close()`` it (or use ``with``). Starts no executor."""
    if resume and overwrite:
        raise ValueError("give either resume or overwrite, not both")
    mode = _progress_mode(progress)
    store = os.fspath(store)
    t0 = time.perf_counter()
    src = _RSSSource(rss)
    lease = None
    try:
        if not isinstance(rss, xr.Dataset):
            refuse_overlap([src.path], store, "build")
        rds = src.dataset
        lease = StoreLock(store).acquire()
        if lease.took_over:
            log.warning(
                "took over a stale lease of pid %s on %s (started %s)",
                lease.took_over.get("pid"),
                lease.took_over.get("host"),
                lease.took_over.get("acquired"),
            )
        S.remove_own_temporaries(store)
        state = S.output_state(store)
        if state == "foreign":
            raise ResumeRefused(
                f"{store} exists and is not a crrxr cube store; crrxr never replaces what it did "
                "not write: choose another output path (or move that one away yourself)"
            )
        if state in ("cube", "file") and not (resume or overwrite):
            raise ResumeRefused(
                f"{store} already exists; use --resume to finish it or --overwrite to start over"
            )
        if state == "file" and resume:
            raise ResumeRefused(f"{store} is a file, not a cube store; cannot --resume it")
        identity = S.rss_identity(rds, src.path)
        resumed = resume and state == "cube"
        if resume and not resumed:
            _echo(f"crrxr build: {store} does not exist yet: starting a new build", mode)
        if resumed:
            attrs = S.read_attrs(store)
            stored = _resume_params(
                store,
                attrs,
                dict(rds.attrs),
                params=params,
                method=method,
                profile=profile,
                config=config,
                overrides=overrides,
                sky_subtract=sky_subtract,
                wave_chunk=wave_chunk,
            )
            _check_identity(store, attrs, identity)
            pstore, grid, plan = prepare(
                rds,
                stored,
                scheduler=scheduler,
                workers=workers,
                wave_chunk=int(stored["engine.wave_chunk"]),
            )
        else:
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
        _echo(
            f"crrxr build: {src.path if not isinstance(rss, xr.Dataset) else 'RSS Dataset'} -> "
            f"{store} ({pstore['method']})\n{plan.describe()}"
            + (f"\nexecutor:        {executor_name}" if executor_name else ""),
            mode,
        )
        removed: list[str] = []
        rechecked: dict[int, str] = {}
        if resumed:
            try:
                ledger = S.read_ledger(store)
                S.chunk_arrays_present(store)
            except (KeyError, FileNotFoundError, zarr.errors.BaseZarrError) as exc:
                raise ResumeError(
                    f"{store} is not a complete cube store ({type(exc).__name__}: {exc}); use "
                    "--overwrite to start over"
                ) from exc
            if len(ledger) != plan.n_chunks:
                raise ResumeError(
                    f"{store} has {len(ledger)} ledger entries but the plan has "
                    f"{plan.n_chunks} chunks; use --overwrite to start over"
                )
            removed = S.remove_partials(store)
            S.drop_consolidated(store)
            rechecked = bad_chunks(store)
            if rechecked:
                for k, why in sorted(rechecked.items()):
                    log.warning(
                        "chunk %d of %s fails verification (%s): recomputing it", k, store, why
                    )
                _echo(
                    f"crrxr build: {len(rechecked)} done chunk(s) failed verification and will be "
                    f"recomputed: {sorted(rechecked)[:20]}",
                    mode,
                )
                unmark_chunks(store, list(rechecked))
        else:
            _write_template_atomically(store, rds, pstore, grid, plan, identity)
        ledger = S.read_ledger(store)
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
                "already done"
                + (f", removed {len(removed)} orphan partial file(s)" if removed else ""),
                mode,
            )
        return CubeBuild(
            store=store,
            rss_path=src.path,
            params=pstore,
            grid=grid,
            plan=plan,
            tasks=tasks,
            resumed=resumed,
            mode=mode,
            lease=lease,
            source=src,
            started=t0,
            removed_partials=removed,
            rechecked=rechecked,
        )
    except BaseException:
        if lease is not None:
            lease.release()
        src.close()
        raise


def _write_template_atomically(store: str, rds, pstore, grid, plan: Plan, identity: dict) -> None:
    """Write the template (with the checksum array) under a temporary sibling name, then rename it
    into place; an existing crrxr store or file at ``store`` is replaced only after that succeeds."""
    template, encoding = _template(rds, pstore, grid, plan, identity)
    with atomic_output(store, overwrite=True) as tmp:
        template.to_zarr(
            str(tmp),
            mode="w-",
            compute=False,
            consolidated=False,
            zarr_format=3,
            encoding=encoding,
        )
        add_checksum_array(str(tmp), plan.n_chunks)


class BuildInterrupted(RuntimeError):
    """The build stopped on request (a signal); finished chunks are kept, ``--resume`` continues."""


def _task_chunk(key: Any, builds: list[CubeBuild]) -> tuple[CubeBuild, int] | None:
    """The (build, chunk index) a task key ``solve_chunk-<token>-<k>`` belongs to."""
    name = key[0] if isinstance(key, tuple) else key
    parts = str(name).rsplit("-", 2)
    if len(parts) != 3:
        return None
    for b in builds:
        if b.token == parts[1]:
            return b, int(parts[2])
    return None


def _wait_for_running(
    running: list, builds: list[CubeBuild], grace: float, mode: str
) -> tuple[int, int]:
    """Wait up to ``grace`` seconds for the ledger marks of started chunks: (finished, abandoned)."""
    todo = [c for c in (_task_chunk(k, builds) for k in running) if c is not None]
    deadline = time.monotonic() + grace
    if todo:
        _echo(f"crrxr build: waiting up to {grace:.0f} s for {len(todo)} running chunk(s)", mode)
    while todo and time.monotonic() < deadline:
        todo = [(b, k) for b, k in todo if not S.read_ledger(b.store)[k]]
        if todo:
            time.sleep(0.2)
    n = len([k for k in running if _task_chunk(k, builds) is not None])
    return n - len(todo), len(todo)


def run_chunks(
    builds: list[CubeBuild],
    executor: Executor,
    progress: str = "off",
    stop: threading.Event | None = None,
    grace: float = GRACE_SECONDS,
) -> tuple[list[list[ChunkResult]], float, PeakMemory]:
    """Run the missing chunks of every build in ``builds`` on ONE executor (started here if it is
    not yet, never closed here). Returns (results per build, solve seconds, peak memory sampler).

    ``stop``: once set no further chunk starts; chunks already running get ``grace`` seconds to
    finish (their ledger marks), the rest are abandoned (unmarked, so ``--resume`` solves them),
    and :class:`BuildInterrupted` is raised."""
    graph, owner = [], []
    for i, b in enumerate(builds):
        for d in b.delayed():
            graph.append(d)
            owner.append(i)
    per_build: list[list[ChunkResult]] = [[] for _ in builds]
    with PeakMemory(pids=executor.worker_pids) as peak:
        t = time.perf_counter()
        if graph:
            executor.start()
            try:
                results = executor.compute(
                    graph, progress="off" if progress == "summary" else progress, stop=stop
                )
            except Interrupted as exc:
                done, abandoned = _wait_for_running(exc.running, builds, grace, progress)
                raise BuildInterrupted(
                    f"stopped on request: no new chunk started; {done} running chunk(s) finished"
                    + (f", {abandoned} abandoned (solved again on resume)" if abandoned else "")
                ) from None
            for i, r in zip(owner, results, strict=True):
                per_build[i].append(r)
        seconds = time.perf_counter() - t
    return per_build, seconds, peak


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
    stop: threading.Event | None = None,
) -> BuildReport:
    """Build (or resume) the cube at ``store``: :func:`prepare_build`, :func:`run_chunks`,
    :meth:`CubeBuild.finish`. An ``executor`` passed in belongs to the caller (started here if
    needed, never closed); without one, the executor for ``scheduler`` is made and closed here."""
    with prepare_build(
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
        config=config,
        overrides=overrides,
        sky_subtract=sky_subtract,
        executor_name=executor.describe() if executor is not None else None,
    ) as build:
        own = executor is None
        ex = executor or make_executor(
            scheduler,
            build.plan.workers,
            memory_limit=build.plan.budget_bytes,
            task_memory=build.plan.task_bytes,
        )
        if own:
            _echo(f"executor:        {ex.describe()}", build.mode)
        try:
            results, seconds, peak = run_chunks([build], ex, build.mode, stop=stop)
        finally:
            if own:
                ex.close()
        return build.finish(results[0], executor=ex.describe(), solve_seconds=seconds, peak=peak)


def run_batch(
    builds: list[CubeBuild],
    executor: Executor,
    progress: str = "off",
    stop: threading.Event | None = None,
) -> list[BuildReport]:
    """Run the chunks of several prepared builds on one executor, then finish each (the caller
    closes the builds and the executor)."""
    results, seconds, peak = run_chunks(builds, executor, progress, stop=stop)
    return [
        b.finish(r, executor=executor.describe(), solve_seconds=seconds, peak=peak)
        for b, r in zip(builds, results, strict=True)
    ]


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
                sky_method=sky_method,
                reuse_cache=plan.reuse_cache_bytes or 0,
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


__all__ = [
    "build_cube",
    "run_build",
    "run_batch",
    "run_chunks",
    "prepare_build",
    "CubeBuild",
    "estimate",
    "prepare",
    "BuildReport",
    "BuildIncomplete",
    "BuildInterrupted",
    "ResumeError",
    "ResumeRefused",
]
