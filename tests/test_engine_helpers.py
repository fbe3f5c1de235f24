"""Hand-made RSS Datasets (DESIGN.md section 2) for the engine tests, and a check of the helper."""

from __future__ import annotations

import numpy as np
import xarray as xr

from crrxr.core.kernel import radial_kernel, seeing_at
from crrxr.simulate.geometry import dither_offsets, hex_bundle


def make_rss(
    n_fibers: int = 19,
    n_exp: int = 3,
    n_wave: int = 23,
    seeing: float = 1.19,
    wave=(6100.0, 6250.0),
    noise: float = 0.01,
    jitter: float = 0.05,
    seed: int = 1,
    source_flux: float = 10.0,
    dead=(),
) -> xr.Dataset:
    """A point source at the IFU centre observed through a hexagonal bundle with a dither pattern.

    Flux per fiber = source_flux x fraction of the seeing-convolved source inside the fiber, plus
    Gaussian noise of rms ``noise``; ``dead`` lists (spectrum, channel) samples given ivar 0 and
    the NODATA bit.
    """
    rng = np.random.default_rng(seed)
    fx, fy = hex_bundle(n_fibers)
    dx, dy = dither_offsets(n_exp, jitter=jitter, rng=rng)
    wavelength = np.linspace(wave[0], wave[1], n_wave)
    n_spec = n_fibers * n_exp
    exp_index = np.repeat(np.arange(n_exp), n_fibers)
    fiber = np.tile(np.arange(n_fibers), n_exp)
    seeing_fwhm = seeing * (1.0 + 0.05 * rng.standard_normal(n_exp))
    # tiny DAR-like drift with wavelength so positions differ per channel
    drift = 0.02 * (wavelength - wavelength.mean()) / (wavelength[-1] - wavelength[0] + 1e-9)
    xpos = (fx[fiber] + dx[exp_index])[:, None] + drift[None, :]
    ypos = (fy[fiber] + dy[exp_index])[:, None] + 0.5 * drift[None, :]
    fwhm = seeing_at(seeing_fwhm[exp_index][:, None], wavelength[None, :])
    r = np.hypot(xpos, ypos)
    flux = np.empty((n_spec, n_wave))
    for c in range(n_wave):
        for s in range(n_spec):
            flux[s, c] = source_flux * np.pi * radial_kernel(np.array(r[s, c]), fwhm[s, c])
    flux += noise * rng.standard_normal(flux.shape)
    ivar = np.full(flux.shape, 1.0 / noise**2)
    mask = np.zeros(flux.shape, dtype=np.uint32)
    for s, c in dead:
        ivar[s, c] = 0.0
        mask[s, c] |= 1
    ds = xr.Dataset(
        {
            "flux": (("spectrum", "wavelength"), flux),
            "ivar": (("spectrum", "wavelength"), ivar),
            "mask": (("spectrum", "wavelength"), mask),
            "xpos": (("spectrum", "wavelength"), xpos),
            "ypos": (("spectrum", "wavelength"), ypos),
            "exposure_index": (("spectrum",), exp_index.astype(np.int64)),
            "seeing_fwhm": (("exposure",), seeing_fwhm),
        },
        coords={
            "wavelength": wavelength,
            "exposure": np.arange(n_exp, dtype=np.int64),
            "spectrum": np.arange(n_spec, dtype=np.int64),
            "fiber": ("spectrum", fiber.astype(np.int64)),
        },
        attrs={"ifu_ra": 150.0, "ifu_dec": 2.0},
    )
    for name, units in (
        ("wavelength", "Angstrom"),
        ("xpos", "arcsec"),
        ("ypos", "arcsec"),
        ("seeing_fwhm", "arcsec"),
    ):
        ds[name].attrs["units"] = units
    return ds


def write_rss(path, **kwargs) -> str:
    """Write :func:`make_rss` to a Zarr store chunked along wavelength; returns the path."""
    ds = make_rss(**kwargs)
    ds.chunk({"wavelength": 8}).to_zarr(path, mode="w", consolidated=False, zarr_format=3)
    return str(path)


def test_make_rss_flux_peaks_at_the_centre_fiber():
    ds = make_rss(n_exp=1, noise=1e-6, jitter=0.0)
    centre = int(np.argmin(np.hypot(ds.xpos[:, 0], ds.ypos[:, 0]).values))
    assert int(np.argmax(ds.flux.values[:, 0])) == centre
    # the whole bundle collects most of a point source's flux (fibers cover ~58% of the area)
    assert 0.3 * 10 < float(ds.flux[:, 0].sum()) < 10.0
