"""The simulator's truth (scene and observation) as a ParameterStore in the RSS attrs.

Keys: ``observation.*`` (seed, seeing, dithers, DAR angles, dead fibers, noise scale...) and one group
per source: a point source under ``source.*`` and a binary under ``binary.*`` with the fields of the
fit specs (:mod:`crrxr.params.fit_specs`: ``source.x_arcsec``, ``source.flux``, ...,
``binary.separation_arcsec``, ``binary.position_angle_deg``, ``binary.contrast``,
``binary.flux_total`` and the derived ``binary.secondary_x_arcsec``, ``binary.flux_primary``, ...)
plus ``*.spectral_index``; other kinds (``galaxy``) under their name; a second source of the same
group is ``source_2`` ... Stored with the parameter codec under the attrs
``crrxr_truth_paramspec`` / ``crrxr_truth`` (not ``crrxr_params``, which holds reconstruction
parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from crrxr.io import names as N
from crrxr.params import ParameterStore, ParamField, ParamSpec, refresh_derived
from crrxr.params.codec import PARAMS_ATTR, SPEC_ATTR
from crrxr.params.fit_specs import binary_resolver, binary_spec, source_resolver, source_spec

TRUTH_SPEC_NAME = "simulation_truth"
TRUTH_SYSTEM_ID = "crrxr.simulate.truth"
FLUX_DENSITY_UNITS = "1e-17 erg / (s cm2 Angstrom)"

# source attribute -> (units, key suffix)
_UNITS: dict[str, tuple[str, str]] = {
    "x": ("arcsec", "_arcsec"),
    "y": ("arcsec", "_arcsec"),
    "secondary_x": ("arcsec", "_arcsec"),
    "secondary_y": ("arcsec", "_arcsec"),
    "separation": ("arcsec", "_arcsec"),
    "r_eff": ("arcsec", "_arcsec"),
    "ring_radius": ("arcsec", "_arcsec"),
    "ring_width": ("arcsec", "_arcsec"),
    "line_scale": ("arcsec", "_arcsec"),
    "position_angle": ("deg", "_deg"),
    "flux": (FLUX_DENSITY_UNITS, ""),
    "line_flux": ("1e-17 erg / (s cm2)", ""),
    "line_rest": ("Angstrom", "_angstrom"),
    "line_center": ("Angstrom", "_angstrom"),
    "line_sigma": ("Angstrom", "_angstrom"),
    "sigma_kms": ("km / s", ""),
}


def _field(key: str, value: Any, units: str = "", doc: str = "") -> tuple[ParamField, Any]:
    if isinstance(value, np.ndarray):
        dtype = "int64" if value.dtype.kind in "iu" else "float64"
        value = value.astype(dtype)
        return ParamField(key, units=units, dtype=dtype, shape=(-1,), default=value, doc=doc), value
    if isinstance(value, bool | np.bool_):
        return ParamField(key, units=units, dtype="bool", default=bool(value), doc=doc), bool(value)
    if isinstance(value, int | np.integer):
        return ParamField(key, units=units, dtype="int64", default=int(value), doc=doc), int(value)
    if isinstance(value, float | np.floating):
        return ParamField(key, units=units, dtype="float64", default=float(value), doc=doc), float(
            value
        )
    return ParamField(key, units=units, dtype="str", default=str(value), doc=doc), str(value)


# scene kinds whose truth is written with the fit specs' fields (crrxr.params.fit_specs)
_FIT_GROUP = {"point": "source", "binary": "binary"}


def _fit_entries(kind: str, prefix: str, info: Mapping[str, Any]) -> list[tuple[ParamField, Any]]:
    """Truth of a point source or binary under the keys (and units, bounds) of its fit spec; the
    fit spec's derived keys (secondary position, the two fluxes) resolved by its resolver."""
    if kind == "point":
        spec, resolver = source_spec(), source_resolver()
        values = {
            "source.x_arcsec": float(info["x"]),
            "source.y_arcsec": float(info["y"]),
            "source.flux": float(info["flux"]),
            "source.background": 0.0,
        }
        extra = {"spectral_index": info["spectral_index"]}
    else:
        spec, resolver = binary_spec(), binary_resolver()
        values = {
            "binary.x_arcsec": float(info["x"]),
            "binary.y_arcsec": float(info["y"]),
            "binary.separation_arcsec": float(info["separation"]),
            "binary.position_angle_deg": float(info["position_angle"]),
            "binary.contrast": float(info["contrast"]),
            "binary.flux_total": float(info["flux"]) * (1.0 + float(info["contrast"])),
        }
        extra = {
            "spectral_index": info["spectral_index"],
            "secondary_spectral_index": info["secondary_spectral_index"],
        }
    full = refresh_derived(ParameterStore(values), spec, resolver)
    group = spec.keys()[0].split(".")[0]
    out = []
    for f in spec:
        key = f.key.replace(f"{group}.", f"{prefix}.", 1)
        # derived fit keys are plain recorded values in the truth
        field = ParamField(
            key, f.units, dtype=f.dtype, default=full[f.key], bounds=f.bounds, doc=f.doc
        )
        out.append((field, full[f.key]))
    for name, value in extra.items():
        out.append(
            _field(f"{prefix}.{name}", float(value), "", "f_lambda ~ (lambda / 5400 A)^index")
        )
    return out


