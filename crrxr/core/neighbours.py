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


class NeighbourCache:
    """``neighbour_pairs`` for positions that drift slowly (differential refraction across channels).

    Candidate pairs are found once with ``radius + pad`` around anchor positions; while every sample
    stays within ``pad`` arcsec of its anchor (and the set of finite positions is unchanged), a call
    only recomputes the distances of the candidates and keeps those within ``radius``. The result is
    identical to ``neighbour_pairs`` (same pairs, order and distances, bit for bit): a pixel within
    ``radius`` of the new position lies within ``radius + pad`` of the anchor.
    """

    def __init__(self, grid: Grid, radius: float, pad: float = 0.1) -> None:
        if not (np.isfinite(pad) and pad >= 0):
            raise ValueError(f"pad must be a finite non-negative number of arcsec, got {pad!r}")
        self.grid = grid
        self.radius = float(radius)
        self.pad = float(pad)
        self._anchor: tuple[np.ndarray, ...] | None = None
        self.searches = 0  # fresh candidate searches so far

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sample, flat pixel, distance) of the pairs within ``radius``, as ``neighbour_pairs``."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        finite = np.isfinite(x) & np.isfinite(y)
        a = self._anchor
        if (
            a is None
            or not np.array_equal(a[2], finite)
            or np.any(np.hypot(x[finite] - a[0][finite], y[finite] - a[1][finite]) > self.pad)
        ):
            s, p, _ = neighbour_pairs(x, y, self.grid, self.radius + self.pad)
            self.searches += 1
            n, scale = self.grid.nside, self.grid.pixel_scale
            c = (n - 1) / 2.0
            # pixel centres exactly as neighbour_pairs computes them: (index - c) * scale
            px = (p % n - c) * scale
            py = (p // n - c) * scale
            a = self._anchor = (x.copy(), y.copy(), finite, s, p, px, py)
        s, p, px, py = a[3:]
        dx = x[s] - px
        dy = y[s] - py
        d2 = dx * dx + dy * dy
        keep = d2 <= self.radius * self.radius
        return s[keep], p[keep], np.sqrt(d2[keep])
