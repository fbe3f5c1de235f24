"""Optional sky subtraction of an RSS Dataset (for pipelines that deliver RSS with the sky still in).

Two sources of the sky spectrum, per exposure:

* sky fibers: a boolean ``sky_fiber(spectrum)`` variable marks the rows that see blank sky. For each
  exposure and channel the sky is estimated from the *usable* sky samples (ivar > 0, finite flux, no
  bit of ``bad_bits`` set) with

  - ``method="mean"`` (default): the inverse-variance weighted mean, S = sum(w f) / sum(w), w = ivar,
    with variance var_S = 1 / sum(w);
  - ``method="median"``: the median of the usable sky fluxes, robust to a contaminated sky fiber,
    with the large-n Gaussian variance var_S = (pi/2) sum(1/ivar) / n^2.

* a provided spectrum: ``sky(exposure, wavelength)`` with optional ``sky_ivar(exposure, wavelength)``
  (without it the sky is taken as noise-free, var_S = 0). If both are present, ``sky`` wins.

The sky of exposure e is subtracted from every row of exposure e (sky fibers included: their
residual is a check and they stay in the RSS for the engine to use or not). Where ivar > 0 the
variance is propagated as 1/ivar_new = 1/ivar + var_S (the small correlation between a sky fiber and
an estimate it contributed to is ignored). Where the sky is undefined (no usable sky sample, a
non-finite provided sky, or sky_ivar = 0) the samples of that exposure keep their flux, get ivar = 0
and the RSS_NOSKY bit, as the MaNGA DRP does for NOSKY.

Everything is computed per wavelength chunk (``xarray.map_blocks``), so a lazy dask-backed RSS stays
lazy; the ``spectrum`` and ``exposure`` dimensions must each be in one chunk (they are rechunked if
not). The result carries ``sky`` / ``sky_ivar`` (the spectrum used) and a provenance record in
``attrs["sky_subtraction"]`` (canonical JSON, see :func:`sky_record`), also appended to ``history``.

Parameter keys (docs/contracts.md section 1): ``sky.enabled`` (default false) and ``sky.method``
(``mean`` | ``median``); the engine passes their values as plain arguments.
"""

from __future__ import annotations

import json
import logging
import warnings

import dask.array as da
import numpy as np
import xarray as xr

from crrxr.core.masks import RSS_DEADFIBER, RSS_NODATA, RSS_NOSKY, RSS_REJECT, RSS_SATURATED

__all__ = [
    "SKY",
    "SKY_FIBER",
    "SKY_IVAR",
    "SKY_METHODS",
    "SKY_VARIABLES",
    "DEFAULT_SKY_BAD_BITS",
    "SkyError",
    "sky_record",
    "subtract_sky",
]

log = logging.getLogger(__name__)

SKY_FIBER = "sky_fiber"  # (spectrum,) bool
SKY = "sky"  # (exposure, wavelength), flux units
SKY_IVAR = "sky_ivar"  # (exposure, wavelength), inverse variance of sky
#: Optional RSS variables the sky subtraction reads (callers selecting RSS variables keep these).
SKY_VARIABLES: tuple[str, ...] = (SKY_FIBER, SKY, SKY_IVAR)
SKY_METHODS: tuple[str, ...] = ("mean", "median")
ATTR_SKY = "sky_subtraction"
#: Bits that make a sky-fiber sample unusable for the estimate. NOSKY is not among them: in an RSS
#: that still contains the sky it carries no information about the sky fibers.
DEFAULT_SKY_BAD_BITS = int(RSS_NODATA | RSS_DEADFIBER | RSS_REJECT | RSS_SATURATED)

_RSS = ("flux", "ivar", "mask", "exposure_index")


class SkyError(ValueError):
    """Sky subtraction was asked for but the RSS lacks what it needs, or a setting is invalid."""


