"""Grid: odd side centred on 0, extents, covering, FITS WCS checked with astropy."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from crrxr.core.grid import Grid, odd_nside


@pytest.mark.parametrize(
    ("extent", "nside"), [(12, 17), (17, 23), (22, 31), (27, 37), (32, 43), (36, 49)]
)
def test_manga_grid_sizes(extent, nside):
    # (ceil(L/p) // 2) * 2 + 1 at 0.75" (the authors' code; 23 x 23 for a 19-fiber IFU)
    assert Grid.for_extent(0.75, extent).nside == nside
    assert odd_nside(extent, 0.75) % 2 == 1


def test_pixel_centres():
    g = Grid(0.5, 5)
    assert np.allclose(g.x, [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert np.array_equal(g.x, g.y)
    xx, yy = g.centres()
    assert xx.shape == (25,)
    # flat index iy * nx + ix
    assert (xx[1 * 5 + 3], yy[1 * 5 + 3]) == (0.5, -0.5)
    assert g.shape == (5, 5) and g.size == 25 and g.extent == 2.5


def test_covering():
    x = np.array([-3.0, 2.0, np.nan])
    y = np.array([1.0, 5.0, 0.0])
    g = Grid.covering(x, y, 0.75, margin=2.0)
    assert g.nside % 2 == 1
    assert g.x[-1] >= 7.0 - 0.75 / 2 and g.x[0] <= -7.0 + 0.75 / 2
    with pytest.raises(ValueError, match="finite"):
        Grid.covering([np.nan], [np.nan], 0.75)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, 5), "pixel_scale"),
        ((0.5, 0), "nside"),
        ((0.5, 2.5), "nside"),
        ((np.nan, 5), "pixel_scale"),
    ],
)
def test_bad_grid(args, match):
    with pytest.raises(ValueError, match=match):
        Grid(*args)


def test_wcs_header_with_astropy():
    g = Grid(0.75, 23)
    ra, dec = 150.25, 2.5
    header = fits.Header(g.wcs_header(ra, dec))
    w = WCS(header)
    c = (g.nside - 1) / 2  # 0-based central pixel
    sky = w.pixel_to_world(c, c)
    assert sky.ra.deg == pytest.approx(ra) and sky.dec.deg == pytest.approx(dec)
    # one pixel towards +x (column + 1, West) lowers RA by 0.75" / cos(dec); +y raises Dec
    east = w.pixel_to_world(c + 1, c)
    assert (east.ra.deg - ra) * np.cos(np.deg2rad(dec)) * 3600 == pytest.approx(-0.75, rel=1e-6)
    north = w.pixel_to_world(c, c + 1)
    assert (north.dec.deg - dec) * 3600 == pytest.approx(0.75, rel=1e-6)
    assert header["CRPIX1"] == 12.0 and header["CTYPE1"] == "RA---TAN" and header["CD1_1"] < 0
    with pytest.raises(ValueError, match="IFU centre"):
        g.wcs_header(10.0, 95.0)
