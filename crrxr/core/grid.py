"""The output pixel grid: square, odd side, centred on the IFU centre (0, 0).

Pixel centres are in arcsec in the frame of the fiber positions (+x West, +y North). Images are
indexed ``[iy, ix]``; flat pixel index ``iy * nx + ix``. Column ``ix`` lies at ``x[ix]``, so x grows
to the West: in a FITS image RA decreases along axis 1, hence CD1_1 = -scale / 3600.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def odd_nside(extent: float, pixel_scale: float) -> int:
    """Odd number of pixels covering ``extent`` arcsec: (ceil(extent / p) // 2) * 2 + 1 (authors' code)."""
    return (math.ceil(extent / pixel_scale - 1e-9) // 2) * 2 + 1


@dataclass(frozen=True)
class Grid:
    """Square grid of ``nside`` x ``nside`` pixels of ``pixel_scale`` arcsec centred on (0, 0)."""

    pixel_scale: float
    nside: int

    def __post_init__(self) -> None:
        if not (
            isinstance(self.pixel_scale, (int, float, np.floating))
            and np.isfinite(self.pixel_scale)
            and self.pixel_scale > 0
        ):
            raise ValueError(
                f"pixel_scale must be a positive number of arcsec, got {self.pixel_scale!r}"
            )
        if (
            isinstance(self.nside, bool)
            or not isinstance(self.nside, (int, np.integer))
            or self.nside < 1
        ):
            raise ValueError(f"nside must be a positive integer, got {self.nside!r}")
        object.__setattr__(self, "pixel_scale", float(self.pixel_scale))
        object.__setattr__(self, "nside", int(self.nside))

    @classmethod
    def for_extent(cls, pixel_scale: float, extent: float) -> Grid:
        """Grid whose side covers at least ``extent`` arcsec (odd nside)."""
        if not (np.isfinite(extent) and extent > 0):
            raise ValueError(f"grid extent must be a positive number of arcsec, got {extent!r}")
        if not (np.isfinite(pixel_scale) and pixel_scale > 0):
            raise ValueError(
                f"pixel_scale must be a positive number of arcsec, got {pixel_scale!r}"
            )
        return cls(pixel_scale, odd_nside(extent, pixel_scale))

    @classmethod
    def covering(
        cls, xpos: np.ndarray, ypos: np.ndarray, pixel_scale: float, margin: float = 2.0
    ) -> Grid:
        """Grid centred on 0 covering every finite position plus ``margin`` arcsec on each side."""
        x = np.asarray(xpos, dtype=float).ravel()
        y = np.asarray(ypos, dtype=float).ravel()
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            raise ValueError("cannot size a grid: no finite fiber position given")
        if not (np.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be >= 0 arcsec, got {margin!r}")
        half = max(np.abs(x[ok]).max(), np.abs(y[ok]).max()) + margin
        return cls.for_extent(pixel_scale, 2.0 * max(half, 0.5 * pixel_scale))

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return (self.nside, self.nside)

    @property
    def size(self) -> int:
        return self.nside * self.nside

    @property
    def x(self) -> np.ndarray:
        """Pixel-centre x (arcsec), shape (nx,)."""
        return (np.arange(self.nside) - (self.nside - 1) / 2.0) * self.pixel_scale

    @property
    def y(self) -> np.ndarray:
        """Pixel-centre y (arcsec), shape (ny,)."""
        return self.x

    @property
    def extent(self) -> float:
        """Side of the grid (arcsec)."""
        return self.nside * self.pixel_scale

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Flattened pixel centres (x, y), each shape (ny * nx,), flat index iy * nx + ix."""
        yy, xx = np.meshgrid(self.y, self.x, indexing="ij")
        return xx.ravel(), yy.ravel()

    def wcs_header(self, ra: float, dec: float) -> dict[str, object]:
        """FITS celestial WCS keywords (TAN, CD matrix, 1-based CRPIX) for an IFU centre at (ra, dec) deg."""
        if not (np.isfinite(ra) and np.isfinite(dec) and -90.0 <= dec <= 90.0):
            raise ValueError(
                f"IFU centre must be finite degrees with |dec| <= 90, got ra={ra!r}, dec={dec!r}"
            )
        crpix = (self.nside + 1) / 2.0
        cd = self.pixel_scale / 3600.0
        return {
            "WCSAXES": 2,
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CUNIT1": "deg",
            "CUNIT2": "deg",
            "CRPIX1": crpix,
            "CRPIX2": crpix,
            "CRVAL1": float(ra) % 360.0,
            "CRVAL2": float(dec),
            "CD1_1": -cd,
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": cd,
            "RADESYS": "ICRS",
        }
