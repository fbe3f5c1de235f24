"""Fit a model to the channels of a cube (or to its RSS fibers) and store the result in the cube store.

The result is a Dataset shaped like xarray's ``curvefit`` output, on the cube's own ``wavelength``
coordinate (channels not fitted hold NaN and status ``not_fitted``, so ``xr.align(fit, cube,
join="exact")`` passes): ``fit_coefficients(wavelength, param)``, ``fit_stderr``,
``fit_covariance(wavelength, cov_i, cov_j)``, ``fit_chi2``, ``fit_dof``, ``fit_status`` (CF flags),
``fit_derived(wavelength, derived)`` and ``fit_derived_stderr``, the Fisher information
``fit_fisher(wavelength, cov_i, cov_j)`` with its eigenmodes ``fit_fisher_eigenvalues(wavelength,
mode)`` / ``fit_fisher_eigenvectors(wavelength, mode, param)`` (see :mod:`crrxr.fit.solve`), the bin
of channels each fit used (``fit_bin_start``/``fit_bin_stop``), the fit's spec
(``crrxr_fit_paramspec``) and the cube's parameter attrs. Stored as the group ``fits/<model>`` (or
``fits/<model>_rss`` for the RSS route) of the cube store.

Work is split into tasks of consecutive bins run by the engine's executors (each task reads its own
channels of the cube and the RSS).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr
import zarr

from crrxr.engine import settings
from crrxr.engine.store import consolidate
from crrxr.executors import make_executor
from crrxr.fit.channels import channel_weights as cube_channel_weights
from crrxr.fit.channels import check_rss_matches, read_channels
from crrxr.fit.models import KINDS, Samples, cube_data, model_spec, psf_tools, rss_data, used_pixels
from crrxr.fit.solve import (
    STATUS_ERROR,
    STATUS_MASKED,
    STATUS_MEANINGS,
    STATUS_NOT_FITTED,
    ChannelFit,
    fit_data,
)
from crrxr.io import cube as C
from crrxr.io.cube_reader import CubeView, open_cube
from crrxr.params.codec import PARAMS_ATTR, SPEC_ATTR

ROUTES = ("cube", "rss")


def fit_group(kind: str, route: str) -> str:
    """Group name of a fit inside the cube store."""
    return f"fits/{kind}" + ("_rss" if route == "rss" else "")


def select_bins(
    wavelength: np.ndarray,
    wavelengths: Sequence[float] | None = None,
    bin_size: int = 1,
    failed: Sequence[int] = (),
) -> list[np.ndarray]:
    """Channel index arrays, one per fit: every channel (or those nearest ``wavelengths``,
    Angstrom), grouped into consecutive bins of ``bin_size`` (the last may be shorter); bins are
    centred on the selected channels when ``wavelengths`` are given."""
    n = len(wavelength)
    if bin_size < 1:
        raise ValueError(f"--bin must be >= 1, got {bin_size}")
    if wavelengths is not None:
        lo, hi = float(wavelength[0]), float(wavelength[-1])
        bad = [w for w in wavelengths if not lo <= w <= hi]
        if bad:
            raise ValueError(f"wavelengths {bad} lie outside the cube's range {lo:.2f}-{hi:.2f} A")
        centres = sorted({int(np.argmin(np.abs(wavelength - w))) for w in wavelengths})
        half = bin_size // 2
        bins = [np.arange(max(0, c - half), min(n, c - half + bin_size)) for c in centres]
    else:
        bins = [np.arange(s, min(n, s + bin_size)) for s in range(0, n, bin_size)]
    return bins


@dataclass(frozen=True)
class FitTask:
    cube_path: str
    rss_path: str | None
    kind: str
    route: str
    bins: tuple[tuple[int, ...], ...]


def _config(cube: CubeView):
    return settings.core_config(cube.params)


def run_task(task: FitTask) -> list[ChannelFit]:
    """Fit every bin of ``task`` (reads its channels of the cube and of the RSS)."""
    cube = open_cube(task.cube_path)
    config = _config(cube)
    if task.kind == "psf":
        spec, resolver = psf_tools(config, cube.grid.pixel_scale)
    else:
        spec, resolver = model_spec(task.kind)
    n_par, n_der = len(spec.primitive_keys()), len(spec.derived_keys())
    channels = np.unique(np.concatenate([np.asarray(b) for b in task.bins]))
    inputs = read_channels(cube, task.rss_path, channels)
    weights = cube_channel_weights(cube, inputs) if task.route == "cube" else None
    pos = {int(c): i for i, c in enumerate(inputs.index)}
    ds = cube.dataset
    failed = set(cube.failed_channels)
    out = []
    for b in task.bins:
        cols = [pos[int(c)] for c in b]
        if any(int(c) in failed for c in b):
            out.append(ChannelFit.empty(n_par, n_der, STATUS_MASKED))
            continue
        terms = []
        for j in cols:
            u = inputs.ivar[:, j] > 0
            if task.route == "rss":
                u &= np.isfinite(inputs.flux[:, j]) & (
                    (inputs.mask[:, j].astype(np.uint64) & np.uint64(config.bad_bits)) == 0
                )
                terms.append(
                    Samples(
                        inputs.xpos[u, j],
                        inputs.ypos[u, j],
                        inputs.fwhm[u, j],
                        inputs.flux[u, j],
                        inputs.ivar[u, j],
                    )
                )
            else:
                terms.append(
                    Samples(
                        inputs.xpos[:, j],
                        inputs.ypos[:, j],
                        inputs.fwhm[:, j],
                        inputs.flux[:, j],
                        inputs.ivar[:, j],
                    )
                )
        try:
            if task.route == "rss":
                data = rss_data(task.kind, config, terms)
            else:
                sel = [int(c) for c in b]
                img = ds[C.FLUX].isel(wavelength=sel).values.astype(float).mean(axis=0)
                mask = np.bitwise_or.reduce(ds[C.MASK].isel(wavelength=sel).values, axis=0)
                ws = [weights[j] for j in cols]
                pix = used_pixels(mask, img, ws)
                if pix.size == 0:
                    out.append(ChannelFit.empty(n_par, n_der, STATUS_MASKED))
                    continue
                data = cube_data(
                    task.kind, config, cube.grid, img, pix, ws, terms, ds[C.FLUX].dtype
                )
            out.append(fit_data(task.kind, spec, resolver, data))
        except (ValueError, np.linalg.LinAlgError):
            out.append(ChannelFit.empty(n_par, n_der, STATUS_ERROR))
    return out


def fit_cube(
    cube_path: str | os.PathLike[str],
    kind: str,
    rss: str | os.PathLike[str],
    *,
    route: str = "cube",
    wavelengths: Sequence[float] | None = None,
    bin_size: int = 1,
    scheduler: str = "synchronous",
    workers: int | None = None,
    bins_per_task: int = 16,
    overwrite: bool = False,
    write: bool = True,
) -> xr.Dataset:
    """Fit ``kind`` (psf, source, binary) to the cube at ``cube_path`` (``route="cube"``, through its
    weights and covariance) or to its RSS fibers (``route="rss"``); ``rss`` is the RSS the cube was
    built from (checked by content). Stores the Dataset as :func:`fit_group` in the cube store
    (``overwrite`` replaces an earlier fit of that group) and returns it."""
    if kind not in KINDS:
        raise ValueError(f"unknown fit model {kind!r}; use one of {', '.join(KINDS)}")
    if route not in ROUTES:
        raise ValueError(f"unknown --data {route!r}; use cube or rss")
    if kind == "psf" and route == "rss":
        raise ValueError("the psf model describes cube images; fit it with --data cube")
    cube = open_cube(cube_path)
    check_rss_matches(cube, rss)
    wave = cube.dataset[C.WAVELENGTH].values
    bins = select_bins(wave, wavelengths, bin_size)
    group = fit_group(kind, route)
    path = os.fspath(cube_path)
    if write and not overwrite and _group_exists(path, group):
        raise FileExistsError(
            f"{path} already holds a fit in group {group!r}; pass --overwrite to replace it"
        )
    tasks = [
        FitTask(
            path,
            os.fspath(rss),
            kind,
            route,
            tuple(tuple(int(c) for c in b) for b in bins[s : s + bins_per_task]),
        )
        for s in range(0, len(bins), bins_per_task)
    ]
    graph = [dask.delayed(run_task, pure=True)(t) for t in tasks]
    with make_executor(scheduler, workers) as ex:
        results = ex.compute(graph, progress="off")
    fits = [f for r in results for f in r]
    config = _config(cube)
    spec = psf_tools(config, cube.grid.pixel_scale)[0] if kind == "psf" else model_spec(kind)[0]
    ds = assemble(cube, spec, bins, fits, kind, route)
    if write:
        write_group(ds, path, group, cube)
    return ds


def write_group(ds: xr.Dataset, path: str, group: str, cube: CubeView) -> None:
    """Write ``ds`` (a fit, the quality table) as ``group`` of the cube store, chunked along
    wavelength like the cube where it has that dim, and
    refresh the store's consolidated metadata so that ``xr.open_zarr(path, group=group)`` finds it."""
    wc = int(cube.dataset[C.FLUX].encoding.get("chunks", (cube.dataset.sizes[C.WAVELENGTH],))[0])
    encoding = {
        name: {"chunks": (min(wc, var.shape[0]),) + tuple(var.shape[1:])}
        for name, var in ds.data_vars.items()
        if var.dims and var.dims[0] == C.WAVELENGTH
    }
    ds.to_zarr(path, group=group, mode="w", consolidated=False, zarr_format=3, encoding=encoding)
    consolidate(path)


