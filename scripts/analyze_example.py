"""Downstream analysis of a crrxr cube with plain xarray (no crrxr import): an emission-line map and
an aperture spectrum whose errors include the spaxel covariance stored in the cube.

    python scripts/analyze_example.py CUBE.zarr --line 6698 [--window 8] [--aperture 2.5] [--out DIR]

The cube store holds flux, ivar and mask (wavelength, y, x), and at a few band channels the
correlation coefficient rho_ij of spaxel pairs (pair_i, pair_j: flat indices iy * nx + ix, i <= j)
up to a maximum separation. The variance of a weighted sum S = sum_i w_i F_i at wavelength l is
    var(S) = sum_ij w_i w_j rho_ij sigma_i(l) sigma_j(l),   sigma = 1 / sqrt(ivar),
with rho taken from the band channel nearest to l (correlations change slowly with wavelength).
The naive sum_i w_i^2 sigma_i^2 ignores the correlations and underestimates the error.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

DONOTUSE = 1024  # MaNGA DRP3PIXMASK bit


def line_map(cube: xr.Dataset, line: float, window: float) -> xr.DataArray:
    """Continuum-subtracted line flux (flux x Angstrom per spaxel): sum over |l - line| < window/2
    of (flux - continuum) dl, the continuum being the median of two side bands of the same width."""
    wave = cube["wavelength"]
    flux = cube["flux"].where((cube["mask"] & DONOTUSE) == 0)
    half = window / 2
    side = (abs(wave - (line - 2 * window)) < half) | (abs(wave - (line + 2 * window)) < half)
    cont = flux.sel(wavelength=side).median("wavelength")
    inside = abs(wave - line) < half
    dl = xr.DataArray(np.gradient(wave.values), coords={"wavelength": wave})
    return ((flux - cont) * dl).sel(wavelength=inside).sum("wavelength", min_count=1)


def band_correlation(cube: xr.Dataset, band: int) -> np.ndarray:
    """The (n_pix, n_pix) symmetric correlation matrix of a band channel (1 on the diagonal)."""
    n = cube.sizes["y"] * cube.sizes["x"]
    i = cube["pair_i"].values.astype(int)
    j = cube["pair_j"].values.astype(int)
    rho = np.nan_to_num(cube["correlation"].isel(band=band).values.astype(float))
    R = np.zeros((n, n))
    R[i, j] = rho
    R[j, i] = rho
    R[np.diag_indices(n)] = 1.0
    return R


def aperture_spectrum(
    cube: xr.Dataset, x0: float, y0: float, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux, error with covariance, naive error) of the sum over spaxels within ``radius`` arcsec
    of (x0, y0); spaxels flagged DONOTUSE in a channel are left out of that channel's sum."""
    yy, xx = np.meshgrid(cube["y"].values, cube["x"].values, indexing="ij")
    inside = (np.hypot(xx - x0, yy - y0) <= radius).ravel()
    nw = cube.sizes["wavelength"]
    flux = cube["flux"].values.reshape(nw, -1).astype(float)
    ivar = cube["ivar"].values.reshape(nw, -1).astype(float)
    good = ((cube["mask"].values.reshape(nw, -1) & DONOTUSE) == 0) & (ivar > 0) & inside[None]
    sigma = np.where(good, 1 / np.sqrt(np.where(good, ivar, 1.0)), 0.0)
    total = np.where(good, flux, 0.0).sum(axis=1)
    band_wave = cube["band_wavelength"].values
    nearest = np.abs(cube["wavelength"].values[:, None] - band_wave[None]).argmin(axis=1)
    err = np.empty(nw)
    for b in np.unique(nearest):
        R = band_correlation(cube, int(b))[np.ix_(inside, inside)]
        s = sigma[nearest == b][:, inside]
        err[nearest == b] = np.sqrt(np.einsum("ci,ij,cj->c", s, R, s))
    naive = np.sqrt((sigma**2).sum(axis=1))
    return total, err, naive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cube")
    p.add_argument("--line", type=float, required=True, help="line centre, Angstrom")
    p.add_argument("--window", type=float, default=8.0, help="line window width, Angstrom")
    p.add_argument("--aperture", type=float, default=2.5, help="aperture radius, arcsec")
    p.add_argument("--x0", type=float, default=0.0)
    p.add_argument("--y0", type=float, default=0.0)
    p.add_argument("--out", default=None, help="folder for line_map.png, aperture_spectrum.png")
    args = p.parse_args(argv)
    cube = xr.open_zarr(args.cube)
    with warnings.catch_warnings():  # spaxels outside the IFU are DONOTUSE (NaN) in every channel
        warnings.simplefilter("ignore", RuntimeWarning)
        lm = line_map(cube, args.line, args.window).compute()
    total, err, naive = aperture_spectrum(cube, args.x0, args.y0, args.aperture)
    print(f"line map: total {float(lm.sum()):.4g}, peak {float(lm.max()):.4g} (flux x Angstrom)")
    print(
        f'aperture r={args.aperture}": median S/N {np.nanmedian(total / err):.1f}; error with '
        f"covariance / naive error = {np.nanmedian(err / naive):.2f}"
    )
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 4.4), layout="constrained")
        im = ax.imshow(
            lm.values,
            origin="lower",
            cmap="magma",
            extent=[float(cube.x[0]), float(cube.x[-1]), float(cube.y[0]), float(cube.y[-1])],
        )
        fig.colorbar(im, ax=ax)
        ax.set_title(f"line {args.line:.1f} A (flux x Angstrom per spaxel)")
        ax.set_xlabel("x [arcsec, +W]")
        ax.set_ylabel("y [arcsec, +N]")
        fig.savefig(out / "line_map.png", dpi=90)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
        w = cube["wavelength"].values
        ax.fill_between(w, total - err, total + err, alpha=0.3, label="1 sigma (covariance)")
        ax.fill_between(w, total - naive, total + naive, alpha=0.5, label="1 sigma (naive)")
        ax.plot(w, total, lw=0.8)
        ax.set_xlabel("wavelength [A]")
        ax.set_ylabel(cube["flux"].attrs.get("units", "flux").replace("/spaxel", ""))
        ax.set_title(f'aperture r = {args.aperture}" at ({args.x0}, {args.y0})')
        ax.legend()
        fig.savefig(out / "aperture_spectrum.png", dpi=90)
        plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
