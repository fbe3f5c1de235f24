"""Quick-look figures of a cube (matplotlib, Agg, PNG). Each function draws one figure and returns
its path. Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state).

Images are shown with +x (West) to the right and +y (North) up, in arcsec from the IFU centre.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from crrxr.core import masks
from crrxr.core.kernel import radial_kernel
from crrxr.io import cube as C
from crrxr.io.cube_reader import CubeView


def _figure(w: float, h: float, ncols: int = 1, nrows: int = 1):
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _extent(cube: CubeView) -> list[float]:
    ds, h = cube.dataset, cube.grid.pixel_scale / 2
    return [float(ds.x[0]) - h, float(ds.x[-1]) + h, float(ds.y[0]) - h, float(ds.y[-1]) + h]


def _good_flux(cube: CubeView) -> xr.DataArray:
    ds = cube.dataset
    return ds[C.FLUX].where((ds[C.MASK] & masks.DONOTUSE) == 0)


def _label(ax) -> None:
    ax.set_xlabel("x [arcsec, +W]")
    ax.set_ylabel("y [arcsec, +N]")


def white_light(cube: CubeView, path: Path, rss: xr.Dataset | None = None) -> Path:
    """Mean flux over wavelength (DONOTUSE blank) with the fiber footprint (fibers at the middle
    channel, when the RSS is given)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        img = _good_flux(cube).mean(C.WAVELENGTH).values
    fig, axes = _figure(5.5, 4.8)
    ax = axes[0, 0]
    im = ax.imshow(img, origin="lower", extent=_extent(cube), cmap="magma")
    fig.colorbar(im, ax=ax, label=cube.dataset[C.FLUX].attrs.get("units", "flux"))
    if rss is not None:
        mid = rss.sizes[C.WAVELENGTH] // 2
        x = rss["xpos"].isel(wavelength=mid).values
        y = rss["ypos"].isel(wavelength=mid).values
        r = float(cube.params["kernel.fiber_radius_arcsec"])
        for a, b in zip(x, y):
            ax.add_patch(Circle((a, b), r, fill=False, lw=0.4, color="cyan", alpha=0.6))
    ax.set_title(
        f"white light ({cube.method}); circles: fibers" if rss is not None else "white light"
    )
    _label(ax)
    return _save(fig, path)


def psf(cube: CubeView, path: Path, band: int = 0, seeing: float | None = None) -> Path:
    """The stored PSF image of a band and its radial profile against the kernel (true seeing when
    given, else the kernel fitted to the image)."""
    from crrxr.core.psf import fit_kernel_fwhm

    ds = cube.dataset
    img = np.asarray(ds[C.PSF].isel(band=band).values, dtype=float)
    p = cube.params
    args = (
        float(p["kernel.fiber_radius_arcsec"]),
        float(p["seeing.sigma_ratio"]),
        float(p["seeing.wing_ratio"]),
        str(p["seeing.wing_convention"]),
    )
    fit = fit_kernel_fwhm(
        img, cube.grid, fiber_radius=args[0], sigma_ratio=args[1], wing_ratio=args[2], wing=args[3]
    )
    s = seeing if seeing is not None else fit.seeing
    fig, axes = _figure(10, 4.3, ncols=2)
    im = axes[0, 0].imshow(img, origin="lower", extent=_extent(cube), cmap="viridis")
    fig.colorbar(im, ax=axes[0, 0], label="per spaxel (unit source)")
    name = str(ds[C.BAND].values[band])
    axes[0, 0].set_title(f"PSF, band {name} ({float(ds[C.BAND_WAVELENGTH][band]):.1f} A)")
    _label(axes[0, 0])
    xx, yy = cube.grid.centres()
    r = np.hypot(xx, yy)
    ax = axes[0, 1]
    ax.plot(r, img.ravel(), ".", ms=3, label=f'{cube.method} PSF (FWHM {fit.fwhm:.3f}")')
    rr = np.linspace(0, r.max(), 300)
    k = cube.grid.pixel_scale**2 * radial_kernel(rr, s, *args)
    which = "true" if seeing is not None else "fitted"
    ax.plot(rr, k, "-", color="k", label=f'kernel, {which} seeing {s:.3f}"')
    ax.set_xlabel("radius [arcsec]")
    ax.set_ylabel("per spaxel")
    ax.set_xlim(0, min(6.0, r.max()))
    ax.legend()
    ax.set_title("radial profile")
    return _save(fig, path)


