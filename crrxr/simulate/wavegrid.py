"""MaNGA-like log-spaced wavelength grids."""

from __future__ import annotations

import numpy as np

MANGA_DLOG10 = 1e-4


def log_wavelength(
    nwave: int | None = None, wave_range: tuple[float, float] = (3622.0, 10354.0)
) -> np.ndarray:
    """Log-spaced channel centres (Angstrom) from ``wave_range[0]`` to ``wave_range[1]`` inclusive.

    ``nwave=None`` uses MaNGA's spacing Dlog10 = 1e-4 (4563 channels over 3622-10354 A); any other
    number of channels spreads them log-uniformly over the same range (a window: pass its range).
    """
    lo, hi = (float(v) for v in wave_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ValueError(
            f"wave_range must be two increasing positive wavelengths in Angstrom, got {wave_range!r}"
        )
    if nwave is None:
        nwave = int(round(np.log10(hi / lo) / MANGA_DLOG10)) + 1
    if nwave < 1:
        raise ValueError(f"nwave must be >= 1, got {nwave}")
    if nwave == 1:
        return np.array([np.sqrt(lo * hi)])
    return 10.0 ** np.linspace(np.log10(lo), np.log10(hi), nwave)


def channel_edges(wavelength: np.ndarray) -> np.ndarray:
    """Channel edges (n + 1,) halfway in log between centres; the outer edges mirror the inner ones."""
    w = np.log(np.asarray(wavelength, dtype=float))
    if w.size == 1:
        return np.exp(w[0] + np.array([-0.5, 0.5]) * MANGA_DLOG10 * np.log(10))
    mid = 0.5 * (w[1:] + w[:-1])
    return np.exp(np.concatenate([[2 * w[0] - mid[0]], mid, [2 * w[-1] - mid[-1]]]))
