"""Open a cube store written by ``crrxr build`` and check it: every problem collected, clear messages.

``open_cube(path)`` is the one way fits, quality, plots and exports read a cube: it returns the lazy
Dataset with the decoded reconstruction parameters and the grid.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from crrxr.core.grid import Grid
from crrxr.io import cube as C
from crrxr.io.rss import has_consolidated_metadata
from crrxr.io.schema import SchemaError
from crrxr.params import ParameterStore, ParamSpec
from crrxr.params.codec import PARAMS_ATTR, SPEC_ATTR
from crrxr.params.reconstruction import with_added_keys

_CUBE_DIMS = (C.WAVELENGTH, C.Y, C.X)


@dataclass(frozen=True)
class CubeView:
    """A validated cube store.

    dataset: lazy Dataset (dask-backed, the store's chunks). spec, params: reconstruction parameters
    decoded from ``crrxr_paramspec``/``crrxr_params``. grid: the pixel grid (x, y in arcsec).
    path: the store. complete: every wavelength chunk is marked done in the ledger.
    failed_channels: channel indices whose solve failed (from the attrs of a finished build).
    """

    dataset: xr.Dataset
    spec: ParamSpec
    params: ParameterStore
    grid: Grid
    path: str
    complete: bool
    failed_channels: tuple[int, ...]

    @property
    def rss_identity(self) -> dict[str, Any]:
        """The identity of the RSS the cube was built from (``rss_identity`` attr), or {}."""
        text = self.dataset.attrs.get(C.ATTR_RSS_IDENTITY)
        return json.loads(text) if text else {}

    @property
    def method(self) -> str:
        return str(self.params["method"])


def _grid_of(ds: xr.Dataset, pixel_scale: float, problems: list[str]) -> Grid | None:
    x, y = np.asarray(ds[C.X].values, float), np.asarray(ds[C.Y].values, float)
    if x.size != y.size or x.size % 2 == 0:
        problems.append(f"x/y coords must be equal, odd lengths (got {x.size} and {y.size})")
        return None
    grid = Grid(pixel_scale, x.size)
    if not (np.allclose(grid.x, x, atol=1e-9) and np.allclose(grid.y, y, atol=1e-9)):
        problems.append(
            "x/y coords are not the centred grid of pixel scale "
            f"{pixel_scale} arcsec the parameters describe"
        )
        return None
    return grid


def open_cube(path: str | os.PathLike[str], *, require_complete: bool = True) -> CubeView:
    """The cube store at ``path``, lazily opened and validated.

    Raises ``FileNotFoundError`` for a missing path and :class:`~crrxr.io.schema.SchemaError` listing
    every problem (missing variables, wrong dims, undecodable parameters, an unfinished build when
    ``require_complete``).
    """
    path = os.fspath(path)
    if "://" not in path and not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such cube store; make one with `crrxr build`")
    try:
        ds = xr.open_zarr(path, consolidated=has_consolidated_metadata(path), chunks={})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SchemaError(
            f"{path}: cannot open as a Zarr cube store ({type(exc).__name__}: {exc}); "
            "is it a cube written by `crrxr build`?"
        ) from exc
    problems: list[str] = []
    for name in (C.FLUX, C.IVAR, C.MASK):
        if name not in ds:
            problems.append(f"variable {name!r} is missing")
        elif ds[name].dims != _CUBE_DIMS:
            problems.append(f"{name} has dims {ds[name].dims}, expected {_CUBE_DIMS}")
    for name in (C.WAVELENGTH, C.X, C.Y):
        if name not in ds.coords:
            problems.append(f"coordinate {name!r} is missing")
    spec = params = grid = None
    if SPEC_ATTR not in ds.attrs or PARAMS_ATTR not in ds.attrs:
        problems.append(
            f"attrs {SPEC_ATTR!r}/{PARAMS_ATTR!r} (reconstruction parameters) are missing"
        )
    else:
        try:
            spec, params = ParameterStore.from_attrs(ds.attrs)
            params = with_added_keys(params)
        except ValueError as exc:
            problems.append(f"reconstruction parameters cannot be decoded: {exc}")
    if params is not None and not problems:
        grid = _grid_of(ds, float(params["grid.pixel_scale_arcsec"]), problems)
    complete = True
    if C.CHUNK_DONE in ds:
        done = np.asarray(ds[C.CHUNK_DONE].values)
        complete = bool(done.size and np.all(done == 1))
        if require_complete and not complete:
            problems.append(
                f"the build is unfinished ({int(np.sum(done != 1))} of {done.size} wavelength "
                "chunks not done); finish it with `crrxr build ... --resume`"
            )
    elif require_complete:
        problems.append(f"no {C.CHUNK_DONE!r} ledger: not a store written by `crrxr build`")
    failed: tuple[int, ...] = ()
    if C.ATTR_FAILED in ds.attrs:
        try:
            failed = tuple(int(i) for i in json.loads(ds.attrs[C.ATTR_FAILED]))
        except (TypeError, ValueError):
            problems.append(f"attr {C.ATTR_FAILED!r} is not a JSON list of channel indices")
    if problems:
        raise SchemaError(
            f"{path}: not a valid crrxr cube ({len(problems)} problem(s)):\n  - "
            + "\n  - ".join(problems),
            problems,
        )
    return CubeView(ds, spec, params, grid, path, complete, failed)
