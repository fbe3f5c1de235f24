"""The per-chunk task: read one wavelength slice of the RSS from its own Zarr, solve it with
:func:`crrxr.core.reconstruct_block`, write every output into its region of the cube store, and only
then mark the chunk done in the ledger.

A task carries only a small :class:`ChunkTask` (paths, slice, plain config): no arrays, no indexes, no
whole-RSS closures, so the task graph stays small and runs unchanged under every executor.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import xarray as xr
import zarr

from crrxr.core.config import CoreConfig
from crrxr.core.grid import Grid
from crrxr.core.kernel import seeing_at
from crrxr.engine.integrity import (
    InputChunkError,
    load_slice,
    mark_chunk_done,
    require_input_store,
)
from crrxr.engine.memory import blas_threads_in_effect, worker_peak_rss
from crrxr.engine.reuse import chunk_read_range, solve_block
from crrxr.io import cube as C
from crrxr.io.rss import open_zarr_unchecked
from crrxr.io.sky import SKY_VARIABLES, subtract_sky

log = logging.getLogger(__name__)

RSS_VARIABLES = ("flux", "ivar", "mask", "xpos", "ypos", "seeing_fwhm", "exposure_index")


@dataclass(frozen=True)
class ChunkTask:
    """Everything one wavelength chunk needs; small and picklable."""

    index: int  # chunk number k (ledger element)
    start: int  # first channel
    stop: int  # one past the last channel
    rss_path: str
    store_path: str
    pixel_scale: float  # arcsec
    nside: int
    config: CoreConfig
    lambda_ref: float  # Angstrom, seeing reference wavelength
    seeing_exponent: float
    out_dtype: str
    bands: tuple[tuple[int, int], ...]  # (band position, channel index) of bands in this chunk
    max_sep: float  # arcsec, correlation pairs
    sky_method: str | None = None  # None: no sky subtraction
    reuse_cache: int = 0  # bytes, weight reuse's cache per task (0: the core's default)


@dataclass(frozen=True)
class ChunkResult:
    index: int
    n_channels: int
    failed: tuple[int, ...]  # absolute channel indices whose solve failed
    messages: tuple[str, ...]
    seconds: float
    pid: int
    peak_rss: int = 0  # bytes, peak resident memory of the process that ran the task
    blas_threads: int = 0  # BLAS threads in effect during the solve


def read_rss_slice(path: str, start: int, stop: int, sky_method: str | None = None) -> xr.Dataset:
    """Channels ``start:stop`` of the RSS at ``path``, loaded (only that slice is read); with
    ``sky_method`` (``mean``/``median``) sky-subtracted first (a per-channel operation)."""
    require_input_store(path)  # moved away mid-build: say so (zarr would read NaN fill values)
    try:
        rss = open_zarr_unchecked(path)  # validated once by the driver; tasks read their slice
    except (OSError, ValueError):
        require_input_store(path)
        raise
    names = list(RSS_VARIABLES) + [v for v in C.LSF_VARIABLES if v in rss.variables]
    if sky_method:
        names += [v for v in SKY_VARIABLES if v in rss.variables]
    part = rss[names].isel(wavelength=slice(start, stop))
    if sky_method:
        part = subtract_sky(part, method=sky_method)
    return load_slice(part, path, start, stop)  # a missing/corrupt input chunk is an error


def sample_seeing(part: xr.Dataset, lambda_ref: float, exponent: float) -> np.ndarray:
    """Seeing FWHM (arcsec) of every sample and channel of an RSS slice, (n_spectrum, n_chan)."""
    exp_index = part["exposure_index"].values.astype(np.int64)
    return seeing_at(
        part["seeing_fwhm"].values[exp_index][:, None],
        part["wavelength"].values[None, :],
        lambda_ref,
        exponent,
    )


class ChunkFailed(RuntimeError):
    """A chunk task failed; the message names the chunk, its channels and the cause (the original
    exception is its ``__cause__`` where the executor keeps it)."""


def chunk_failure(task: ChunkTask, exc: Exception) -> ChunkFailed:
    """The :class:`ChunkFailed` for ``exc`` raised inside ``task``: one line, chunk and cause."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    ours = type(exc).__module__.startswith("crrxr")
    cause = text if ours else f"{type(exc).__name__}: {text}"
    first = cause.strip().splitlines()[0] if cause.strip() else type(exc).__name__
    return ChunkFailed(f"chunk {task.index} (channels {task.start}:{task.stop}) failed: {first}")


