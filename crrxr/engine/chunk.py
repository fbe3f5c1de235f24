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
    blas_threads: int
    sky_method: str | None = None  # None: no sky subtraction


@dataclass(frozen=True)
class ChunkResult:
    index: int
    n_channels: int
    failed: tuple[int, ...]  # absolute channel indices whose solve failed
    messages: tuple[str, ...]
    seconds: float
    pid: int


def read_rss_slice(path: str, start: int, stop: int, sky_method: str | None = None) -> xr.Dataset:
    """Channels ``start:stop`` of the RSS at ``path``, loaded (only that slice is read); with
    ``sky_method`` (``mean``/``median``) sky-subtracted first (a per-channel operation)."""
    rss = open_zarr_unchecked(path)  # validated once by the driver; tasks only read their slice
    names = list(RSS_VARIABLES)
    if sky_method:
        names += [v for v in SKY_VARIABLES if v in rss.variables]
    part = rss[names].isel(wavelength=slice(start, stop))
    if sky_method:
        part = subtract_sky(part, method=sky_method)
    return part.load()


def sample_seeing(part: xr.Dataset, lambda_ref: float, exponent: float) -> np.ndarray:
    """Seeing FWHM (arcsec) of every sample and channel of an RSS slice, (n_spectrum, n_chan)."""
    exp_index = part["exposure_index"].values.astype(np.int64)
    return seeing_at(
        part["seeing_fwhm"].values[exp_index][:, None],
        part["wavelength"].values[None, :],
        lambda_ref,
        exponent,
    )


def solve_chunk(task: ChunkTask) -> ChunkResult:
    """Solve and write one chunk; idempotent (a rerun overwrites the same regions)."""
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
    )
    write_chunk(task, res, exact, bound)
    failed = tuple(int(task.start + i) for i in np.flatnonzero(res.failed))
    messages = tuple(
        f"wavelength index {task.start + i}: {m}" for i, m in enumerate(res.messages) if m
    )
    seconds = time.perf_counter() - t0
    log.info(
        "solved chunk %d (channels %d:%d) in %.2f s", task.index, task.start, task.stop, seconds
    )
    return ChunkResult(task.index, task.stop - task.start, failed, messages, seconds, os.getpid())


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
    group[C.CHUNK_DONE][task.index] = 1  # last: the chunk counts as done only now