def subtract_sky(
    rss: xr.Dataset, *, method: str = "mean", bad_bits: int = DEFAULT_SKY_BAD_BITS
) -> xr.Dataset:
    """Sky-subtracted copy of ``rss`` (lazy if ``rss`` is); see the module docstring.

    ``method``: ``mean`` (inverse-variance weighted) or ``median`` (sky fibers only).
    ``bad_bits``: RSS mask bits that exclude a sky-fiber sample from the estimate.
    Raises :class:`SkyError` if the RSS has neither ``sky`` nor ``sky_fiber``, if an exposure has no
    sky fiber, or on wrong dims/values of those variables.
    """
    if method not in SKY_METHODS:
        raise SkyError(f"sky.method must be one of {SKY_METHODS}, got {method!r}")
    missing = [v for v in _RSS if v not in rss.variables]
    if missing:
        raise SkyError(f"sky subtraction needs the RSS variables {missing}")
    n_exp = int(rss.sizes["exposure"])
    exposure_index = np.asarray(rss["exposure_index"].values, dtype=np.int64)

    if SKY in rss.variables:
        source = "sky spectrum"
        _check_dims(rss, SKY, ("exposure", "wavelength"))
        if SKY_IVAR in rss.variables:
            _check_dims(rss, SKY_IVAR, ("exposure", "wavelength"))
            if bool((rss[SKY_IVAR] < 0).any()):
                raise SkyError("sky_ivar has negative values; it is an inverse variance (>= 0)")
        if SKY_FIBER in rss.variables:
            log.info("RSS has both a sky spectrum and sky fibers: using the sky spectrum")
        detail: dict[str, object] = {"sky_ivar_given": SKY_IVAR in rss.variables}
    elif SKY_FIBER in rss.variables:
        source = "sky fibers"
        _check_dims(rss, SKY_FIBER, ("spectrum",))
        sky_fiber = np.asarray(rss[SKY_FIBER].values)
        if sky_fiber.dtype != bool:
            if not np.isin(sky_fiber, (0, 1)).all():
                raise SkyError("sky_fiber must be boolean (or 0/1) per spectrum")
            sky_fiber = sky_fiber.astype(bool)
        per_exp = np.bincount(exposure_index[sky_fiber], minlength=n_exp)
        if np.any(per_exp == 0):
            raise SkyError(
                f"exposure index(es) {np.flatnonzero(per_exp == 0).tolist()} have no sky fiber "
                "(sky_fiber is False for all their rows); flag sky fibers in every exposure or "
                "provide a sky(exposure, wavelength) spectrum"
            )
        detail = {
            "estimator": "inverse-variance weighted mean" if method == "mean" else "median",
            "sky_fibers_per_exposure": per_exp.tolist(),
            "bad_bits": int(bad_bits),
        }
    else:
        raise SkyError(
            "sky subtraction needs either a boolean sky_fiber(spectrum) variable marking the rows "
            "that see blank sky, or a sky(exposure, wavelength) spectrum (optionally with "
            "sky_ivar); this RSS has neither. Most pipelines deliver sky-subtracted RSS: then "
            "leave sky subtraction off"
        )

    work = rss[[v for v in (*_RSS, *SKY_VARIABLES) if v in rss.variables]]
    kwargs = {
        "n_exp": n_exp,
        "method": method,
        "bad_bits": int(bad_bits),
        "use_spectrum": source == "sky spectrum",
    }
    if work["flux"].chunks is None:  # numpy-backed: one block
        result = _subtract_dataset(work, **kwargs)
    else:
        work = work.chunk({d: -1 for d in ("spectrum", "exposure") if d in work.dims})
        result = xr.map_blocks(
            _subtract_dataset, work, kwargs=kwargs, template=_template(work, n_exp)
        )

    out = rss.copy()
    for var in ("flux", "ivar", "mask"):
        out[var] = result[var].assign_attrs(rss[var].attrs)
    out[SKY] = result[SKY].assign_attrs(
        {"long_name": f"sky spectrum subtracted ({source})", **_units(rss)}
    )
    out[SKY_IVAR] = result[SKY_IVAR].assign_attrs(
        {"long_name": "inverse variance of sky (0 = undefined)"}
    )
    record = {
        "action": "sky subtraction",
        "source": source,
        "method": method,
        **detail,
        "variance": "1/ivar_new = 1/ivar + var_sky",
        "undefined_sky": "samples flagged RSS_NOSKY with ivar = 0",
    }
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
    out.attrs[ATTR_SKY] = text
    history = str(rss.attrs.get("history", ""))
    out.attrs["history"] = (history + "\n" if history else "") + f"sky subtraction: {text}"
    return out


def sky_record(ds: xr.Dataset) -> dict | None:
    """The provenance record left by :func:`subtract_sky` (None if the sky was not subtracted)."""
    text = ds.attrs.get(ATTR_SKY)
    return None if text is None else json.loads(text)


def _units(rss: xr.Dataset) -> dict[str, str]:
    units = rss["flux"].attrs.get("units")
    return {"units": units} if units else {}