def truth_store(
    scenes: list[Any], obs: Any, settings: Mapping[str, Any], dead_fiber_ids: np.ndarray, model: Any
) -> tuple[ParamSpec, ParameterStore]:
    """(spec, store) describing what was simulated."""
    entries: list[tuple[ParamField, Any]] = []
    for name, value in settings.items():
        if value is not None:
            entries.append(_field(f"observation.{name}", value))
    entries += [
        _field("observation.n_fibers", obs.n_fibers),
        _field("observation.n_exposures", obs.n_exposures),
        _field("observation.fiber_radius_arcsec", float(obs.kernel.fiber_radius), "arcsec"),
        _field(
            "observation.fiber_x_arcsec", obs.fiber_x, "arcsec", "fiber centres in the bundle frame"
        ),
        _field("observation.fiber_y_arcsec", obs.fiber_y, "arcsec"),
        _field(
            "observation.dither_x_arcsec",
            obs.dither_x,
            "arcsec",
            "per-exposure offset incl. jitter",
        ),
        _field("observation.dither_y_arcsec", obs.dither_y, "arcsec"),
        _field(
            "observation.seeing_ref_arcsec", obs.seeing_ref, "arcsec", "per-exposure FWHM at 5400 A"
        ),
        _field(
            "observation.dar_pa_deg",
            obs.dar_pa,
            "deg",
            "direction of the blue-ward DAR shift, E of N",
        ),
        _field(
            "observation.dead_fibers",
            np.asarray(dead_fiber_ids, dtype=np.int64),
            "",
            "dead fiber ids",
        ),
    ]
    counts: dict[str, int] = {}
    for scene in scenes:
        info = dict(scene.truth())
        kind = str(info.pop("kind"))
        group = _FIT_GROUP.get(kind, kind)
        counts[group] = counts.get(group, 0) + 1
        prefix = group if counts[group] == 1 else f"{group}_{counts[group]}"
        if kind in _FIT_GROUP:
            entries += _fit_entries(kind, prefix, info)
            continue
        for attr, value in info.items():
            units, suffix = _UNITS.get(attr, ("", ""))
            entries.append(_field(f"{prefix}.{attr}{suffix}", value, units))
    if model.extended is not None:
        entries.append(
            _field(
                "observation.extended_grid_flux_fraction",
                model.extended.captured,
                "",
                "fraction of each extended component's flux on the simulation grid",
            )
        )
        entries.append(_field("observation.extended_pixel_arcsec", model.extended.pixel, "arcsec"))
    spec = ParamSpec([f for f, _ in entries], name=TRUTH_SPEC_NAME, system_id=TRUTH_SYSTEM_ID)
    store = ParameterStore({f.key: v for f, v in entries})
    return spec, store


def truth_attrs(
    scenes: list[Any], obs: Any, settings: Mapping[str, Any], dead_fiber_ids: np.ndarray, model: Any
) -> dict[str, str]:
    """The two attrs ``crrxr_truth_paramspec``/``crrxr_truth`` (canonical JSON strings)."""
    spec, store = truth_store(scenes, obs, settings, dead_fiber_ids, model)
    attrs = store.to_attrs(spec)
    return {N.ATTR_TRUTH_SPEC: attrs[SPEC_ATTR], N.ATTR_TRUTH: attrs[PARAMS_ATTR]}


def read_truth(ds_or_attrs: Any) -> ParameterStore:
    """The truth ParameterStore of a simulated RSS (a Dataset or its attrs)."""
    attrs = getattr(ds_or_attrs, "attrs", ds_or_attrs)
    if N.ATTR_TRUTH not in attrs or N.ATTR_TRUTH_SPEC not in attrs:
        raise ValueError(
            f"no simulation truth in these attrs (need {N.ATTR_TRUTH_SPEC!r} and {N.ATTR_TRUTH!r}); "
            "was the RSS written by crrxr simulate?"
        )
    _, store = ParameterStore.from_attrs(
        {SPEC_ATTR: attrs[N.ATTR_TRUTH_SPEC], PARAMS_ATTR: attrs[N.ATTR_TRUTH]}
    )
    return store
