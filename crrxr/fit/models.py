"""The fitted models and the data they are fitted to.

Models (keys from :mod:`crrxr.params.fit_specs`): ``psf`` (the kernel model drawn directly on the
image: the reconstructed PSF's shape), ``source`` (one point source + flat background) and ``binary``.
Source and binary predict per-fiber fluxes (:func:`crrxr.core.response.point_source_fluxes`); on a
cube they are mapped through the channel's own weights (the reconstruction's response).

Data (:class:`FitData`): values at data points, a prediction function of a parameter store and a
whitening operator T with T^T T = C^+ (C: the data covariance), so chi^2 = |T (d - m)|^2.
Cube route: C = W N W^T over the unmasked spaxels, inverted on its range (its rank is at most the
number of samples); RSS route: the fibers' own independent variances.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from crrxr.core.config import CoreConfig
from crrxr.core.kernel import kernel_fwhm, radial_kernel
from crrxr.core.masks import DONOTUSE
from crrxr.core.response import point_source_fluxes
from crrxr.core.weights import ChannelWeights
from crrxr.params import DerivedResolver, ParameterStore, ParamSpec
from crrxr.params.fit_specs import (
    binary_resolver,
    binary_spec,
    psf_resolver,
    source_resolver,
    source_spec,
)

#: relative eigenvalue cut of the cube covariance (below: numerically zero in float64)
COV_RTOL = 1e-13
#: covariance modes are used only where their noise variance exceeds this x the rounding variance
ROUNDING_MARGIN = 1e4
KINDS = ("psf", "source", "binary")


@dataclass(frozen=True)
class Samples:
    """Per-sample arrays of one channel: positions (arcsec), seeing FWHM (arcsec), flux, ivar."""

    x: np.ndarray
    y: np.ndarray
    fwhm: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray


@dataclass
class FitData:
    """What a fit sees. values (n,), px/py (n,) data-point positions (arcsec), predict(store) ->
    (n,), whiten(r) -> (k,) with chi^2 = |whiten(d - m)|^2, and the image peak (for psf.strehl)."""

    values: np.ndarray
    px: np.ndarray
    py: np.ndarray
    predict: Callable[[ParameterStore], np.ndarray]
    whiten: Callable[[np.ndarray], np.ndarray]
    n_eff: int
    peak: float


def model_spec(kind: str) -> tuple[ParamSpec, DerivedResolver]:
    """(spec, resolver) of a model kind; the resolver of ``psf`` needs a config: see :func:`psf_tools`."""
    if kind == "source":
        return source_spec(), source_resolver()
    if kind == "binary":
        return binary_spec(), binary_resolver()
    if kind == "psf":
        return psf_tools(CoreConfig())[0:2]
    raise ValueError(f"unknown fit model {kind!r}; use one of {KINDS}")


def psf_tools(config: CoreConfig, pixel_scale: float | None = None):
    """(spec, resolver) of the PSF model for a reconstruction config."""
    model = (config.fiber_radius, config.sigma_ratio, config.wing_ratio, config.wing)
    p2 = (pixel_scale or config.pixel_scale) ** 2

    def fwhm(seeing: float) -> float:
        return kernel_fwhm(seeing, *model)

    def peak(seeing: float) -> float:
        return p2 * float(radial_kernel(np.array(0.0), seeing, *model))

    from crrxr.params.fit_specs import psf_spec

    return psf_spec(), psf_resolver(fwhm, peak)


def sources_of(kind: str, p: ParameterStore) -> tuple[list[tuple[float, float, float]], float]:
    """([(x, y, flux)], background) of a source or binary store."""
    if kind == "source":
        return [(p["source.x_arcsec"], p["source.y_arcsec"], p["source.flux"])], p[
            "source.background"
        ]
    c, ft = p["binary.contrast"], p["binary.flux_total"]
    x1, y1 = p["binary.x_arcsec"], p["binary.y_arcsec"]
    pa = np.deg2rad(p["binary.position_angle_deg"])
    sep = p["binary.separation_arcsec"]
    x2, y2 = x1 - sep * np.sin(pa), y1 + sep * np.cos(pa)
    return [(x1, y1, ft / (1 + c)), (float(x2), float(y2), ft * c / (1 + c))], 0.0


def _fiber_model(kind: str, config: CoreConfig, terms: Sequence[Samples]):
    def fluxes(p: ParameterStore) -> list[np.ndarray]:
        src, bg = sources_of(kind, p)
        return [point_source_fluxes(t.x, t.y, t.fwhm, src, config, bg) for t in terms]

    return fluxes


def rss_data(kind: str, config: CoreConfig, terms: Sequence[Samples]) -> FitData:
    """Fibers of one or more channels (a joint fit when several); only usable samples enter."""
    if kind == "psf":
        raise ValueError("the psf model is fitted to cube images only (use --data cube)")
    fluxes = _fiber_model(kind, config, terms)
    values = np.concatenate([t.flux for t in terms])
    sig = np.sqrt(np.concatenate([t.ivar for t in terms]))

    def predict(p: ParameterStore) -> np.ndarray:
        return np.concatenate(fluxes(p))

    return FitData(
        values,
        np.concatenate([t.x for t in terms]),
        np.concatenate([t.y for t in terms]),
        predict,
        lambda r: r * sig,
        int(values.size),
        float(values.max()) if values.size else np.nan,
    )


def used_pixels(
    mask: np.ndarray, image: np.ndarray, weights: Sequence[ChannelWeights]
) -> np.ndarray:
    """Flat indices of the spaxels a cube fit uses: solved in every channel, not DONOTUSE, finite."""
    ok = ((np.asarray(mask) & DONOTUSE) == 0).ravel() & np.isfinite(np.asarray(image)).ravel()
    for w in weights:
        solved = np.zeros(ok.size, dtype=bool)
        solved[w.pixels] = True
        ok &= solved
    return np.flatnonzero(ok)


def cube_data(
    kind: str,
    config: CoreConfig,
    grid,
    image: np.ndarray,
    pixels: np.ndarray,
    weights: Sequence[ChannelWeights],
    terms: Sequence[Samples],
    storage_dtype: np.dtype | type = np.float32,
) -> FitData:
    """The mean image of the channels of ``weights`` (one or a bin) at the spaxels ``pixels``.

    Its covariance is (1/n^2) sum_c W_c N_c W_c^T (noise independent between channels), inverted
    on the modes whose noise dominates the rounding of values stored as ``storage_dtype`` (the
    cube's flux dtype) by :data:`ROUNDING_MARGIN`; the model
    of a source is the mean of W_c f_c(theta) (source/binary) or the kernel image (psf).
    """
    n = len(weights)
    mats = [w.full_matrix()[pixels][:, w.samples].tocsr() / n for w in weights]
    blocks = [
        (m.multiply(np.sqrt(1.0 / t.ivar[w.samples])[None, :])).toarray()
        for m, t, w in zip(mats, terms, weights)
    ]
    B = np.hstack(blocks)
    values = np.asarray(image, dtype=float).ravel()[pixels]
    # W N W^T has rank <= n_samples and modes far below the noise are set by the rounding of the
    # stored values (one unit in the last place of ``storage_dtype``): keep the modes whose noise
    # variance exceeds ROUNDING_MARGIN x the largest rounding variance, invert C on those
    ulp = np.spacing(np.abs(values).astype(storage_dtype)).astype(float)
    floor = ROUNDING_MARGIN * float(np.max(ulp, initial=0.0)) ** 2 / (12.0 * n)
    w, E = np.linalg.eigh(B @ B.T)
    keep = w > max(COV_RTOL * (w[-1] if w.size else 0.0), floor)
    T = (E[:, keep] / np.sqrt(w[keep])).T
    xx, yy = grid.centres()
    px, py = xx[pixels], yy[pixels]
    if kind == "psf":
        args = (config.fiber_radius, config.sigma_ratio, config.wing_ratio, config.wing)
        p2 = grid.pixel_scale**2

        def predict(p: ParameterStore) -> np.ndarray:
            r = np.hypot(px - p["psf.x_arcsec"], py - p["psf.y_arcsec"])
            return p["psf.amplitude"] * p2 * radial_kernel(r, p["psf.seeing_fwhm_arcsec"], *args)

    else:
        samples = [
            Samples(t.x[w.samples], t.y[w.samples], t.fwhm[w.samples], t.flux, t.ivar)
            for t, w in zip(terms, weights)
        ]
        fluxes = _fiber_model(kind, config, samples)

        def predict(p: ParameterStore) -> np.ndarray:
            return sum(m @ f for m, f in zip(mats, fluxes(p)))

    return FitData(values, px, py, predict, lambda r: T @ r, int(keep.sum()), float(values.max()))