def _group_exists(path: str, group: str) -> bool:
    try:
        root = zarr.open_group(path, mode="r", use_consolidated=False)
        root[group]
        return True
    except (KeyError, FileNotFoundError, zarr.errors.BaseZarrError):
        return False


def _strings(items: Sequence[str]) -> np.ndarray:
    """Variable-length strings (zarr v3 ``string``), like the cube's band names."""
    return np.asarray(list(items), dtype=object)


def assemble(
    cube: CubeView,
    spec,
    bins: list[np.ndarray],
    fits: list[ChannelFit],
    kind: str,
    route: str,
) -> xr.Dataset:
    """The curvefit-shaped Dataset on the cube's wavelength axis (each bin at its middle channel)."""
    wave = cube.dataset[C.WAVELENGTH]
    n = wave.size
    keys = list(spec.primitive_keys())
    derived = list(spec.derived_keys())
    p, d = len(keys), len(derived)
    coef = np.full((n, p), np.nan)
    err = np.full((n, p), np.nan)
    cov = np.full((n, p, p), np.nan)
    fisher = np.full((n, p, p), np.nan)
    evals = np.full((n, p), np.nan)
    evecs = np.full((n, p, p), np.nan)
    dv = np.full((n, d), np.nan)
    de = np.full((n, d), np.nan)
    chi2 = np.full(n, np.nan)
    dof = np.zeros(n, np.int64)
    status = np.full(n, STATUS_NOT_FITTED, np.uint8)
    b0 = np.full(n, -1, np.int64)
    b1 = np.full(n, -1, np.int64)
    reuse = np.full(n, np.nan)
    bound = cube.dataset[C.REUSE_BOUND].values if C.REUSE_BOUND in cube.dataset else np.zeros(n)
    for b, f in zip(bins, fits):
        c = int(b[len(b) // 2])
        reuse[c] = float(np.max(bound[np.asarray(b, dtype=np.intp)]))
        coef[c], err[c], cov[c], chi2[c], dof[c], status[c] = (
            f.values,
            f.stderr,
            f.covariance,
            f.chi2,
            f.dof,
            f.status,
        )
        fisher[c], evals[c], evecs[c], dv[c], de[c] = (
            f.fisher,
            f.eigenvalues,
            f.eigenvectors,
            f.derived,
            f.derived_stderr,
        )
        b0[c], b1[c] = int(b[0]), int(b[-1]) + 1
    units = [spec[k].units for k in keys]
    W, P = C.WAVELENGTH, "param"
    attrs = {
        "crrxr_fit_model": kind,
        "crrxr_fit_route": route,
        "crrxr_fit_paramspec": spec.to_json(),
        SPEC_ATTR: cube.dataset.attrs[SPEC_ATTR],
        PARAMS_ATTR: cube.dataset.attrs[PARAMS_ATTR],
        "crrxr_cube": os.path.abspath(cube.path),
    }
    ds = xr.Dataset(
        {
            "fit_coefficients": ((W, P), coef),
            "fit_stderr": ((W, P), err),
            "fit_covariance": ((W, "cov_i", "cov_j"), cov),
            "fit_chi2": ((W,), chi2),
            "fit_dof": ((W,), dof),
            "fit_status": (
                (W,),
                status,
                {
                    "flag_values": list(range(6)),
                    "flag_meanings": STATUS_MEANINGS,
                    "long_name": "fit status",
                },
            ),
            "fit_derived": ((W, "derived"), dv),
            "fit_derived_stderr": ((W, "derived"), de),
            "fit_fisher": ((W, "cov_i", "cov_j"), fisher),
            "fit_fisher_eigenvalues": (
                (W, "mode"),
                evals,
                {"long_name": "eigenvalues of the Fisher matrix in stderr units, largest first"},
            ),
            "fit_fisher_eigenvectors": (
                (W, "mode", P),
                evecs,
                {"long_name": "eigenmodes (rows) in stderr units; mode 0 = best constrained"},
            ),
            "fit_bin_start": ((W,), b0),
            "fit_bin_stop": ((W,), b1),
            "fit_reuse_bound": (
                (W,),
                reuse,
                {
                    "long_name": "largest reuse_bound of the cube over the bin's channels",
                    "comment": "the cube route models the data through exact per-channel weights; "
                    "channels built with interpolated weights (crr.reuse_tolerance > 0) differ "
                    "from that model by at most this many noise sigma per spaxel (0: exact)",
                    "units": "1",
                },
            ),
        },
        coords={
            W: wave,
            P: _strings(keys),
            "param_units": (P, _strings(units)),
            "cov_i": _strings(keys),
            "cov_j": _strings(keys),
            "derived": _strings(derived),
            "derived_units": ("derived", _strings([spec[k].units for k in derived])),
            "mode": np.arange(p),
        },
        attrs=attrs,
    )
    return ds
