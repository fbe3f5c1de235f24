"""From user inputs (profile, config file, ``--set``, a ParameterStore) to what the engine needs:
validated parameters, the core config, the grid, parameter attrs and their fingerprint."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from crrxr.core.config import CoreConfig
from crrxr.core.grid import Grid
from crrxr.engine.plan import MAX_PIXELS, PlanError
from crrxr.io import open_rss as _open_rss
from crrxr.io.names import ATTR_FIBER_RADIUS
from crrxr.params import (
    ParameterStore,
    load_profile,
    parse_set_options,
    reconstruction_spec,
)
from crrxr.params.codec import PARAMS_ATTR
from crrxr.params.profiles import flatten_keys, read_yaml

log = logging.getLogger(__name__)


def open_rss(path: str) -> xr.Dataset:
    """The RSS at ``path``, lazily opened and validated (:func:`crrxr.io.open_rss`)."""
    return _open_rss(path)


def resolve_params(
    params: ParameterStore | Mapping[str, Any] | None = None,
    *,
    method: str | None = None,
    profile: str | None = None,
    config: str | os.PathLike | None = None,
    overrides: list[str] | Mapping[str, Any] | None = None,
    rss_attrs: Mapping[str, Any] | None = None,
) -> ParameterStore:
    """Primitive parameters: defaults <- ``profile`` <- ``config`` YAML <- ``params`` <- ``overrides``
    (``--set k=v`` strings or a mapping) <- ``method``. A full :class:`ParameterStore` given as
    ``params`` is used as the base instead of a profile. Derived keys are dropped (recomputed).

    ``rss_attrs``: the RSS's attrs. Where it records the fiber/lenslet top-hat radius
    (``fiber_radius_arcsec``, written by ``crrxr simulate``) and neither a profile nor an explicit value
    sets ``kernel.fiber_radius_arcsec``, the RSS's radius is used, so a lenslet RSS reconstructs with
    its own kernel without a profile; an explicit value that differs from it is kept, with a warning.
    """
    spec = reconstruction_spec()
    layers: dict[str, Any] = {}
    if config is not None:
        if profile is None:
            profile = os.fspath(config)
        else:
            _, data = read_yaml(config)  # strict: no aliases, no key given twice
            base = data.pop("profile", None)
            if base is not None and str(base) != str(profile):
                raise ValueError(
                    f"{config} names the base profile {base!r} but --profile {profile!r} "
                    "was given too; keep one of them"
                )
            data.pop("description", None)
            layers.update(flatten_keys(data, str(config)))
    if isinstance(params, ParameterStore):
        base = {k: v for k, v in params.items() if k in spec and not spec[k].is_derived}
        if profile is not None:
            raise ValueError("give either a ParameterStore as params or a profile, not both")
        layers = {**base, **layers}
    elif params is not None:
        layers.update(flatten_keys(dict(params), "params"))
    if overrides:
        if isinstance(overrides, Mapping):
            layers.update(flatten_keys(dict(overrides), "overrides"))
        else:
            layers.update(parse_set_options(list(overrides), spec))
    if method is not None:
        layers["method"] = method
    store = load_profile(profile, overrides=layers or None, spec=spec)
    return _apply_rss_fiber_radius(
        store,
        rss_attrs,
        explicit=profile is not None or isinstance(params, ParameterStore) or RADIUS_KEY in layers,
    )


RADIUS_KEY = "kernel.fiber_radius_arcsec"


def _apply_rss_fiber_radius(
    store: ParameterStore, rss_attrs: Mapping[str, Any] | None, explicit: bool
) -> ParameterStore:
    """Take the RSS's recorded top-hat radius where nothing set one (see :func:`resolve_params`)."""
    hint = (rss_attrs or {}).get(ATTR_FIBER_RADIUS)
    if hint is None:
        return store
    hint = float(hint)
    if not explicit:
        log.info("using the RSS's fiber radius %.6g arcsec (attr %s)", hint, ATTR_FIBER_RADIUS)
        return store.replace({RADIUS_KEY: hint})
    if not np.isclose(hint, float(store[RADIUS_KEY]), rtol=1e-9, atol=0.0):
        log.warning(
            "%s = %.6g arcsec differs from the RSS's recorded fiber radius %.6g arcsec",
            RADIUS_KEY,
            float(store[RADIUS_KEY]),
            hint,
        )
    return store


def default_wave_chunk() -> int:
    """The spec's default ``engine.wave_chunk``."""
    return int(reconstruction_spec()["engine.wave_chunk"].default)


