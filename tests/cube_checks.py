"""Bitwise comparison of two cube stores (shared by the Ray and SLURM tests)."""

from __future__ import annotations

import numpy as np
import xarray as xr


def assert_same_cube(a, b) -> None:
    """Every variable and coordinate of two cube stores bitwise equal (NaNs in the same places)."""
    x, y = xr.open_zarr(a).load(), xr.open_zarr(b).load()
    assert sorted(x.data_vars) == sorted(y.data_vars)
    for name in list(x.data_vars) + list(x.coords):
        u, v = x[name].values, y[name].values
        assert u.dtype == v.dtype and u.shape == v.shape, name
        assert np.array_equal(u, v, equal_nan=u.dtype.kind == "f"), name
