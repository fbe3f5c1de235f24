"""Sample-pixel neighbour pairs on the regular output grid (no tree needed: the grid is regular)."""

from __future__ import annotations

import numpy as np

from crrxr.core.grid import Grid


def neighbour_pairs(
    x: np.ndarray, y: np.ndarray, grid: Grid, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (sample, pixel) pairs closer than or at ``radius`` arcsec.

    ``x``, ``y``: sample positions (n_samples,), arcsec; samples with non-finite positions get no
    pairs. Returns (sample index, flat pixel index ``iy * nx + ix``, distance in arcsec), sorted by
    sample then pixel. Candidates come from a square pixel window around each sample, so the cost is
    n_samples x (2 radius / pixel_scale)^2, independent of the grid size.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    p = grid.pixel_scale
    n = grid.nside
    c = (n - 1) / 2.0
    ok = np.isfinite(x) & np.isfinite(y)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0)
    w = int(np.ceil(radius / p)) + 1
    oy, ox = np.meshgrid(np.arange(-w, w + 1), np.arange(-w, w + 1), indexing="ij")
    keep = np.hypot(np.maximum(np.abs(ox) - 1, 0), np.maximum(np.abs(oy) - 1, 0)) * p <= radius
    ox, oy = ox[keep], oy[keep]
    # Nearest pixel to each sample (clipped far outside the grid so the window arithmetic stays small).
    fx = np.clip(x[idx] / p + c, -w - 1, n + w)
    fy = np.clip(y[idx] / p + c, -w - 1, n + w)
    ix = np.rint(fx).astype(np.intp)[:, None] + ox[None, :]
    iy = np.rint(fy).astype(np.intp)[:, None] + oy[None, :]
    dx = x[idx][:, None] - (ix - c) * p
    dy = y[idx][:, None] - (iy - c) * p
    d2 = dx * dx + dy * dy
    inside = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n) & (d2 <= radius * radius)
    rows, cols = np.nonzero(inside)
    sample = idx[rows]
    pix = iy[rows, cols] * n + ix[rows, cols]
    dist = np.sqrt(d2[rows, cols])
    # np.nonzero is row-major and the window runs over (oy, ox): already sorted by sample, then pixel.
    return sample, pix, dist
