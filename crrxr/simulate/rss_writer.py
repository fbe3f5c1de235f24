"""``simulate_rss``: a synthetic RSS following DESIGN.md section 2, streamed to Zarr chunk by chunk.

The store is laid out first (``to_zarr(compute=False)`` on a lazy template: metadata, coordinates and
the per-spectrum/per-exposure variables), then each wavelength chunk is computed and written into its
region, so memory stays at a few chunks whatever the size. Everything is written under a temporary
sibling path renamed on success (:func:`crrxr.io.atomic.atomic_output`): a failed run leaves nothing.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

import crrxr
from crrxr.io import names as N
from crrxr.io.atomic import atomic_output
from crrxr.io.rss import open_rss

from .geometry import MANGA_FIBER_PITCH, dither_offsets, hex_bundle, lenslet_array, lenslet_radius
from .kernels import KernelModel
from .noise import NoiseModel
from .observe import (
    STREAM_DAR,
    STREAM_DEAD,
    STREAM_JITTER,
    STREAM_SEEING,
    FluxModel,
    Observation,
    stream,
)
from .scenes import Scene, make_scene
from .truth import truth_attrs
from .wavegrid import log_wavelength

log = logging.getLogger(__name__)

__all__ = ["build_observation", "simulate_rss"]

MANGA_FIBER_RADIUS = 1.0  # arcsec (2" cores)
DAR_PA_STEP = 8.0  # deg per exposure: the parallactic angle drifts through a sequence


def build_observation(
    *,
    bundle: int | None = 19,
    lenslets: int | None = None,
    lenslet_pitch: float = 0.75,
    fiber_radius: float | None = None,
    exposures: int | None = None,
    seeing: float = 1.19,
    seeing_jitter: float = 0.05,
    jitter: float = 0.05,
    wavelength: np.ndarray,
    dar: bool = True,
    dar_amplitude: float = 1.0,
    dar_pa: Sequence[float] | None = None,
    dar_reference: float = 5000.0,
    kernel: KernelModel | None = None,
    seed: int = 0,
) -> Observation:
    """The :class:`Observation` of a MaNGA bundle (``bundle`` fibers) or a lenslet array (``lenslets``)."""
    if lenslets is not None:
        fx, fy = lenslet_array(int(lenslets), lenslet_pitch)
        radius = lenslet_radius(lenslet_pitch) if fiber_radius is None else fiber_radius
        n_exp = 1 if exposures is None else int(exposures)
    else:
        if bundle is None:
            raise ValueError(
                "give bundle= (fibers per MaNGA bundle) or lenslets= (number of lenslets)"
            )
        fx, fy = hex_bundle(int(bundle), MANGA_FIBER_PITCH)
        radius = MANGA_FIBER_RADIUS if fiber_radius is None else fiber_radius
        n_exp = 9 if exposures is None else int(exposures)
    if n_exp < 1:
        raise ValueError(f"exposures must be >= 1, got {n_exp}")
    if not (np.isfinite(seeing) and seeing > 0):
        raise ValueError(f"seeing must be a positive FWHM in arcsec, got {seeing!r}")
    if not (0 <= seeing_jitter <= 0.3):
        raise ValueError(f"seeing_jitter is a fractional rms in [0, 0.3], got {seeing_jitter!r}")
    if not jitter >= 0:
        raise ValueError(f"jitter must be >= 0 arcsec, got {jitter!r}")
    base = kernel if kernel is not None else KernelModel()
    kernel = KernelModel(
        radius, base.sigma_ratio, base.wing_ratio, base.wing, base.lambda_ref, base.exponent
    )
    dx, dy = dither_offsets(n_exp, jitter=jitter, rng=stream(seed, STREAM_JITTER))
    # Gaussian fractional jitter truncated at 3 sigma (the FWHM stays >= 10% of ``seeing``)
    z = np.clip(stream(seed, STREAM_SEEING).standard_normal(n_exp), -3.0, 3.0)
    seeing_ref = seeing * (1.0 + seeing_jitter * z)
    if dar_pa is None:
        pa = stream(seed, STREAM_DAR).uniform(0.0, 360.0) + DAR_PA_STEP * np.arange(n_exp)
    else:
        pa = np.broadcast_to(np.asarray(dar_pa, dtype=float), (n_exp,)).copy()
    return Observation(
        fiber_x=fx,
        fiber_y=fy,
        wavelength=np.asarray(wavelength, dtype=float),
        dither_x=dx,
        dither_y=dy,
        seeing_ref=seeing_ref,
        dar_pa=np.mod(pa, 360.0),
        dar_amplitude=float(dar_amplitude) if dar else 0.0,
        dar_reference=float(dar_reference),
        kernel=kernel,
    )


def simulate_rss(
    out: str | os.PathLike[str] | None = None,
    *,
    bundle: int | None = 19,
    lenslets: int | None = None,
    lenslet_pitch: float = 0.75,
    fiber_radius: float | None = None,
    exposures: int | None = None,
    seeing: float = 1.19,
    seeing_jitter: float = 0.05,
    jitter: float = 0.05,
    nwave: int | None = None,
    wave_range: tuple[float, float] = (3622.0, 10354.0),
    wavelength: np.ndarray | None = None,
    scene: str | Scene | Sequence[Scene] = "point",
    noise: float | None = None,
    sky_fraction: float = 0.1,
    noise_ref_wavelength: float = 5400.0,
    dead_fibers: int = 0,
    bad_pixel_fraction: float = 0.0,
    dar: bool = True,
    dar_amplitude: float = 1.0,
    dar_pa: Sequence[float] | None = None,
    seed: int = 0,
    wave_chunk: int = 64,
    overwrite: bool = False,
    ifu_ra: float = 180.0,
    ifu_dec: float = 30.0,
    flux_dtype: str = "float32",
    extended_pixel: float = 0.1,
    kernel: KernelModel | None = None,
    lsf_sigma: float | None = None,
    lsf_spread: float = 0.0,
) -> xr.Dataset:
    """Simulate an RSS; write it to the Zarr store ``out`` (returned opened lazily) or, with
    ``out=None``, return it in memory.

    Geometry: ``bundle`` fibers of a MaNGA hex bundle (2" cores, 2.5" pitch; 9 exposures by default) or
    ``lenslets`` contiguous hexagonal lenslets of ``lenslet_pitch`` (fiber radius: the equal-area radius of a hexagonal cell, 1 exposure).
    Exposures: 3-point dither triangle (side 1.44") repeated, plus isotropic Gaussian ``jitter``
    (arcsec rms); seeing FWHM at 5400 A of ``seeing`` x (1 + ``seeing_jitter`` z) per exposure, z ~ N(0, 1)
    truncated at +-3,
    FWHM(lambda) = FWHM_ref (lambda/5400)^-0.2; DAR of ``dar_amplitude`` arcsec between 3600 and
    10000 A along a per-exposure parallactic angle (``dar_pa``, deg E of N; default a random start
    drifting by 8 deg per exposure), zero at 5000 A.
    Wavelengths: ``wavelength`` as given, or ``nwave`` log-spaced channels over ``wave_range``
    (``nwave=None``: MaNGA's Dlog10 = 1e-4, 4563 channels over 3622-10354 A).
    Scene: "point" | "binary" | "galaxy" or scene objects (:mod:`crrxr.simulate.scenes`).
    Noise: ``noise`` = S/N of the brightest fiber at ``noise_ref_wavelength`` (see
    :mod:`crrxr.simulate.noise`) or None; ``dead_fibers`` fibers dead in every exposure
    (RSS_DEADFIBER, ivar 0, flux 0); a ``bad_pixel_fraction`` of samples RSS_REJECT (ivar 0, spiked).
    Reproducible: the same ``seed`` gives the same values bitwise whatever ``wave_chunk``.
    LSF: with ``lsf_sigma`` (Angstrom at 5400 A) an ``lsf_sigma`` variable is written, see
    :func:`simulated_lsf_sigma` (``lsf_spread``: fiber-to-fiber fraction; the flux is not convolved).
    Flux units 1e-17 erg/s/cm^2/A per fiber. The truth (scene and observation) is in the attrs
    ``crrxr_truth_paramspec``/``crrxr_truth`` (read it with :func:`crrxr.simulate.read_truth`).
    """
    if wavelength is None:
        wavelength = log_wavelength(nwave, wave_range)
    wavelength = np.asarray(wavelength, dtype=float)
    if (
        wavelength.ndim != 1
        or wavelength.size < 1
        or not np.isfinite(wavelength).all()
        or (np.diff(wavelength) <= 0).any()
        or wavelength[0] <= 0
    ):
        raise ValueError(
            "wavelength must be a 1-D, finite, positive, strictly increasing array (Angstrom)"
        )
    if int(wave_chunk) < 1:
        raise ValueError(f"wave_chunk must be >= 1 channel, got {wave_chunk}")
    wave_chunk = min(int(wave_chunk), wavelength.size)
    if np.dtype(flux_dtype) not in (np.dtype("f4"), np.dtype("f8")):
        raise ValueError(f"flux_dtype must be float32 or float64, got {flux_dtype!r}")
    obs = build_observation(
        bundle=bundle,
        lenslets=lenslets,
        lenslet_pitch=lenslet_pitch,
        fiber_radius=fiber_radius,
        exposures=exposures,
        seeing=seeing,
        seeing_jitter=seeing_jitter,
        jitter=jitter,
        wavelength=wavelength,
        dar=dar,
        dar_amplitude=dar_amplitude,
        dar_pa=dar_pa,
        kernel=kernel,
        seed=seed,
    )
    scenes = make_scene(scene)
    model = FluxModel(obs, scenes, pixel=extended_pixel)

    dead_fiber_ids = np.array([], dtype=int)
    if dead_fibers:
        if not 0 <= dead_fibers <= obs.n_fibers:
            raise ValueError(f"dead_fibers must be between 0 and {obs.n_fibers}, got {dead_fibers}")
        dead_fiber_ids = np.sort(
            stream(seed, STREAM_DEAD).choice(obs.n_fibers, dead_fibers, replace=False)
        )
    dead = np.isin(obs.fiber_id, dead_fiber_ids)
    k_ref = int(np.argmin(np.abs(wavelength - noise_ref_wavelength)))
    ref_flux = model.block(k_ref, k_ref + 1)[0][:, 0]
    f_ref = float(ref_flux[~dead].max()) if (~dead).any() else 0.0
    noise_model = NoiseModel(
        seed=seed,
        snr=noise,
        f_ref=f_ref,
        sky_fraction=sky_fraction,
        bad_pixel_fraction=bad_pixel_fraction,
        dead_spectra=dead,
    )

    settings: dict[str, Any] = {
        "seed": seed,
        "bundle": None if lenslets is not None else bundle,
        "lenslets": lenslets,
        "lenslet_pitch": lenslet_pitch if lenslets is not None else None,
        "seeing": seeing,
        "seeing_jitter": seeing_jitter,
        "jitter": jitter,
        "dar_amplitude": obs.dar_amplitude,
        "dar_reference": obs.dar_reference,
        "noise_snr": noise,
        "sky_fraction": sky_fraction,
        "noise_ref_wavelength": float(wavelength[k_ref]),
        "f_ref": f_ref,
        "photons_per_unit": noise_model.photons_per_unit,
        "bad_pixel_fraction": bad_pixel_fraction,
    }
    attrs = {
        N.ATTR_RSS_SCHEMA: N.RSS_SCHEMA_ID,
        N.ATTR_IFU_RA: float(ifu_ra),
        N.ATTR_IFU_DEC: float(ifu_dec),
        N.ATTR_FIBER_RADIUS: float(obs.kernel.fiber_radius),
        N.ATTR_HISTORY: f"crrxr {crrxr.__version__} simulate_rss",
        **truth_attrs(scenes, obs, settings, dead_fiber_ids, model),
    }
    template = _template(obs, attrs, wave_chunk, flux_dtype)
    spectral_vars = N.RSS_SPECTRAL_VARS
    if lsf_sigma is not None:
        spectral_vars += (N.LSF_SIGMA,)
        template[N.LSF_SIGMA] = template[N.FLUX].astype("f8")
        template[N.LSF_SIGMA].attrs = {"units": "Angstrom", "long_name": "simulated LSF sigma"}

    def blocks():
        for k0 in range(0, wavelength.size, wave_chunk):
            k1 = min(k0 + wave_chunk, wavelength.size)
            clean, x, y = model.block(k0, k1)
            flux, ivar, mask = noise_model.apply(clean, k0)
            yield (
                k0,
                k1,
                {
                    N.FLUX: flux.astype(flux_dtype),
                    N.IVAR: ivar.astype(flux_dtype),
                    N.MASK: mask,
                    N.XPOS: x,
                    N.YPOS: y,
                    **(
                        {}
                        if lsf_sigma is None
                        else {N.LSF_SIGMA: simulated_lsf_sigma(obs, k0, k1, lsf_sigma, lsf_spread)}
                    ),
                },
            )

    if out is None:
        parts = list(blocks())
        ds = template.copy()
        for name in spectral_vars:
            ds[name] = (
                ds[name].dims,
                np.concatenate([p[2][name] for p in parts], axis=1),
                ds[name].attrs,
            )
        return open_rss(ds)

    encoding = {name: {"chunks": (obs.n_spectra, wave_chunk)} for name in spectral_vars}
    with atomic_output(out, overwrite=overwrite) as tmp:
        template.to_zarr(tmp, mode="w-", compute=False, consolidated=False, encoding=encoding)
        for k0, k1, arrays in blocks():
            region = xr.Dataset(
                {name: ((N.DIM_SPECTRUM, N.DIM_WAVELENGTH), arr) for name, arr in arrays.items()}
            )
            region.to_zarr(tmp, region={N.DIM_WAVELENGTH: slice(k0, k1)}, consolidated=False)
            log.debug("wrote channels %d-%d", k0, k1)
        # Consolidated metadata lets a plain xr.open_zarr(out) open the store fast and without
        # warnings; zarr v3 warns that it is an extension of the spec, which is fine here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            zarr.consolidate_metadata(tmp)
    log.info("simulated %d spectra x %d channels -> %s", obs.n_spectra, wavelength.size, out)
    return open_rss(out)


def simulated_lsf_sigma(
    obs: Observation, k0: int, k1: int, sigma: float, spread: float
) -> np.ndarray:
    """LSF sigma (Angstrom), (n_spectra, k1 - k0): sigma (1 + spread u_f) sqrt(lambda / 5400 A),
    u_f running linearly from -1 to +1 over the fibers (so fibers differ by up to 2 spread)."""
    n = obs.n_fibers
    u = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    per_fiber = sigma * (1.0 + spread * u[obs.fiber_id])
    return per_fiber[:, None] * np.sqrt(obs.wavelength[k0:k1] / 5400.0)[None, :]


def _template(
    obs: Observation, attrs: dict[str, Any], wave_chunk: int, flux_dtype: str
) -> xr.Dataset:
    """The lazy RSS Dataset: small variables in memory, spectral ones as dask zeros chunked by wavelength."""
    shape = (obs.n_spectra, obs.wavelength.size)
    chunks = (obs.n_spectra, wave_chunk)
    sw = (N.DIM_SPECTRUM, N.DIM_WAVELENGTH)

    def lazy(dtype: str) -> da.Array:
        return da.zeros(shape, chunks=chunks, dtype=dtype)

    spec = N.RSS_SPECS
    data_vars = {
        N.FLUX: (
            sw,
            lazy(flux_dtype),
            {"units": N.FLUX_UNITS, "long_name": spec[N.FLUX].long_name},
        ),
        N.IVAR: (
            sw,
            lazy(flux_dtype),
            {"units": N.IVAR_UNITS, "long_name": spec[N.IVAR].long_name},
        ),
        N.MASK: (
            sw,
            lazy("u4"),
            {
                "long_name": spec[N.MASK].long_name,
                "flag_masks": [1, 2, 4, 8, 16],
                "flag_meanings": "NODATA DEADFIBER REJECT NOSKY SATURATED",
            },
        ),
        N.XPOS: (sw, lazy("f8"), {"units": "arcsec", "long_name": spec[N.XPOS].long_name}),
        N.YPOS: (sw, lazy("f8"), {"units": "arcsec", "long_name": spec[N.YPOS].long_name}),
        N.EXPOSURE_INDEX: (
            (N.DIM_SPECTRUM,),
            obs.exposure_index.astype("i8"),
            {"long_name": spec[N.EXPOSURE_INDEX].long_name},
        ),
        N.SEEING_FWHM: (
            (N.DIM_EXPOSURE,),
            obs.seeing_ref.astype("f8"),
            {
                "units": "arcsec",
                "long_name": spec[N.SEEING_FWHM].long_name,
                "reference_wavelength_angstrom": obs.kernel.lambda_ref,
            },
        ),
    }
    coords = {
        N.WAVELENGTH: (
            (N.DIM_WAVELENGTH,),
            obs.wavelength,
            {"units": "Angstrom", "long_name": "vacuum wavelength"},
        ),
        N.EXPOSURE: (
            (N.DIM_EXPOSURE,),
            np.arange(1, obs.n_exposures + 1, dtype="i8"),
            {"long_name": "exposure id"},
        ),
        N.SPECTRUM: (
            (N.DIM_SPECTRUM,),
            np.arange(obs.n_spectra, dtype="i8"),
            {"long_name": spec[N.SPECTRUM].long_name},
        ),
        N.FIBER: (
            (N.DIM_SPECTRUM,),
            obs.fiber_id.astype("i8"),
            {"long_name": spec[N.FIBER].long_name},
        ),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
