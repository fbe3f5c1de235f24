"""Validation of an RSS Dataset against the schema of DESIGN.md section 2.

Cost: metadata and the small coordinates (wavelength, exposure, spectrum, fiber, exposure_index,
seeing_fwhm) are loaded; ``ivar``, ``mask``, ``xpos`` and ``ypos`` are read once, chunk by chunk,
through dask reductions that return per-spectrum counts (memory ~ one chunk per variable). ``flux`` is
never read: whether a usable sample has finite flux is checked per sample at solve time.

Every problem is collected (not only the first); :class:`SchemaError` lists them all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import xarray as xr

from crrxr.core.masks import RSS_ALL_BITS, RSS_BITS

from . import names as N

log = logging.getLogger(__name__)

__all__ = ["RSSReport", "SchemaError", "check_rss", "inspect_rss", "validate_rss"]


class SchemaError(ValueError):
    """An RSS Dataset does not follow the schema; ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


@dataclass
class RSSReport:
    """Outcome of :func:`inspect_rss`: errors (schema violations), warnings and a one-line summary."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_rss(
    ds: xr.Dataset, *, bad_bits: int | None = None, check_data: bool = True
) -> list[str]:
    """All schema violations of ``ds`` as messages (empty when valid). See :func:`inspect_rss`."""
    return inspect_rss(ds, bad_bits=bad_bits, check_data=check_data).errors


def check_rss(
    ds: xr.Dataset,
    *,
    bad_bits: int | None = None,
    source: str | None = None,
    check_data: bool = True,
) -> RSSReport:
    """Raise :class:`SchemaError` listing every problem, or return the report (warnings logged)."""
    report = inspect_rss(ds, bad_bits=bad_bits, check_data=check_data)
    where = f"{source}: " if source else ""
    for w in report.warnings:
        log.warning("%s%s", where, w)
    if report.errors:
        head = f"{where}not a valid crrxr RSS dataset ({len(report.errors)} problem"
        head += "s)" if len(report.errors) > 1 else ")"
        raise SchemaError(head + ":\n  - " + "\n  - ".join(report.errors), list(report.errors))
    return report


def inspect_rss(
    ds: xr.Dataset, *, bad_bits: int | None = None, check_data: bool = True
) -> RSSReport:
    """Check ``ds`` against the RSS schema; never raises for bad data, returns an :class:`RSSReport`.

    ``bad_bits``: mask bits that make a sample unusable (for the NaN-position check); default the
    ``mask.bad_bits`` of the dataset's crrxr parameter attrs if present, else all RSS bits (0b11111).
    ``check_data=False`` skips the one pass over ivar/mask/xpos/ypos (negative or non-finite ivar,
    non-finite positions of usable samples): metadata and small coordinates only, e.g. when
    re-opening a store already validated.
    """
    if not isinstance(ds, xr.Dataset):
        return RSSReport(errors=[f"expected an xarray.Dataset, got {type(ds).__name__}"])
    rep = RSSReport()
    shaped = _check_structure(ds, rep)
    params_bad_bits = _check_attrs(ds, rep)
    if bad_bits is None:
        bad_bits = RSS_ALL_BITS if params_bad_bits is None else params_bad_bits
    _check_small_coords(ds, rep, shaped)
    if check_data:
        _check_bulk(ds, rep, shaped, int(bad_bits))
    _check_chunks(ds, rep, shaped)
    rep.summary = _summary(ds, shaped)
    return rep


# -- structure: presence, dims, sizes, dtypes, units -----------------------------------------------


def _check_structure(ds: xr.Dataset, rep: RSSReport) -> set[str]:
    """Return the names whose presence, dims and dtype are right (later checks use only those)."""
    good: set[str] = set()
    for dim in (N.DIM_SPECTRUM, N.DIM_WAVELENGTH, N.DIM_EXPOSURE):
        if dim in ds.sizes and ds.sizes[dim] == 0:
            rep.errors.append(f"dimension {dim!r} has length 0; an RSS needs at least one {dim}")
    optional = tuple(s for s in N.RSS_OPTIONAL_VARIABLES if s.name in ds.variables)
    for spec in N.RSS_VARIABLES + optional:
        kind = "coordinate" if spec.coord else "variable"
        if spec.name not in ds.variables:
            where = "ds.coords" if spec.coord else "ds.data_vars"
            rep.errors.append(
                f"{spec.name}: missing {kind} (expected dims {spec.dims}, dtype {spec.describe_dtype()}"
                f"; {spec.long_name}); add it to {where}"
            )
            continue
        var = ds.variables[spec.name]
        ok = True
        if var.dims != spec.dims:
            fix = (
                f"transpose with ds[{spec.name!r}].transpose{spec.dims}"
                if sorted(var.dims) == sorted(spec.dims)
                else f"rebuild it with dims {spec.dims}"
            )
            rep.errors.append(f"{spec.name}: expected dims {spec.dims}, found {var.dims}; {fix}")
            ok = False
        if not spec.accepts(var.dtype):
            rep.errors.append(
                f"{spec.name}: expected dtype {spec.describe_dtype()}, found {var.dtype}; "
                f"convert with ds[{spec.name!r}] = ds[{spec.name!r}].astype({_preferred(spec)!r})"
            )
            ok = False
        if spec.coord and spec.name not in ds.coords:
            rep.errors.append(
                f"{spec.name}: is a data variable but must be a coordinate; "
                f"use ds = ds.set_coords({spec.name!r})"
            )
        _check_units(spec, var.attrs, rep)
        if ok:
            good.add(spec.name)
    return good


def _preferred(spec: N.VariableSpec) -> str:
    return "int64" if spec.integer_kinds else np.dtype(spec.dtypes[0]).name


def _check_units(spec: N.VariableSpec, attrs: Mapping[str, Any], rep: RSSReport) -> None:
    if spec.units is None:
        return
    have = attrs.get(N.ATTR_UNITS)
    if have is None:
        rep.warnings.append(f"{spec.name}: no 'units' attr; assuming {spec.units!r}")
        return
    from astropy import units as u

    try:
        same = u.Unit(str(have)) == u.Unit(spec.units)
    except ValueError:
        rep.errors.append(
            f"{spec.name}: units {have!r} are not a valid unit; expected {spec.units!r}"
        )
        return
    if not same:
        rep.errors.append(
            f"{spec.name}: expected units {spec.units!r}, found {have!r}; convert the values to "
            f"{spec.units} and set attrs['units'] = {spec.units!r}"
        )


# -- attrs ---------------------------------------------------------------------------------------------


def _check_attrs(ds: xr.Dataset, rep: RSSReport) -> int | None:
    """Check versioned attrs; return ``mask.bad_bits`` from the parameter attrs when present."""
    schema = ds.attrs.get(N.ATTR_RSS_SCHEMA)
    if schema is not None and schema not in N.KNOWN_RSS_SCHEMAS:
        rep.errors.append(
            f"attrs[{N.ATTR_RSS_SCHEMA!r}] = {schema!r} is not a schema this crrxr reads "
            f"{N.KNOWN_RSS_SCHEMAS}; upgrade crrxr or rewrite the store with this version"
        )
    for lo, hi, name in ((-360.0, 360.0, N.ATTR_IFU_RA), (-90.0, 90.0, N.ATTR_IFU_DEC)):
        if name in ds.attrs:
            try:
                value = float(ds.attrs[name])
            except (TypeError, ValueError):
                value = float("nan")
            if not (np.isfinite(value) and lo <= value <= hi):
                rep.errors.append(
                    f"attrs[{name!r}] = {ds.attrs[name]!r} must be a finite angle in deg "
                    f"within [{lo}, {hi}]; fix or delete the attr"
                )
    bad_bits = None
    for spec_attr, params_attr, label in (
        (N.ATTR_PARAMSPEC, N.ATTR_PARAMS, "parameter"),
        (N.ATTR_TRUTH_SPEC, N.ATTR_TRUTH, "simulation truth"),
    ):
        if spec_attr not in ds.attrs and params_attr not in ds.attrs:
            continue
        store = _decode_params(ds.attrs, spec_attr, params_attr, label, rep)
        if store is not None and label == "parameter" and "mask.bad_bits" in store:
            bad_bits = int(store["mask.bad_bits"])
    return bad_bits


def _decode_params(
    attrs: Mapping[str, Any], spec_attr: str, params_attr: str, label: str, rep: RSSReport
) -> Any:
    try:
        from crrxr.params import ParameterStore
    except ImportError:  # the parameter layer is not available: cannot check, do not fail
        rep.warnings.append(
            f"attrs {spec_attr!r}/{params_attr!r} not checked: crrxr.params unavailable"
        )
        return None
    from crrxr.params.codec import PARAMS_ATTR, SPEC_ATTR

    renamed = {SPEC_ATTR: attrs.get(spec_attr), PARAMS_ATTR: attrs.get(params_attr)}
    renamed = {k: v for k, v in renamed.items() if v is not None}
    try:
        _spec, store = ParameterStore.from_attrs(renamed)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        rep.errors.append(
            f"attrs {spec_attr!r}/{params_attr!r} ({label} attrs) cannot be decoded: {exc}; "
            "rewrite them with this crrxr version (ParameterStore.to_attrs) or delete both attrs"
        )
        return None
    return store


# -- small coordinates (loaded) ------------------------------------------------------------------------


def _check_small_coords(ds: xr.Dataset, rep: RSSReport, good: set[str]) -> None:
    if N.WAVELENGTH in good:
        wave = np.asarray(ds[N.WAVELENGTH].values, dtype=float)
        if not np.isfinite(wave).all():
            bad = np.flatnonzero(~np.isfinite(wave))
            rep.errors.append(
                f"{N.WAVELENGTH}: {bad.size} non-finite values (first at index {bad[0]}); "
                "every channel needs a finite wavelength in Angstrom"
            )
        elif wave.size > 1 and not (np.diff(wave) > 0).all():
            k = int(np.flatnonzero(np.diff(wave) <= 0)[0])
            rep.errors.append(
                f"{N.WAVELENGTH}: must be strictly increasing, found {wave[k]!r} then {wave[k + 1]!r} at "
                f"index {k}; sort with ds.sortby('wavelength') and drop duplicate channels"
            )
        elif wave.size and wave[0] <= 0:
            rep.errors.append(f"{N.WAVELENGTH}: must be positive (Angstrom), found {wave[0]!r}")
    for name in (N.SPECTRUM, N.EXPOSURE):
        if name in good:
            values = np.asarray(ds[name].values)
            if np.unique(values).size != values.size:
                rep.errors.append(
                    f"{name}: ids must be unique, found {values.size - np.unique(values).size} "
                    f"duplicates; renumber the {name} coordinate"
                )
    if N.EXPOSURE_INDEX in good:
        idx = np.asarray(ds[N.EXPOSURE_INDEX].values)
        n_exp = ds.sizes.get(N.DIM_EXPOSURE, 0)
        bad = (idx < 0) | (idx >= n_exp)
        if bad.any():
            rep.errors.append(
                f"{N.EXPOSURE_INDEX}: {int(bad.sum())} values outside [0, {n_exp - 1}] (the exposure dim has "
                f"length {n_exp}), e.g. {idx[bad][:5].tolist()}; it indexes the exposure dim by position, "
                "not by exposure id"
            )
        elif n_exp and np.unique(idx).size < n_exp:
            missing = sorted(set(range(n_exp)) - set(np.unique(idx).tolist()))
            rep.warnings.append(
                f"{N.EXPOSURE_INDEX}: exposures at positions {missing[:10]} have no spectra"
            )
    if N.SEEING_FWHM in good:
        fwhm = np.asarray(ds[N.SEEING_FWHM].values, dtype=float)
        bad = ~(np.isfinite(fwhm) & (fwhm > 0))
        if bad.any():
            rep.errors.append(
                f"{N.SEEING_FWHM}: must be a positive finite FWHM in arcsec for every exposure, found "
                f"{fwhm[bad][:5].tolist()} at exposure positions {np.flatnonzero(bad)[:5].tolist()}"
            )


# -- bulk arrays: one chunked pass over ivar, mask, xpos, ypos (flux is never read) -------------------


def _check_bulk(ds: xr.Dataset, rep: RSSReport, good: set[str], bad_bits: int) -> None:
    if not 0 <= bad_bits < 2**32:
        rep.errors.append(f"bad_bits = {bad_bits} must fit in uint32 (known RSS bits: {RSS_BITS})")
        return
    counts: dict[str, xr.DataArray] = {}
    W = N.DIM_WAVELENGTH
    if N.IVAR in good:
        ivar = ds[N.IVAR]
        counts["neg_ivar"] = (ivar < 0).sum(W)
        counts["nonfinite_ivar"] = (~np.isfinite(ivar)).sum(W)
    if {N.IVAR, N.MASK, N.XPOS, N.YPOS} <= good:
        usable = (ds[N.IVAR] > 0) & ((ds[N.MASK] & np.uint32(bad_bits)) == 0)
        bad_pos = ~(np.isfinite(ds[N.XPOS]) & np.isfinite(ds[N.YPOS]))
        counts["bad_pos"] = (usable & bad_pos).sum(W)
        counts["usable"] = usable.sum(W)
    if not counts:
        return
    keys = list(counts)
    try:
        values = dask.compute(*(counts[k] for k in keys))
    except Exception as exc:  # corrupt or truncated chunks: report, do not crash validation
        rep.errors.append(
            f"cannot read ivar/mask/xpos/ypos ({type(exc).__name__}: {exc}); the store is "
            "truncated or corrupt: rewrite it"
        )
        return
    got = {
        k: np.asarray(v.values if isinstance(v, xr.DataArray) else v) for k, v in zip(keys, values)
    }
    spectrum_ids = (
        np.asarray(ds[N.SPECTRUM].values)
        if N.SPECTRUM in good
        else np.arange(ds.sizes.get(N.DIM_SPECTRUM, 0))
    )

    def where(per_spectrum: np.ndarray) -> str:
        rows = np.flatnonzero(per_spectrum)
        return (
            f"{int(per_spectrum.sum())} samples in {rows.size} spectra "
            f"(spectrum ids {spectrum_ids[rows[:5]].tolist()}{'...' if rows.size > 5 else ''})"
        )

    if "neg_ivar" in got and got["neg_ivar"].any():
        rep.errors.append(
            f"{N.IVAR}: negative inverse variance at {where(got['neg_ivar'])}; "
            "ivar must be >= 0 (set ivar = 0 and a mask bit where there is no valid data)"
        )
    if "nonfinite_ivar" in got and got["nonfinite_ivar"].any():
        rep.errors.append(
            f"{N.IVAR}: NaN or infinite inverse variance at {where(got['nonfinite_ivar'])}; "
            "ivar must be finite (set ivar = 0 where there is no valid data)"
        )
    if "bad_pos" in got and got["bad_pos"].any():
        rep.errors.append(
            f"{N.XPOS}/{N.YPOS}: NaN or infinite fiber position at {where(got['bad_pos'])} that are "
            f"otherwise usable (ivar > 0, no bad bit of {bad_bits:#x}); give every usable sample a finite "
            "position, or set ivar = 0 / RSS_NODATA there"
        )
    if "usable" in got and got["usable"].sum() == 0:
        rep.warnings.append(
            "no usable sample at all (every sample has ivar <= 0 or a bad mask bit)"
        )


def _check_chunks(ds: xr.Dataset, rep: RSSReport, good: set[str]) -> None:
    """Warn about chunkings that work but read slowly (the engine reads all spectra per wavelength chunk)."""
    wave_chunks = {}
    for name in N.RSS_SPECTRAL_VARS:
        if name in good and ds[name].chunks:
            spec_chunks, wchunks = ds[name].chunks
            wave_chunks[name] = wchunks
            if len(spec_chunks) > 1:
                rep.warnings.append(
                    f"{name}: chunked along spectrum into {len(spec_chunks)} pieces; crrxr reads "
                    "every spectrum of a wavelength chunk at once: store one spectrum chunk"
                )
    if len(set(wave_chunks.values())) > 1:
        rep.warnings.append(
            "spectral variables have different wavelength chunks "
            f"({ {k: max(v) for k, v in wave_chunks.items()} }); chunk them alike for speed"
        )


def _summary(ds: xr.Dataset, good: set[str]) -> str:
    n_spec = ds.sizes.get(N.DIM_SPECTRUM, 0)
    n_exp = ds.sizes.get(N.DIM_EXPOSURE, 0)
    n_wave = ds.sizes.get(N.DIM_WAVELENGTH, 0)
    parts = [f"{n_spec} spectra", f"{n_exp} exposures", f"{n_wave} channels"]
    if N.WAVELENGTH in good and n_wave:
        wave = ds[N.WAVELENGTH].values
        parts[-1] += f" ({float(wave[0]):.2f}-{float(wave[-1]):.2f} A)"
    if N.FIBER in good and n_spec:
        parts.insert(1, f"{np.unique(ds[N.FIBER].values).size} fibers")
    flux = ds.get(N.FLUX)
    if flux is not None and flux.chunks and N.DIM_WAVELENGTH in flux.dims:
        wchunks = flux.chunks[flux.dims.index(N.DIM_WAVELENGTH)]
        parts.append(f"{len(wchunks)} wavelength chunks of {max(wchunks)}")
    elif flux is not None:
        parts.append("in memory (not chunked)")
    return ", ".join(parts)
