"""Quality of a cube per band: PSF FWHM and pseudo-Strehl, neighbour correlation, mask fractions,
failed channels; and the PSF map over the field.

FWHM: the kernel model fitted to the stored PSF image (:func:`crrxr.core.psf.fit_kernel_fwhm`).
Pseudo-Strehl: PSF image peak / peak of the TRUE kernel image, p^2 mean_e K(0; FWHM_e(lambda)) over
the exposures' seeing at the band wavelength (needs the RSS; reproduces the paper's ratio); without
the RSS, the peak of a unit source through the kernel of the fitted seeing is the reference
(``strehl_reference = "fitted"``).
Stored as the group ``quality`` of the cube store (dims ``band``; the PSF map as ``quality_psf_map``).
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from crrxr.core import masks
from crrxr.core.kernel import radial_kernel, seeing_at
from crrxr.core.psf import fit_kernel_fwhm, neighbour_correlation
from crrxr.core.response import point_source_fluxes
from crrxr.engine import settings
from crrxr.fit.channels import channel_weights, check_rss_matches, read_channels
from crrxr.io import cube as C
from crrxr.io.cube_reader import CubeView

QUALITY_GROUP = "quality"
PSF_MAP_GROUP = "quality_psf_map"


def _kernel_args(cube: CubeView) -> tuple:
    cfg = settings.core_config(cube.params)
    return cfg.fiber_radius, cfg.sigma_ratio, cfg.wing_ratio, cfg.wing


def true_kernel_peak(cube: CubeView, seeing: np.ndarray) -> float:
    """p^2 mean_e K(0; seeing_e): per-spaxel peak of a unit source seen through the true kernel."""
    args = _kernel_args(cube)
    k0 = [float(radial_kernel(np.array(0.0), float(s), *args)) for s in np.atleast_1d(seeing)]
    return cube.grid.pixel_scale**2 * float(np.mean(k0))


def band_seeing(cube: CubeView, rss: xr.Dataset) -> np.ndarray:
    """(n_band, n_exposure) seeing FWHM (arcsec) at each band wavelength."""
    p = cube.params
    wl = cube.dataset[C.BAND_WAVELENGTH].values
    return seeing_at(
        rss["seeing_fwhm"].values[None, :],
        wl[:, None],
        float(p["seeing.lambda_ref_angstrom"]),
        float(p["seeing.exponent"]),
    )


def measure(cube: CubeView, rss_path: str | os.PathLike[str] | None = None) -> xr.Dataset:
    """The quality Dataset (dims ``band``) with the cube-wide fractions in its attrs."""
    ds = cube.dataset
    grid = cube.grid
    args = _kernel_args(cube)
    seeing = None
    if rss_path is not None:
        seeing = band_seeing(cube, check_rss_matches(cube, rss_path))
    nb = ds.sizes[C.BAND]
    out = {k: np.full(nb, np.nan) for k in ("fwhm", "strehl", "corr1", "corr2", "seeing")}
    pairs = (ds[C.PAIR_I].values, ds[C.PAIR_J].values)
    for b in range(nb):
        psf = np.asarray(ds[C.PSF].isel(band=b).values, dtype=float)
        if not np.isfinite(psf).any():
            continue
        fit = fit_kernel_fwhm(
            psf, grid, fiber_radius=args[0], sigma_ratio=args[1], wing_ratio=args[2], wing=args[3]
        )
        out["fwhm"][b] = fit.fwhm
        if seeing is not None:
            out["strehl"][b] = fit.peak / true_kernel_peak(cube, seeing[b])
            out["seeing"][b] = float(np.mean(seeing[b]))
        else:
            # no truth: a unit source seen through the kernel of the fitted seeing is the reference
            out["strehl"][b] = fit.peak / true_kernel_peak(cube, fit.seeing)
        rho = np.asarray(ds[C.CORRELATION].isel(band=b).values, dtype=float)
        out["corr1"][b], out["corr2"][b] = neighbour_correlation(rho, grid, pairs=pairs)
    mask = ds[C.MASK]
    nocov = float(((mask & masks.NOCOV) != 0).mean().compute())
    lowcov = float(((mask & masks.LOWCOV) != 0).mean().compute())
    failed = np.flatnonzero(ds[C.CHANNEL_FAILED].values != 0)
    B = (C.BAND,)
    return xr.Dataset(
        {
            "psf_fwhm": (B, out["fwhm"], {"units": "arcsec", "long_name": "PSF FWHM (kernel fit)"}),
            "psf_strehl": (B, out["strehl"], {"long_name": "pseudo-Strehl"}),
            "mean_seeing": (B, out["seeing"], {"units": "arcsec"}),
            "neighbour_correlation_1px": (B, out["corr1"]),
            "neighbour_correlation_2px": (B, out["corr2"]),
        },
        coords={
            C.BAND: ds[C.BAND].values.astype(object),
            C.BAND_WAVELENGTH: (B, ds[C.BAND_WAVELENGTH].values),
        },
        attrs={
            "strehl_reference": "true" if seeing is not None else "fitted",
            "nocov_fraction": nocov,
            "lowcov_fraction": lowcov,
            "n_failed_channels": int(failed.size),
            "failed_channels": [int(i) for i in failed],
        },
    )


def psf_map(
    cube: CubeView, rss_path: str | os.PathLike[str], step: float = 1.0, radius: float | None = None
) -> xr.Dataset:
    """Inject a unit point source at each position of a grid (``step`` arcsec) inside the covered
    field through each band channel's own geometry and weights, and measure FWHM (kernel fit, free
    centre) and pseudo-Strehl (peak / true kernel peak). Dims (band, py, px); attrs hold the
    fractional scatter (std / mean) of both over the map."""
    rss = check_rss_matches(cube, rss_path)
    grid = cube.grid
    cfg = settings.core_config(cube.params)
    args = _kernel_args(cube)
    bands = cube.dataset[C.BAND_INDEX].values
    inputs = read_channels(cube, rss_path, bands)
    weights = channel_weights(cube, inputs)
    seeing = band_seeing(cube, rss)
    x = inputs.xpos[:, 0]
    reach = radius if radius is not None else 0.6 * float(np.nanmax(np.abs(x)))
    pos = np.arange(-np.floor(reach / step) * step, reach + 1e-9, step)
    shape = (len(bands), pos.size, pos.size)
    fwhm = np.full(shape, np.nan)
    strehl = np.full(shape, np.nan)
    xx, yy = grid.centres()
    for b, w in enumerate(weights):
        col = int(np.flatnonzero(inputs.index == bands[b])[0])
        peak_true = true_kernel_peak(cube, seeing[b])
        solved = np.zeros(grid.size, bool)
        solved[w.pixels] = True
        for iy, sy in enumerate(pos):
            for ix, sx in enumerate(pos):
                if np.hypot(sx, sy) > reach:
                    continue
                f = point_source_fluxes(
                    inputs.xpos[:, col],
                    inputs.ypos[:, col],
                    inputs.fwhm[:, col],
                    [(sx, sy, 1.0)],
                    cfg,
                )
                img = w.apply(f)
                use = (solved & (np.hypot(xx - sx, yy - sy) <= 4.0)).reshape(grid.shape)
                fit = fit_kernel_fwhm(
                    img,
                    grid,
                    free_centre=True,
                    use=use,
                    fiber_radius=args[0],
                    sigma_ratio=args[1],
                    wing_ratio=args[2],
                    wing=args[3],
                )
                fwhm[b, iy, ix] = fit.fwhm
                strehl[b, iy, ix] = fit.peak / peak_true
    D = (C.BAND, "py", "px")

    def scatter(a):
        return [float(np.nanstd(v) / np.nanmean(v)) for v in a]

    return xr.Dataset(
        {
            "psf_fwhm": (D, fwhm, {"units": "arcsec"}),
            "psf_strehl": (D, strehl),
        },
        coords={C.BAND: cube.dataset[C.BAND].values.astype(object), "py": pos, "px": pos},
        attrs={
            "fwhm_fractional_scatter": scatter(fwhm),
            "strehl_fractional_scatter": scatter(strehl),
        },
    )


def table(q: xr.Dataset) -> str:
    """The quality Dataset as printed text."""
    lines = [
        f"{'band':>6} {'lambda':>9} {'FWHM':>7} {'Strehl':>7} {'rho1':>6} {'rho2':>6}",
    ]
    for b in range(q.sizes[C.BAND]):
        r = q.isel(band=b)
        lines.append(
            f"{str(r[C.BAND].values):>6} {float(r[C.BAND_WAVELENGTH]):9.2f} "
            f"{float(r['psf_fwhm']):7.3f} {float(r['psf_strehl']):7.3f} "
            f"{float(r['neighbour_correlation_1px']):6.3f} {float(r['neighbour_correlation_2px']):6.3f}"
        )
    a = q.attrs
    lines.append(
        f"pseudo-Strehl relative to the {a['strehl_reference']} kernel; NOCOV {a['nocov_fraction']:.3f}, "
        f"LOWCOV {a['lowcov_fraction']:.3f} of spaxel-channels; failed channels: {a['n_failed_channels']}"
    )
    return "\n".join(lines)
