"""simulate -> MaNGA LOGRSS FITS -> ingest-manga -> build -> export-fits -> astropy WCS.

The simulated RSS is written in the DRP layout, ingested back (it must equal the simulation exactly),
reconstructed by the engine, exported, and the point source must sit at its RA/Dec in the FITS.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import xarray as xr
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

import crrxr.simulate.rss_writer as simulate
import crrxr.simulate.scenes as scenes
from crrxr.core.masks import RSS_BITS
from crrxr.engine.build import build_cube
from crrxr.io.manga import export_logcube, ingest_manga_rss
from crrxr.io.manga_masks import DRP2PIXMASK_BITS

RA0, DEC0 = 201.5, 45.0
WEST, NORTH = 1.5, 2.25  # arcsec offsets of the point source (2 and 3 pixels of 0.75")

# crrxr RSS bit -> the DRP2PIXMASK bit it comes from (inverse of the ingest mapping, one per bit)
_TO_DRP2 = {"NODATA": "NODATA", "DEADFIBER": "DEADFIBER", "REJECT": "3DREJECT", "NOSKY": "NOSKY"}


def write_logrss(rss: xr.Dataset, path) -> None:
    """Write an RSS Dataset in the MaNGA LOGRSS layout (exposure-major rows, DRP2PIXMASK bits)."""
    mask = rss["mask"].values
    drp = np.zeros(mask.shape, np.int32)
    for name, value in RSS_BITS.items():
        if name in _TO_DRP2:
            drp[(mask & value) != 0] |= np.int32(1 << DRP2PIXMASK_BITS[_TO_DRP2[name]])
        else:
            assert not np.any(mask & value), f"{name} has no DRP2PIXMASK equivalent"
    primary = fits.PrimaryHDU()
    primary.header["NEXP"] = rss.sizes["exposure"]
    flux = fits.ImageHDU(rss["flux"].values, name="FLUX")
    flux.header["IFURA"], flux.header["IFUDEC"] = rss.attrs["ifu_ra"], rss.attrs["ifu_dec"]
    obsinfo = fits.BinTableHDU.from_columns(
        [
            fits.Column("EXPNUM", "K", array=rss["exposure"].values),
            fits.Column("SEEING", "D", array=rss["seeing_fwhm"].values),
            fits.Column("PSFFAC", "D", array=np.ones(rss.sizes["exposure"])),
        ],
        name="OBSINFO",
    )
    fits.HDUList(
        [
            primary,
            flux,
            fits.ImageHDU(rss["ivar"].values, name="IVAR"),
            fits.ImageHDU(drp, name="MASK"),
            fits.ImageHDU(rss["wavelength"].values, name="WAVE"),
            fits.ImageHDU(rss["xpos"].values, name="XPOS"),
            fits.ImageHDU(rss["ypos"].values, name="YPOS"),
            obsinfo,
        ]
    ).writeto(path)


def test_simulated_point_source_round_trip(tmp_path):
    sim = simulate.simulate_rss(
        None,
        bundle=19,
        exposures=3,
        nwave=12,
        scene=scenes.PointSource(x=WEST, y=NORTH, flux=100.0),
        noise=None,
        dead_fibers=1,
        seed=3,
        ifu_ra=RA0,
        ifu_dec=DEC0,
    ).load()
    # exposure-major rows, as the DRP writes them
    np.testing.assert_array_equal(
        sim["exposure_index"].values, np.repeat(np.arange(3), sim.sizes["spectrum"] // 3)
    )
    write_logrss(sim, tmp_path / "manga-1-2-LOGRSS.fits")
    rss_path = ingest_manga_rss(
        tmp_path / "manga-1-2-LOGRSS.fits", tmp_path / "rss.zarr", wave_chunk=5
    )
    rss = xr.open_zarr(rss_path, consolidated=False)
    for var in ("flux", "ivar", "mask", "xpos", "ypos", "seeing_fwhm", "exposure_index", "fiber"):
        np.testing.assert_array_equal(rss[var].values, sim[var].values, err_msg=var)
    np.testing.assert_array_equal(rss["wavelength"].values, sim["wavelength"].values)

    cube = build_cube(rss_path, tmp_path / "cube.zarr", scheduler="synchronous", progress=False)
    out = export_logcube(tmp_path / "cube.zarr", tmp_path / "manga-1-2-LOGCUBE.fits")
    with fits.open(out) as hdul:
        # the exported WCS agrees with the one the engine stored in the cube attrs
        stored = json.loads(cube.attrs["wcs"])
        for key in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD2_2"):
            assert hdul["FLUX"].header[key] == pytest.approx(stored[key], rel=1e-12), key
        assert (hdul["FLUX"].header["CTYPE1"], hdul["FLUX"].header["CTYPE2"]) == (
            stored["CTYPE1"],
            stored["CTYPE2"],
        )
        image = hdul["FLUX"].data.sum(axis=0)
        wcs = WCS(hdul["FLUX"].header).celestial
        np.testing.assert_array_equal(hdul["FLUX"].data, cube["flux"].values)
    # the source is WEST arcsec West (lower RA) and NORTH arcsec North of the IFU centre
    source = SkyCoord(RA0 * u.deg, DEC0 * u.deg).spherical_offsets_by(
        -WEST * u.arcsec, NORTH * u.arcsec
    )
    px, py = wcs.world_to_pixel(source)
    iy, ix = np.unravel_index(np.argmax(image), image.shape)
    assert (ix, iy) == (round(float(px)), round(float(py)))
    # flux-weighted centroid of the reconstructed source (9x9 box, noise-free) agrees to a fraction
    # of a pixel (a box centred on the peak pixel pulls the centroid toward it a little)
    box = image[iy - 4 : iy + 5, ix - 4 : ix + 5]
    gy, gx = np.mgrid[iy - 4 : iy + 5, ix - 4 : ix + 5]
    cx, cy = (box * gx).sum() / box.sum(), (box * gy).sum() / box.sum()
    print(f"expected pixel ({px:.3f}, {py:.3f}), centroid ({cx:.3f}, {cy:.3f}), peak ({ix}, {iy})")
    assert abs(cx - px) < 0.15 and abs(cy - py) < 0.15, (cx, cy, px, py)
    # West is toward increasing x pixel: the source is right of the centre pixel
    centre = (image.shape[1] - 1) / 2
    assert px > centre
    if shutil.which("fitsverify"):  # HEASARC's FITS checker, where installed (Debian: fitsverify)
        run = subprocess.run(["fitsverify", "-q", str(out)], capture_output=True, text=True)
        assert run.stdout.strip().startswith("verification OK"), run.stdout