def solve_chunk(task: ChunkTask) -> ChunkResult:
    """Solve and write one chunk; idempotent (a rerun overwrites the same regions). Any error is
    raised as :class:`ChunkFailed` naming the chunk (the chunk stays unmarked: resume solves it)."""
    try:
        return _solve_chunk(task)
    except ChunkFailed:
        raise
    except Exception as exc:
        try:  # whatever zarr raised while the input went away, the cause is that it went away
            require_input_store(task.rss_path)
        except InputChunkError as gone:
            raise chunk_failure(task, gone) from exc
        raise chunk_failure(task, exc) from exc


def _solve_chunk(task: ChunkTask) -> ChunkResult:
    t0 = time.perf_counter()
    # BLAS threads are set once per worker process by the executor (crrxr.executors.blas)
    lo, hi, n_chan = chunk_read_range(task.config, task.rss_path, task.start, task.stop)
    part = read_rss_slice(task.rss_path, lo, hi, task.sky_method)
    fwhm = sample_seeing(part, task.lambda_ref, task.seeing_exponent)
    grid = Grid(task.pixel_scale, task.nside)
    pairs = None
    want: tuple[int, ...] = ()
    if task.bands:
        pairs = C.correlation_pairs(task.nside, task.nside, task.pixel_scale, task.max_sep)
        want = tuple(sorted({ch - task.start for _, ch in task.bands}))
    blas = blas_threads_in_effect()
    arrays = tuple(part[v].values for v in ("xpos", "ypos")) + (fwhm,)
    arrays += tuple(part[v].values for v in ("flux", "ivar", "mask"))
    res, exact, bound = solve_block(
        task.config,
        grid,
        arrays,
        (lo, hi),
        (task.start, task.stop),
        n_chan,
        correlation_pairs=pairs,
        want=want,
        lsf={v: part[v].values for v in C.LSF_VARIABLES if v in part},  # through the same W
        cache_bytes=task.reuse_cache or None,
    )
    C.write_lsf(task.store_path, slice(task.start, task.stop), res.lsf, task.out_dtype)
    write_chunk(task, res, exact, bound)
    failed = tuple(int(task.start + i) for i in np.flatnonzero(res.failed))
    messages = tuple(
        f"wavelength index {task.start + i}: {m}" for i, m in enumerate(res.messages) if m
    )
    seconds = time.perf_counter() - t0
    log.info(
        "solved chunk %d (channels %d:%d) in %.2f s", task.index, task.start, task.stop, seconds
    )
    return ChunkResult(
        task.index,
        task.stop - task.start,
        failed,
        messages,
        seconds,
        os.getpid(),
        peak_rss=worker_peak_rss(),
        blas_threads=blas,
    )


def write_chunk(task: ChunkTask, res, exact: np.ndarray, bound: np.ndarray) -> None:
    """Write flux/ivar/mask/channel_failed/channel_exact/reuse_bound and the chunk's band pieces,
    then the ledger mark."""
    group = zarr.open_group(task.store_path, mode="r+")
    region = slice(task.start, task.stop)
    dt = np.dtype(task.out_dtype)
    # core results are already per spaxel (flux factor applied in core; docs/contracts.md section 3)
    group[C.FLUX][region] = np.asarray(res.flux).astype(dt)
    group[C.IVAR][region] = np.asarray(res.ivar).astype(dt)
    group[C.MASK][region] = np.asarray(res.mask, dtype=np.uint32)
    group[C.CHANNEL_FAILED][region] = np.asarray(res.failed, dtype=np.uint8)
    group[C.CHANNEL_EXACT][region] = np.asarray(exact, dtype=np.uint8)
    group[C.REUSE_BOUND][region] = np.asarray(bound, dtype=np.float32)
    for band_pos, channel in task.bands:
        offset = channel - task.start
        if res.psf and offset in res.psf:
            group[C.PSF][band_pos] = np.asarray(res.psf[offset]).astype(dt)
        if res.rho and offset in res.rho:
            group[C.CORRELATION][band_pos] = np.asarray(res.rho[offset], dtype=np.float64)
    # last: checksum of what the store now holds, then the ledger mark (done only now)
    mark_chunk_done(group, task.index, task.start, task.stop, [b for b, _ in task.bands])
