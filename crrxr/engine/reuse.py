"""Engine side of weight reuse (:mod:`crrxr.core.reuse`): which channels a chunk task reads and the
block solve it calls when ``crr.reuse_tolerance`` > 0.

A chunk reads the whole reuse blocks its channels fall in (global channel grid, plus each block's
closing node), so its output does not depend on where chunk boundaries fall.
"""

from __future__ import annotations

import numpy as np

from crrxr.core import reconstruct_block
from crrxr.core.block import BlockResult
from crrxr.core.config import CoreConfig
from crrxr.core.grid import Grid
from crrxr.core.reuse import read_range, reconstruct_block_reuse
from crrxr.io.rss import open_zarr_unchecked


def reuse_enabled(config: CoreConfig) -> bool:
    """Weights are reused for CRR with a positive ``reuse_tolerance``."""
    return config.method == "crr" and config.reuse_tolerance > 0


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
) -> tuple[BlockResult, np.ndarray, np.ndarray]:
    """(result, exact (n,) bool, bound (n,) float) of outputs ``out`` from ``arrays`` = (xpos, ypos,
    fwhm, flux, ivar, mask) covering channels ``read``; exact solves when reuse is off."""
    n = out[1] - out[0]
    if not reuse_enabled(config):
        res = reconstruct_block(
            *arrays, grid, config, correlation_pairs=correlation_pairs, want=want
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
    )
    return rr.block, rr.exact, rr.bound
