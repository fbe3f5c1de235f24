"""The cube template: layout, chunking, CF attrs, fill behaviour and correlation pairs."""

import json

import numpy as np
import pytest
import xarray as xr
import zarr

from crrxr.io import cube as C


def _template(tmp_path, nw=10, nside=5, wc=4):
    wave = np.linspace(6000.0, 6300.0, nw)
    x = (np.arange(nside) - nside // 2) * 0.75
    bands = C.select_bands(wave, [4702.5, 6176.58, 7496.12], ["g", "r", "i"])
    pairs = C.correlation_pairs(nside, nside, 0.75, 1.6)
    ds, enc = C.cube_template(
        wave, x, x, wc, bands, pairs, {C.ATTR_WCS: C.canonical_json({"CD1_1": -0.75 / 3600})}
    )
    store = tmp_path / "cube.zarr"
    ds.to_zarr(store, compute=False, consolidated=False, zarr_format=3, encoding=enc)
    return store, ds


def test_template_layout_and_fill(tmp_path):
    store, ds = _template(tmp_path)
    out = xr.open_zarr(store, consolidated=False)
    assert set(out.data_vars) == set(C.DATA_VARIABLES)
    assert out[C.FLUX].dims == (C.WAVELENGTH, C.Y, C.X) and out[C.FLUX].dtype == np.float32
    assert out[C.MASK].dtype == np.uint32 and out[C.CHUNK_DONE].dtype == np.uint8
    # zarr chunks aligned with wavelength chunks (last one shorter), ledger one element per chunk
    assert zarr.open_array(str(store), path=C.FLUX).chunks == (4, 5, 5)
    assert zarr.open_array(str(store), path=C.CHUNK_DONE).chunks == (1,)
    assert out.sizes[C.WAVELENGTH_CHUNK] == 3
    assert out[C.MASK].attrs["flag_masks"] == [1, 2, 4, 8, 1024]
    assert out[C.MASK].attrs["flag_meanings"].split() == [
        "NOCOV",
        "LOWCOV",
        "DEADFIBER",
        "FORESTAR",
        "DONOTUSE",
    ]
    assert out[C.FLUX].attrs["units"]
    # only the r band lies in 6000-6300 A
    assert list(out[C.BAND].values) == ["r"]
    assert out[C.BAND_INDEX].values[0] == np.argmin(np.abs(out.wavelength.values - 6176.58))
    assert json.loads(out.attrs[C.ATTR_WCS])["CD1_1"] == -0.75 / 3600
    # nothing written yet: flux NaN, mask 0 and uint32 (no fill-value masking of integers)
    assert np.isnan(out[C.FLUX].values).all()
    assert out[C.MASK].dtype == np.uint32 and (out[C.MASK].values == 0).all()
    # a region write lands where it should and zeros in ivar stay zeros
    g = zarr.open_group(str(store), mode="r+")
    g[C.IVAR][4:8] = 0.0
    g[C.FLUX][4:8] = 2.0
    out = xr.open_zarr(store, consolidated=False)
    assert (out[C.IVAR].values[4:8] == 0).all() and np.isnan(out[C.IVAR].values[:4]).all()
    assert (out[C.FLUX].values[4:8] == 2).all()


def test_no_band_in_range_gives_center():
    wave = np.linspace(5400.0, 5600.0, 11)
    b = C.select_bands(wave, [4702.5, 6176.58], ["g", "r"])
    assert b.names == (C.CENTER_BAND,) and b.index.tolist() == [5]


def test_band_names_must_match():
    with pytest.raises(ValueError, match="correlation_bands"):
        C.select_bands(np.arange(5.0), [1.0, 2.0], ["g"])


@pytest.mark.parametrize(
    "nx,ny,scale,sep", [(5, 5, 0.75, 1.6), (7, 4, 0.5, 1.1), (9, 9, 0.75, 5.0)]
)
def test_correlation_pairs_match_brute_force(nx, ny, scale, sep):
    i, j = C.correlation_pairs(nx, ny, scale, sep)
    yy, xx = np.mgrid[0:ny, 0:nx]
    px, py = xx.ravel() * scale, yy.ravel() * scale
    d2 = (px[:, None] - px[None, :]) ** 2 + (py[:, None] - py[None, :]) ** 2
    bi, bj = np.nonzero(np.triu(d2 <= sep**2 + 1e-9))
    assert i.dtype == np.int32 and C.count_correlation_pairs(nx, ny, scale, sep) == len(i)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(j, bj)
