"""Engine side of weight reuse (:mod:`crrxr.core.reuse`): which channels a chunk task reads and the
block solve it calls when ``crr.reuse_tolerance`` > 0.

A chunk reads the whole reuse blocks its channels fall in (global channel grid, plus each block's
closing node), so its output does not depend on where chunk boundaries fall.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from crrxr.core import reconstruct_block
from crrxr.core.block import BlockResult
from crrxr.core.config import CoreConfig
from crrxr.core.grid import Grid
from crrxr.core.kernel import seeing_at
from crrxr.core.reuse import (
    CACHE_BYTES,
    COND_MAX,
    condition_limit,
    needed_radius,
    read_range,
    reconstruct_block_reuse,
)
from crrxr.io.rss import open_zarr_unchecked

#: Reuse blocks per chunk when ``engine.wave_chunk`` is left at its default: blocks in one chunk
#: take over each other's shared closing solve (one exact solve per block boundary saved;
#: :mod:`crrxr.core.reuse`), which a chunk of one block cannot.
CHUNK_BLOCKS = 4


def reuse_enabled(config: CoreConfig) -> bool:
    """Weights are reused for CRR with a positive ``reuse_tolerance``."""
    return config.method == "crr" and config.reuse_tolerance > 0


def cut_limits(
    config: CoreConfig, rss: xr.Dataset, lambda_ref: float, exponent: float
) -> tuple[float, float]:
    """(need, limit) at the RSS's largest seeing: the kernel truncation radius (arcsec) beyond which
    the cut never limits weight reuse (:func:`crrxr.core.reuse.needed_radius`), and the largest
    condition number around which W is interpolated at the config's cut
    (:func:`crrxr.core.reuse.condition_limit`); (0, COND_MAX) when the RSS has no valid seeing."""
    fwhm = np.asarray(rss["seeing_fwhm"].values, dtype=float)
    wave = np.asarray(rss["wavelength"].values, dtype=float)
    ok = np.isfinite(fwhm) & (fwhm > 0)
    if not ok.any() or not wave.size:
        return 0.0, COND_MAX
    largest = float(np.max(seeing_at(fwhm[ok].max(), wave[[0, -1]], lambda_ref, exponent)))
    return needed_radius(config, largest), condition_limit(config, np.array([largest]))


def chunk_read_range(
    config: CoreConfig, rss_path: str, start: int, stop: int
) -> tuple[int, int, int]:
    """(lo, hi, n_chan): channels ``[lo, hi)`` a chunk of outputs ``[start, stop)`` reads, and the
    RSS's channel count (0 when reuse is off: not needed)."""
    if not reuse_enabled(config):
        return start, stop, 0
    n_chan = int(open_zarr_unchecked(rss_path).sizes["wavelength"])
    lo, hi = read_range(start, stop, n_chan)
    return lo, hi, n_chan


def solve_block(
    config: CoreConfig,
    grid: Grid,
    arrays: tuple[np.ndarray, ...],
    read: tuple[int, int],
    out: tuple[int, int],
    n_chan: int,
    correlation_pairs=None,
    want: tuple[int, ...] = (),
    lsf: dict[str, np.ndarray] | None = None,
    cache_bytes: int | None = None,
) -> tuple[BlockResult, np.ndarray, np.ndarray]:
    """(result, exact (n,) bool, bound (n,) float) of outputs ``out`` from ``arrays`` = (xpos, ypos,
    fwhm, flux, ivar, mask) covering channels ``read``; exact solves when reuse is off. ``lsf``:
    sample LSF arrays pushed through the weights applied to each channel. ``cache_bytes``: the
    reuse cache's bound (None: the core's default, :data:`crrxr.core.reuse.CACHE_BYTES`)."""
    n = out[1] - out[0]
    if not reuse_enabled(config):
        res = reconstruct_block(
            *arrays, grid, config, correlation_pairs=correlation_pairs, want=want, lsf=lsf
        )
        return res, np.ones(n, dtype=bool), np.zeros(n)
    rr = reconstruct_block_reuse(
        *arrays,
        grid,
        config,
        first=read[0],
        out=out,
        n_chan=n_chan,
        tolerance=config.reuse_tolerance,
        correlation_pairs=correlation_pairs,
        want=want,
        lsf=lsf,
        cache_bytes=CACHE_BYTES if cache_bytes is None else cache_bytes,
    )
    return rr.block, rr.exact, rr.bound
