"""The one generator of synthetic RSS Datasets for the tests (DESIGN.md section 2 data model).

Fiber fluxes come from the independent kernel of :mod:`reference` (not crrxr's): a point source
(``point_flux`` at ``point_xy``), plus a flat surface brightness ``flat_sb`` (per arcsec^2: a fiber
collects sb * pi r_fib^2, exactly, since the kernel integrates to 1), plus Gaussian noise of rms
``noise``. Geometry: a MaNGA hexagonal bundle (2.5" pitch) with the 3-point dither at the lattice
holes (sides at 30/90/150 deg), jitter, per-exposure seeing and a linear DAR drift.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from reference import kernel, seeing


def bundle(n_fibers: int, pitch: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Centres of a filled hexagonal bundle of ``n_fibers`` = 3n(n+1)+1 (rows along x)."""
    n = int(round((-3 + np.sqrt(9 + 12 * (n_fibers - 1))) / 6))
    pts = [
        (pitch * (q + 0.5 * r), pitch * np.sqrt(3) / 2 * r)
        for q in range(-n, n + 1)
        for r in range(-n, n + 1)
        if abs(q + r) <= n
    ]
    assert len(pts) == n_fibers, n_fibers
    return np.array(pts).T


def dithers(n_exp: int, jitter: float, rng, side: float = 1.44) -> tuple[np.ndarray, np.ndarray]:
    """MaNGA triangle (vertices at 0/120/240 deg, side ``side``), repeated, plus Gaussian jitter."""
    ang = np.deg2rad([0.0, 120.0, 240.0])[np.arange(n_exp) % 3]
    rho = side / np.sqrt(3) if n_exp > 1 else 0.0
    return (
        rho * np.cos(ang) + jitter * rng.standard_normal(n_exp),
        rho * np.sin(ang) + jitter * rng.standard_normal(n_exp),
    )


def make_rss(
    n_fibers: int = 19,
    n_exp: int = 3,
    n_wave: int = 23,
    wave=(6100.0, 6250.0),
    seeing_fwhm=None,
    jitter: float = 0.05,
    dar: float = 0.0,
    point_flux: float = 10.0,
    point_xy=(0.0, 0.0),
    flat_sb: float = 0.0,
    noise: float = 0.01,
    seed: int = 1,
    dead=(),
    fiber_radius: float = 1.0,
) -> xr.Dataset:
    """An RSS Dataset; ``seeing_fwhm`` (n_exp,) at 5400 A (default 1.19" with 5% scatter), ``dar``
    the x shift (arcsec) between the first and last channel, ``dead`` (spectrum, channel) samples
    given ivar 0 and the NODATA bit."""
    rng = np.random.default_rng(seed)
    fx, fy = bundle(n_fibers)
    dx, dy = dithers(n_exp, jitter, rng)
    wavelength = np.linspace(wave[0], wave[1], n_wave)
    n_spec = n_fibers * n_exp
    exp_index = np.repeat(np.arange(n_exp), n_fibers)
    fiber = np.tile(np.arange(n_fibers), n_exp)
    if seeing_fwhm is None:
        seeing_fwhm = 1.19 * (1.0 + 0.05 * rng.standard_normal(n_exp))
    seeing_fwhm = np.asarray(seeing_fwhm, float)
    t = (wavelength - wavelength[0]) / max(wavelength[-1] - wavelength[0], 1e-9) - 0.5
    xpos = (fx[fiber] + dx[exp_index])[:, None] + dar * t[None, :]
    ypos = (fy[fiber] + dy[exp_index])[:, None] + 0.5 * dar * t[None, :]
    fwhm = seeing(seeing_fwhm[exp_index][:, None], wavelength[None, :])
    r = np.hypot(xpos - point_xy[0], ypos - point_xy[1])
    area = np.pi * fiber_radius**2
    flux = np.empty((n_spec, n_wave))
    for s in range(n_spec):
        for c in range(n_wave):
            flux[s, c] = point_flux * area * kernel(r[s, c], fwhm[s, c], fiber_radius)
    flux += flat_sb * area + noise * rng.standard_normal(flux.shape)
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


#: Parameters of a fast (weight-reuse) build at the issue's tolerance, with the kernel cut reuse needs
FAST_PARAMS = {"crr.reuse_tolerance": 0.01, "kernel.truncation_radius_arcsec": 6.0}


def reuse_rss(path=None, n_wave: int = 200, start: float = 3650.0, bad: float = 1e-3):
    """A 19 x 9 galaxy + star (crrxr's simulator, S/N 30) from ``start`` A with DAR 2", ``bad``
    masked samples and an LSF: what makes weight reuse stateful inside a task (in the blue nodes
    moved across selection changes, samples removed, LSF sums). Written to ``path`` (a Zarr store)
    when given; returns the Dataset."""
    from crrxr.simulate import simulate_rss
    from crrxr.simulate.scenes import Galaxy, PointSource

    return simulate_rss(
        path,
        bundle=19,
        wavelength=start * 10 ** (1e-4 * np.arange(n_wave)),
        scene=[Galaxy(), PointSource(x=3.0, y=-2.0, flux=50.0)],
        noise=30,
        dar_amplitude=2.0,
        bad_pixel_fraction=bad,
        seed=7,
        lsf_sigma=1.3,
        lsf_spread=0.4,
    )


def write_reuse_rss(path, n_wave: int = 200) -> str:
    """:func:`reuse_rss` written to ``path``; returns the path."""
    reuse_rss(path, n_wave)
    return str(path)


def ledger(store) -> np.ndarray | None:
    """A cube store's chunk ledger (1 per chunk done), None before its template exists."""
    import zarr

    from crrxr.io import cube as C

    try:
        return zarr.open_array(str(store), path=C.CHUNK_DONE, mode="r")[:]
    except Exception:  # template not written yet
        return None


def build_command(rss, store, *extra, chunk: int = 2) -> list[str]:
    """``crrxr -v build RSS STORE`` with ``chunk`` channels per chunk on one thread worker."""
    import sys
    from pathlib import Path

    crrxr = str(Path(sys.executable).with_name("crrxr"))
    return [
        crrxr,
        "-v",
        "build",
        str(rss),
        str(store),
        "--wave-chunk",
        str(chunk),
        "--scheduler",
        "threads",
        "--workers",
        "1",
        "--no-progress",
        *extra,
    ]


def kill_after_chunks(proc, store, n: int, timeout: float) -> None:
    """SIGKILL the build ``proc`` once ``n`` chunks of ``store`` are done (fails the test when the
    build ends first or ``timeout`` seconds pass)."""
    import os
    import signal
    import time

    import pytest

    deadline = time.monotonic() + timeout
    while True:
        led = ledger(store)
        if led is not None and led.sum() >= n:
            break
        if proc.poll() is not None:
            pytest.fail("the build finished before it could be killed; make it larger")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"fewer than {n} chunks done after {timeout} s")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