def core_config(p: Mapping[str, Any]) -> CoreConfig:
    """The plain core config of a parameter store."""
    return CoreConfig(
        method=str(p["method"]),
        pixel_scale=float(p["grid.pixel_scale_arcsec"]),
        lam=float(p["crr.lambda"]),
        sv_floor=float(p["crr.sv_floor"]),
        variant=str(p["crr.variant"]),
        solver=str(p["crr.solver"]),
        select_radius=float(p["crr.select_radius_arcsec"]),
        truncation_radius=float(p["kernel.truncation_radius_arcsec"]),
        fiber_radius=float(p["kernel.fiber_radius_arcsec"]),
        shepard_sigma=float(p["shepard.sigma_arcsec"]),
        shepard_rlim=float(p["shepard.rlim_arcsec"]),
        sigma_ratio=float(p["seeing.sigma_ratio"]),
        wing_ratio=float(p["seeing.wing_ratio"]),
        wing=str(p["seeing.wing_convention"]),
        bad_bits=int(p["mask.bad_bits"]),
        lowcov_threshold=float(p["mask.lowcov_threshold"]),
        deadfiber_share=float(p["mask.deadfiber_share"]),
        reuse_tolerance=float(p["crr.reuse_tolerance"]),
    )


#: Largest grid side (pixels) a build may plan (the plan refuses more than MAX_PIXELS in all).
MAX_GRID_SIDE = int(np.sqrt(MAX_PIXELS)) + 1


def make_grid(rss: xr.Dataset, p: Mapping[str, Any]) -> Grid:
    """The output grid: ``grid.extent_arcsec`` when > 0, else all fiber positions plus the margin
    (odd nside, centred on the IFU centre). Positions are reduced lazily (never loaded whole)."""
    scale = float(p["grid.pixel_scale_arcsec"])
    extent = float(p["grid.extent_arcsec"])
    ext = [rss[v].min().compute().item() for v in ("xpos", "ypos")]
    ext += [rss[v].max().compute().item() for v in ("xpos", "ypos")]
    side = extent if extent > 0 else 2 * (max(map(abs, ext)) + float(p["grid.margin_arcsec"]))
    if not side / scale <= MAX_GRID_SIDE:  # checked before any array of that size exists
        raise PlanError(
            f"grid.pixel_scale_arcsec = {scale:g} arcsec gives about {side / scale:.3g} pixels per "
            f"side over {side:.3g} arcsec (at most {MAX_GRID_SIDE}); use a larger pixel scale "
            "(e.g. 0.5) or a smaller grid.extent_arcsec"
        )
    if extent > 0:
        return Grid.for_extent(scale, extent)
    return Grid.covering(
        np.array(ext[0::2]), np.array(ext[1::2]), scale, float(p["grid.margin_arcsec"])
    )


def count_usable(rss: xr.Dataset, p: Mapping[str, Any]) -> int:
    """Usable samples over the whole RSS (ivar > 0, finite flux, no bad bit), reduced lazily."""
    bad = np.uint32(int(p["mask.bad_bits"]))
    ok = (rss["ivar"] > 0) & np.isfinite(rss["flux"]) & ((rss["mask"] & bad) == 0)
    return int(ok.sum().compute())


def params_attrs(p: ParameterStore) -> dict[str, str]:
    """``crrxr_paramspec`` and ``crrxr_params`` attrs of the primitive parameters."""
    return p.to_attrs(reconstruction_spec())


def params_fingerprint(p: ParameterStore) -> str:
    """SHA-256 of the canonical parameter values (what resume compares)."""
    return values_fingerprint(json.loads(params_attrs(p)[PARAMS_ATTR])["values"])


def values_fingerprint(values: Mapping[str, Any]) -> str:
    """SHA-256 of encoded parameter values (the ``values`` of a ``crrxr_params`` attr)."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def params_diff(old_attrs: Mapping[str, Any], new_attrs: Mapping[str, Any]) -> list[str]:
    """Keys whose encoded values differ between two ``crrxr_params`` attrs (sorted)."""

    def values(a):
        try:
            return json.loads(a[PARAMS_ATTR])["values"]
        except (KeyError, ValueError, TypeError):
            return {}

    old, new = values(old_attrs), values(new_attrs)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def wcs_header(grid: Grid, ra: float | None, dec: float | None) -> dict[str, object]:
    """Celestial WCS of the grid; CRVAL = (0, 0) when the RSS gives no IFU centre."""
    return grid.wcs_header(
        float(ra) if ra is not None else 0.0, float(dec) if dec is not None else 0.0
    )