def correlation(cubes: Mapping[str, CubeView], path: Path, band: int = 0) -> Path:
    """Correlation coefficient against pixel separation for one or more cubes (e.g. CRR, Shepard)."""
    fig, axes = _figure(6, 4.3)
    ax = axes[0, 0]
    for name, cube in cubes.items():
        ds = cube.dataset
        nx = ds.sizes[C.X]
        i, j = ds[C.PAIR_I].values, ds[C.PAIR_J].values
        rho = np.asarray(ds[C.CORRELATION].isel(band=band).values, dtype=float)
        sep = np.hypot(i // nx - j // nx, i % nx - j % nx) * cube.grid.pixel_scale
        ok = (i != j) & np.isfinite(rho) & (rho != 0)
        seps = np.unique(np.round(sep[ok], 6))
        med = [np.median(rho[ok][np.isclose(sep[ok], s)]) for s in seps]
        (dots,) = ax.plot(sep[ok], rho[ok], ".", ms=1.5, alpha=0.25)
        ax.plot(seps, med, "-o", ms=3, color=dots.get_color(), label=f"{name} (median)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("pixel separation [arcsec]")
    ax.set_ylabel("correlation coefficient")
    ax.legend()
    ax.set_title("spaxel correlations")
    return _save(fig, path)


def spectrum(cube: CubeView, path: Path, spaxel: tuple[int, int] | None = None) -> Path:
    """The spectrum of one spaxel (default: the brightest in white light) with its 1-sigma band."""
    ds = cube.dataset
    if spaxel is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            wl = _good_flux(cube).mean(C.WAVELENGTH).values
        spaxel = np.unravel_index(int(np.nanargmax(wl)), wl.shape)
    iy, ix = int(spaxel[0]), int(spaxel[1])
    f = ds[C.FLUX].isel(y=iy, x=ix).values.astype(float)
    iv = ds[C.IVAR].isel(y=iy, x=ix).values.astype(float)
    bad = (ds[C.MASK].isel(y=iy, x=ix).values & masks.DONOTUSE) != 0
    sig = np.where(iv > 0, 1 / np.sqrt(np.where(iv > 0, iv, 1)), np.nan)
    f = np.where(bad, np.nan, f)
    w = ds[C.WAVELENGTH].values
    fig, axes = _figure(8, 3.8)
    ax = axes[0, 0]
    ax.fill_between(w, f - sig, f + sig, color="C0", alpha=0.3, label="1 sigma")
    ax.plot(w, f, "-", color="C0", lw=0.8, label="flux")
    ax.set_xlabel("wavelength [Angstrom]")
    ax.set_ylabel(ds[C.FLUX].attrs.get("units", "flux"))
    ax.set_title(f'spaxel (x, y) = ({float(ds.x[ix]):.2f}", {float(ds.y[iy]):.2f}")')
    ax.legend()
    return _save(fig, path)


def mask_map(cube: CubeView, path: Path) -> Path:
    """Fraction of channels in which each spaxel is NOCOV, LOWCOV and DONOTUSE."""
    m = cube.dataset[C.MASK]
    fig, axes = _figure(13, 4, ncols=3)
    for ax, (name, bit) in zip(
        axes[0], (("NOCOV", masks.NOCOV), ("LOWCOV", masks.LOWCOV), ("DONOTUSE", masks.DONOTUSE))
    ):
        frac = ((m & bit) != 0).mean(C.WAVELENGTH).values
        im = ax.imshow(frac, origin="lower", extent=_extent(cube), cmap="Greys", vmin=0, vmax=1)
        ax.set_title(f"{name} (fraction of channels)")
        _label(ax)
    fig.colorbar(im, ax=axes[0, -1])
    return _save(fig, path)


def fit_parameters(fit: xr.Dataset, path: Path, truth: Mapping[str, float] | None = None) -> Path:
    """Each fitted parameter against wavelength with its 1-sigma band (and the truth when given)."""
    done = fit["fit_status"].values == 0
    keys = [str(k) for k in fit["param"].values]
    units = [str(u) for u in fit["param_units"].values]
    fig, axes = _figure(10, 2.2 * ((len(keys) + 1) // 2), ncols=2, nrows=(len(keys) + 1) // 2)
    w = fit[C.WAVELENGTH].values[done]
    for ax, k, u in zip(axes.ravel(), keys, units):
        v = fit["fit_coefficients"].sel(param=k).values[done]
        e = fit["fit_stderr"].sel(param=k).values[done]
        ax.fill_between(w, v - e, v + e, alpha=0.3)
        ax.errorbar(w, v, e, fmt="o-", ms=3, capsize=2)
        if truth is not None and k in truth:
            ax.axhline(truth[k], color="k", ls="--", lw=0.8, label="truth")
            ax.legend()
        ax.set_ylabel(f"{k}\n[{u}]" if u else k, fontsize=8)
        ax.set_xlabel("wavelength [A]")
    for ax in axes.ravel()[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"{fit.attrs.get('crrxr_fit_model', '')} fit ({fit.attrs.get('crrxr_fit_route', '')} route)"
    )
    return _save(fig, path)


def line_maps(cubes: Mapping[str, xr.Dataset], path: Path, line_wave: float) -> Path:
    """Continuum (median) and line-flux maps of each cube (DONOTUSE pixels blank) in one PNG."""
    fig, axes = _figure(4.2 * len(cubes), 8, ncols=len(cubes), nrows=2)
    for col, (name, cube) in enumerate(cubes.items()):
        wave = cube["wavelength"].values
        good = (cube["mask"] & masks.DONOTUSE) == 0
        flux = cube["flux"].where(good)
        with warnings.catch_warnings():  # spaxels outside the bundle are all DONOTUSE (NaN here)
            warnings.simplefilter("ignore", RuntimeWarning)
            cont = flux.sel(wavelength=slice(wave[0], line_wave - 30)).median("wavelength").values
        near = np.abs(wave - line_wave) < 8
        dw = np.gradient(wave)[near][:, None, None]
        line = np.nansum((flux.isel(wavelength=near).values - cont[None]) * dw, axis=0)
        ext = [float(cube.x[0]), float(cube.x[-1]), float(cube.y[0]), float(cube.y[-1])]
        for row, (img, title) in enumerate(((cont, "continuum (median)"), (line, "line flux"))):
            ax = axes[row, col]
            vmax = np.nanpercentile(img, 99.5)
            im = ax.imshow(img, origin="lower", extent=ext, cmap="magma", vmin=0, vmax=vmax)
            ax.set_title(f"{name}: {title}")
            _label(ax)
            fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


def all_figures(
    cube: CubeView,
    out: Path,
    *,
    rss: xr.Dataset | None = None,
    compare: Sequence[CubeView] = (),
    spaxel: tuple[int, int] | None = None,
    seeing: float | None = None,
) -> list[Path]:
    """Every quick-look figure of ``cube`` into ``out``; fits found in the store are plotted too."""
    import zarr

    out = Path(out)
    if seeing is None and rss is not None:
        from crrxr.quality.measures import band_seeing

        seeing = float(np.mean(band_seeing(cube, rss)[0]))
    paths = [
        white_light(cube, out / "white_light.png", rss),
        psf(cube, out / "psf.png", seeing=seeing),
        correlation(
            {
                cube.method: cube,
                **{
                    c.method + f" ({i})" if c.method == cube.method else c.method: c
                    for i, c in enumerate(compare)
                },
            },
            out / "correlation.png",
        ),
        spectrum(cube, out / "spectrum.png", spaxel),
        mask_map(cube, out / "mask.png"),
    ]
    root = zarr.open_group(cube.path, mode="r", use_consolidated=False)
    if "fits" in root:
        for name in sorted(root["fits"].group_keys()):
            fit = xr.open_zarr(cube.path, group=f"fits/{name}", consolidated=False)
            paths.append(fit_parameters(fit, out / f"fit_{name}.png"))
    return paths
