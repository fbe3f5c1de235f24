"""IFU geometry: hexagonal fiber bundles, lenslet arrays and dither patterns (arcsec; +x West, +y North)."""

from __future__ import annotations

import numpy as np

MANGA_BUNDLE_SIZES = (7, 19, 37, 61, 91, 127)
MANGA_FIBER_PITCH = 2.5  # arcsec, centre to centre
MANGA_DITHER_SIDE = 1.44  # arcsec, side of the 3-point dither triangle (pitch / sqrt(3))


def lenslet_radius(pitch: float) -> float:
    """Radius (arcsec) of the circular top hat with the area of a hexagonal lenslet cell of ``pitch``.

    A hexagonal cell of centre-to-centre pitch p has area (sqrt(3)/2) p^2; the equal-area circle has
    r = p sqrt(sqrt(3) / (2 pi)) = 0.525 p, so fiber fluxes of a contiguous array sum to the total flux.
    """
    return float(pitch * np.sqrt(np.sqrt(3.0) / (2.0 * np.pi)))


def n_rings_for(n_fibers: int) -> int:
    """Number of rings n of a hexagonal bundle with N = 3 n (n + 1) + 1 fibers."""
    n = int(round((-3 + np.sqrt(9 + 12 * (n_fibers - 1))) / 6))
    if n < 0 or 3 * n * (n + 1) + 1 != n_fibers:
        raise ValueError(
            f"{n_fibers} fibers do not form a hexagonal bundle; use 3n(n+1)+1, e.g. {MANGA_BUNDLE_SIZES}"
        )
    return n


def hex_positions(n_rings: int, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) of a filled hexagon of ``n_rings`` rings around a central element, shape (N,).

    Ordered ring by ring from the centre; rows of the hexagon run along x.
    """
    q, r = np.meshgrid(
        np.arange(-n_rings, n_rings + 1), np.arange(-n_rings, n_rings + 1), indexing="ij"
    )
    q, r = q.ravel(), r.ravel()
    keep = np.abs(q + r) <= n_rings
    q, r = q[keep], r[keep]
    x = pitch * (q + 0.5 * r)
    y = pitch * (np.sqrt(3.0) / 2.0) * r
    ring = np.maximum(np.maximum(np.abs(q), np.abs(r)), np.abs(q + r))
    order = np.lexsort((np.arctan2(y, x), ring))
    return x[order], y[order]


def hex_bundle(n_fibers: int, pitch: float = MANGA_FIBER_PITCH) -> tuple[np.ndarray, np.ndarray]:
    """Fiber centres (x, y) in arcsec of a MaNGA-like hexagonal bundle of ``n_fibers``."""
    return hex_positions(n_rings_for(n_fibers), pitch)


def dither_offsets(
    n_exposures: int,
    side: float = MANGA_DITHER_SIDE,
    jitter: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (dx, dy) in arcsec of ``n_exposures``: the 3-point triangle repeated, plus jitter.

    As MaNGA's: the triangle's sides run at 30, 90 and 150 degrees to the fiber rows (+x), so each
    vertex sits at a hole of the fiber lattice seen from the others, and with ``side`` = pitch /
    sqrt(3) the three exposures together form one hexagonal lattice of spacing ``side`` (largest gap
    to a sample centre side / sqrt(3) = 0.83" for MaNGA). The vertices lie at distance side/sqrt(3)
    from the centroid (so the centroid of a full set is 0), at 0, 120 and 240 degrees; ``jitter`` is
    the rms of an isotropic Gaussian offset added to every exposure.
    """
    if n_exposures < 1:
        raise ValueError(f"need at least one exposure, got {n_exposures}")
    angles = np.deg2rad([0.0, 120.0, 240.0])  # sides at 30/90/150 deg to the rows
    rho = side / np.sqrt(3.0)
    k = np.arange(n_exposures) % 3
    dx, dy = rho * np.cos(angles[k]), rho * np.sin(angles[k])
    if n_exposures == 1:
        dx, dy = np.zeros(1), np.zeros(1)
    if jitter > 0:
        rng = rng if rng is not None else np.random.default_rng()
        dx = dx + rng.normal(0.0, jitter, n_exposures)
        dy = dy + rng.normal(0.0, jitter, n_exposures)
    return dx, dy


def lenslet_array(n_lenslets: int, pitch: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) in arcsec of a contiguous hexagonal lenslet array of ``n_lenslets`` elements.

    The first ``n_lenslets`` positions of a large filled hexagon, taken ring by ring from the centre
    (a full hexagon when ``n_lenslets`` = 3n(n+1)+1, otherwise one partial outer ring).
    """
    if n_lenslets < 1:
        raise ValueError(f"need at least one lenslet, got {n_lenslets}")
    if not (np.isfinite(pitch) and pitch > 0):
        raise ValueError(f"lenslet pitch must be a positive number of arcsec, got {pitch!r}")
    n_rings = 0
    while 3 * n_rings * (n_rings + 1) + 1 < n_lenslets:
        n_rings += 1
    x, y = hex_positions(n_rings, pitch)
    return x[:n_lenslets], y[:n_lenslets]