def _check_dims(rss: xr.Dataset, name: str, dims: tuple[str, ...]) -> None:
    if rss[name].dims != dims:
        raise SkyError(f"{name} must have dims {dims}, found {rss[name].dims}")


def _template(work: xr.Dataset, n_exp: int) -> xr.Dataset:
    wchunks = work["flux"].chunks[1]
    lazy = da.zeros((n_exp, work.sizes["wavelength"]), dtype=np.float64, chunks=(n_exp, wchunks))
    return xr.Dataset(
        {
            "flux": work["flux"],
            "ivar": work["ivar"],
            "mask": work["mask"],
            SKY: (("exposure", "wavelength"), lazy),
            SKY_IVAR: (("exposure", "wavelength"), lazy),
        },
        coords=work.coords,
    )


def _subtract_dataset(
    block: xr.Dataset, *, n_exp: int, method: str, bad_bits: int, use_spectrum: bool
) -> xr.Dataset:
    """One wavelength block (all spectra, all exposures), numpy in and out."""
    flux = np.asarray(block["flux"].values)
    ivar = np.asarray(block["ivar"].values)
    mask = np.asarray(block["mask"].values)
    eidx = np.asarray(block["exposure_index"].values, dtype=np.int64)
    f = flux.astype(np.float64)
    iv = ivar.astype(np.float64)
    if use_spectrum:
        sky = np.asarray(block[SKY].values, dtype=np.float64)
        if SKY_IVAR in block:
            sky_iv = np.asarray(block[SKY_IVAR].values, dtype=np.float64)
            with np.errstate(divide="ignore"):
                var = np.where(sky_iv > 0, 1.0 / sky_iv, np.inf)
        else:
            var = np.zeros_like(sky)
    else:
        sky_fiber = np.asarray(block[SKY_FIBER].values).astype(bool)
        sky, var = _estimate(f, iv, mask, eidx, sky_fiber, n_exp, method, bad_bits)
    defined = np.isfinite(sky) & np.isfinite(var)
    d = defined[eidx]  # (n_spec, n_chan)
    s = np.where(defined, sky, 0.0)[eidx]
    v = np.where(defined, var, 0.0)[eidx]
    new_flux = np.where(d, f - s, f).astype(flux.dtype)
    new_ivar = np.where(d, iv / (1.0 + iv * v), 0.0).astype(ivar.dtype)
    new_mask = np.where(d, mask, mask | np.asarray(RSS_NOSKY, dtype=mask.dtype)).astype(mask.dtype)
    with np.errstate(divide="ignore"):
        sky_ivar = np.where(defined & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    sky_ivar = np.where(defined & (var == 0), np.inf, sky_ivar)  # noise-free sky
    dims = ("spectrum", "wavelength")
    return xr.Dataset(
        {
            "flux": (dims, new_flux),
            "ivar": (dims, new_ivar),
            "mask": (dims, new_mask),
            SKY: (("exposure", "wavelength"), np.where(defined, sky, np.nan)),
            SKY_IVAR: (("exposure", "wavelength"), sky_ivar),
        },
        coords=block.coords,
    )


def _estimate(
    f: np.ndarray,
    iv: np.ndarray,
    mask: np.ndarray,
    eidx: np.ndarray,
    sky_fiber: np.ndarray,
    n_exp: int,
    method: str,
    bad_bits: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-exposure sky (n_exp, n_chan) and its variance from the usable sky-fiber samples (NaN if none)."""
    n_chan = f.shape[1]
    sky = np.full((n_exp, n_chan), np.nan)
    var = np.full((n_exp, n_chan), np.nan)
    usable = (iv > 0) & np.isfinite(f) & np.isfinite(iv) & ((mask & bad_bits) == 0)
    for e in range(n_exp):
        rows = sky_fiber & (eidx == e)
        ok = usable[rows]
        n = ok.sum(axis=0)
        has = n > 0
        if method == "mean":
            w = np.where(ok, iv[rows], 0.0)
            sw = w.sum(axis=0)
            swf = (w * np.where(ok, f[rows], 0.0)).sum(axis=0)
            sky[e, has] = swf[has] / sw[has]
            var[e, has] = 1.0 / sw[has]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels -> NaN, handled
                sky[e] = np.nanmedian(np.where(ok, f[rows], np.nan), axis=0)
            sum_var = np.where(ok, 1.0 / np.where(ok, iv[rows], 1.0), 0.0).sum(axis=0)
            var[e, has] = 0.5 * np.pi * sum_var[has] / n[has] ** 2
    return sky, var
