"""The simulator's dither pattern is MaNGA's: vertices at the holes of the fiber lattice (issue #9)."""

import numpy as np
from scipy.spatial import cKDTree

from crrxr.simulate.geometry import MANGA_DITHER_SIDE, MANGA_FIBER_PITCH, dither_offsets, hex_bundle


def test_three_exposures_form_one_hexagonal_lattice_of_1p44_arcsec():
    fx, fy = hex_bundle(127)
    dx, dy = dither_offsets(3)
    x = (fx[None] + dx[:, None]).ravel()
    y = (fy[None] + dy[:, None]).ravel()
    side = MANGA_FIBER_PITCH / np.sqrt(3)
    # triangle sides at 30 / 90 / 150 degrees to the fiber rows (+x)
    angles = sorted(
        np.rad2deg(np.arctan2(dy[b] - dy[a], dx[b] - dx[a])) % 180
        for a, b in ((0, 1), (1, 2), (2, 0))
    )
    np.testing.assert_allclose(angles, [30.0, 90.0, 150.0], atol=1e-9)
    tree = cKDTree(np.column_stack([x, y]))
    # every sample's nearest neighbour is 1.443" away: one lattice, no coincident or close pairs
    d, _ = tree.query(np.column_stack([x, y]), k=2)
    np.testing.assert_allclose(d[:, 1], side, rtol=3e-3)  # the side is 1.44, pitch/sqrt(3) rounded
    assert side == MANGA_DITHER_SIDE or abs(side - MANGA_DITHER_SIDE) < 0.004
    # largest gap inside the bundle: side / sqrt(3) = 0.833" (rows-aligned dithers leave 1.24")
    g = np.linspace(-8, 8, 321)
    gx, gy = (a.ravel() for a in np.meshgrid(g, g))
    gap, _ = tree.query(np.column_stack([gx, gy]))
    assert abs(gap.max() - side / np.sqrt(3)) < 0.01
