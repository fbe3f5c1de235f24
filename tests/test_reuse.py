"""Weight reuse across wavelength (crr.reuse_tolerance > 0, crrxr.core.reuse) through the engine:
accuracy against exact per-channel solves, the stored certificate, masked samples removed from the
nodes' solves (or the channel solved exactly),
chunk independence, point-source PSF / correlation and a flat field.

The 4" kernel cut makes exact W jump from channel to channel (pairs crossing the cut), so the
fixtures use a 6" cut, where W is smooth and most channels are interpolated (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import xarray as xr
import zarr

from crrxr.core import Grid, InputError, masks, reconstruct_block
from crrxr.core.kernel import kernel_fwhm, radial_kernel, seeing_at
from crrxr.core.psf import fit_kernel_fwhm
from crrxr.core.reuse import (
    COND_MAX,
    JITTER_MAX,
    MASK_MAX,
    _certain_lowcov,
    _Check,
    _lagrange,
    read_range,
    reconstruct_block_reuse,
)
from crrxr.core.slice import ChannelSolver
from crrxr.engine import settings
from crrxr.engine.build import prepare, run_build
from crrxr.engine.chunk import sample_seeing
from crrxr.engine.reuse import CHUNK_BLOCKS
from crrxr.simulate import simulate_rss
from crrxr.simulate.scenes import Galaxy, PointSource

TOL = 0.01
CUT = {"kernel.truncation_radius_arcsec": 6.0}


def manga_wave(lo: float, n: int) -> np.ndarray:
    return lo * 10 ** (1e-4 * np.arange(n))


def build(rss, path, tol, chunk=32, profile=None, **extra):
    run_build(
        rss,
        path,
        params={**CUT, "crr.reuse_tolerance": tol, **extra},
        profile=profile,
        wave_chunk=chunk,
        scheduler="threads",
        workers=2,
        progress=False,
    )
    return xr.open_zarr(path).load()


def galaxy19(path, start: float, n: int, *, dar: float, bad: float = 0.0, seed: int = 5, **kw):
    """19 x 9 galaxy + star, S/N 30, ``n`` channels from ``start`` A (``path`` None: in memory)."""
    return simulate_rss(
        path,
        bundle=19,
        wavelength=manga_wave(start, n),
        scene=[Galaxy(), PointSource(x=3.0, y=-2.0, flux=50.0)],
        noise=30,
        dar_amplitude=dar,
        bad_pixel_fraction=bad,
        seed=seed,
        **kw,
    )


def simulate_galaxy(rss, bad_pixel_fraction: float = 0.0):
    """19 x 9 galaxy + star, S/N 30, DAR 2", 64 channels from 7000 A."""
    return galaxy19(rss, 7000.0, 64, dar=2.0, bad=bad_pixel_fraction)


def core_inputs(sim, overrides=CUT):
    """(grid, core config, (xpos, ypos, fwhm, flux, ivar, mask)) of a loaded RSS as the engine
    builds them."""
    p = settings.resolve_params(rss_attrs=sim.attrs, overrides=overrides)
    arrays = (sim["xpos"].values, sim["ypos"].values, sample_seeing(sim, 5400.0, -0.2))
    arrays += tuple(sim[v].values for v in ("flux", "ivar", "mask"))
    return settings.make_grid(sim, p), settings.core_config(p), arrays


@pytest.fixture(scope="module", params=[0.0, 0.002], ids=["unmasked", "masked"])
def galaxy(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("reuse")
    rss = d / "rss.zarr"
    sim = simulate_galaxy(rss, request.param)
    exact = build(rss, d / "exact.zarr", 0.0)
    fast = build(rss, d / "fast.zarr", TOL)
    return sim.load(), exact, fast, rss, d


def good_sigma(exact):
    ok = (exact["ivar"].values > 0) & ((exact["mask"].values & masks.DONOTUSE) == 0)
    sigma = np.where(ok, 1 / np.sqrt(np.where(ok, exact["ivar"].values, 1.0)), np.inf)
    return ok, sigma


def exact_and_fast(sim, d, cut: float):
    """Exact and fast (tolerance TOL) builds of ``sim`` at kernel cut ``cut`` in one 64-channel
    chunk: (exact cube, fast cube, the fast build's report)."""
    cubes, report = [], None
    for tol in (0.0, TOL):
        path = d / f"cut{cut:g}-{tol:g}.zarr"
        report = run_build(
            sim,
            path,
            params={"kernel.truncation_radius_arcsec": cut, "crr.reuse_tolerance": tol},
            wave_chunk=64,
            scheduler="synchronous",
            progress=False,
        )
        cubes.append(xr.open_zarr(path).load())
    return (*cubes, report)


def assert_within_bound(exact, fast):
    """Each channel's largest flux error (sigma) within its stored bound, and at most TOL."""
    ok, sigma = good_sigma(exact)
    ok &= fast["ivar"].values > 0
    err = np.where(ok, np.abs(fast["flux"].values - exact["flux"].values) / sigma, 0.0)
    per_channel = err.max(axis=(1, 2))
    assert np.all(per_channel <= fast["reuse_bound"].values * 1.001 + 1e-6)
    assert 1e-7 < per_channel.max() <= TOL


def test_fast_cube_within_certified_bound_of_exact(galaxy):
    sim, exact, fast, _, _ = galaxy
    interp = fast["channel_exact"].values == 0
    assert interp.mean() > (0.1 if sim["mask"].values.any() else 0.4), interp.mean()
    assert np.all(exact["channel_exact"].values == 1) and np.all(exact["reuse_bound"].values == 0)
    ok, sigma = good_sigma(exact)
    ok &= fast["ivar"].values > 0  # usable in both (a borderline LOWCOV pixel may differ: below)
    err = np.abs(fast["flux"].values - exact["flux"].values) / sigma
    per_channel = np.where(ok, err, 0).max(axis=(1, 2))
    bound = fast["reuse_bound"].values.astype(float)
    # the certificate: every channel's real error (float32 output) within its stored bound
    assert np.all(per_channel <= bound * 1.001 + 1e-5), np.max(per_channel - bound)
    assert np.all(bound[interp] <= TOL) and np.all(bound[~interp] == 0)
    assert per_channel[~interp].max() < 1e-4  # exact channels: same solve up to float32
    assert per_channel[interp].max() > 1e-7  # interpolated channels really differ
    assert_masks_explained(fast, exact)
    rel = np.abs(fast["ivar"].values[ok] / exact["ivar"].values[ok] - 1)
    assert rel.max() <= 1e-3


def assert_masks_explained(fast, exact, most=2):
    """Masks equal the exact build's but for the LOWCOV/DONOTUSE decision of a few pixels in
    interpolated channels (borderline coverage, crrxr.core.reuse), where ivar is 0 in one build."""
    fm, em = fast["mask"].values, exact["mask"].values
    diff = fm != em
    assert not np.any((fm ^ em) & ~np.uint32(masks.LOWCOV | masks.DONOTUSE)), "other mask bits"
    assert not diff[fast["channel_exact"].values == 1].any(), "an exact channel's mask differs"
    assert diff.sum(axis=(1, 2)).max(initial=0) <= most, diff.sum(axis=(1, 2))
    usable_fast = (fm & masks.DONOTUSE) == 0
    assert np.array_equal(fast["ivar"].values[diff] > 0, usable_fast[diff])


def test_masked_channels_in_the_random_case_are_mostly_interpolated(galaxy):
    sim, _, fast, _, _ = galaxy
    bad = sim["mask"].values != 0  # (spectrum, wavelength)
    if not bad.any():
        pytest.skip("unmasked case")
    # channels with one to MASK_MAX samples masked (the run's set is the unmasked one here)
    few = (bad.sum(axis=0) >= 1) & (bad.sum(axis=0) <= MASK_MAX)
    assert few.sum() >= 10
    interp = fast["channel_exact"].values == 0
    assert interp[few].mean() > 0.3, interp[few].mean()  # accuracy: the test above


@pytest.fixture(scope="module")
def cosmic(tmp_path_factory):
    """A 19 x 9 cube with samples masked on purpose: one sample over channels 20-22 (a cosmic ray
    across three channels), two at 33, MASK_MAX + 1 at 40; the exact and the fast build."""
    d = tmp_path_factory.mktemp("cosmic")
    rss = d / "rss.zarr"
    simulate_galaxy(rss)
    group = zarr.open_group(str(rss), mode="r+")
    hit = {20: [60], 21: [60], 22: [60], 33: [7, 100], 40: list(range(50, 51 + MASK_MAX))}
    for c, samples in hit.items():
        for i in samples:
            group["mask"][i, c] = int(masks.RSS_REJECT)
            group["flux"][i, c] = 1e6  # the cosmic ray itself: any weight left on it would show
    return hit, build(rss, d / "exact.zarr", 0.0), build(rss, d / "fast.zarr", TOL), rss, d


def test_a_few_masked_samples_are_removed_from_the_nodes_not_solved_again(cosmic):
    hit, exact, fast = cosmic[:3]
    ex = fast["channel_exact"].values
    assert np.all(ex[[20, 21, 22, 33]] == 0), ex[[20, 21, 22, 33]]  # interpolated, removed samples
    assert ex[40] == 1  # more than MASK_MAX removed: solved exactly
    ok, sigma = good_sigma(exact)
    ok &= fast["ivar"].values > 0
    err = np.where(ok, np.abs(fast["flux"].values - exact["flux"].values) / sigma, 0)
    bound = fast["reuse_bound"].values.astype(float)
    # interpolated between nodes, or a node itself (its solve of the run's set, samples removed)
    assert max(err[c].max() for c in (20, 21, 22, 33)) > 1e-7
    for c in (20, 21, 22, 33):
        assert err[c].max() <= bound[c] * 1.001 + 1e-5 and bound[c] <= TOL, (c, bound[c])
        rel = np.abs(fast["ivar"].values[c][ok[c]] / exact["ivar"].values[c][ok[c]] - 1)
        assert rel.max() <= 1e-3
    assert_masks_explained(fast, exact)


def test_chunking_does_not_change_the_fast_cube(galaxy):
    sim, _, fast, rss, d = galaxy
    for chunk in (7,):
        other = build(rss, d / f"fast{chunk}.zarr", TOL, chunk=chunk)
        for name in ("flux", "ivar", "mask", "channel_exact", "reuse_bound"):
            np.testing.assert_array_equal(other[name].values, fast[name].values, err_msg=name)


@pytest.fixture(scope="module")
def point(tmp_path_factory):
    d = tmp_path_factory.mktemp("reuse_psf")
    rss = d / "rss.zarr"
    sim = simulate_rss(
        rss,
        bundle=19,
        seeing=1.19,
        # the r band (6176.58 A, PSF and correlation stored) at channel 45: never a node unless
        # the refinement goes down to single channels
        wavelength=manga_wave(6176.58 / 10 ** (45e-4), 64),
        scene="point",
        noise=None,
        dar_amplitude=1.0,
        seed=5,
    )
    return sim.load(), build(rss, d / "exact.zarr", 0.0), build(rss, d / "fast.zarr", TOL)


def test_point_source_psf_and_correlation_in_fast_mode(point):
    sim, exact, fast = point
    k = int(fast["band_index"].values[0])
    assert fast["channel_exact"].values[k] == 0, "the band channel must be interpolated"
    psf_f, psf_e = fast["psf"].values[0], exact["psf"].values[0]
    assert np.max(np.abs(psf_f - psf_e)) <= 1e-3 * psf_e.max()
    grid = Grid(float(fast.x[1] - fast.x[0]), fast.sizes["x"])
    good = (fast["mask"].values[k] & masks.DONOTUSE) == 0
    seeing = float(np.mean(seeing_at(sim["seeing_fwhm"].values, float(sim.wavelength[k]))))
    fw_f = fit_kernel_fwhm(fast["flux"].values[k], grid, use=good).fwhm
    fw_e = fit_kernel_fwhm(exact["flux"].values[k], grid, use=good).fwhm
    assert abs(fw_f / kernel_fwhm(seeing) - 1) < 0.05
    assert abs(fw_f / fw_e - 1) < 1e-3
    rho_f, rho_e = fast["correlation"].values[0], exact["correlation"].values[0]
    assert np.max(np.abs(rho_f - rho_e)) < 1e-3
    i, j = fast["pair_i"].values, fast["pair_j"].values
    nx = fast.sizes["x"]
    adjacent = (np.abs(i // nx - j // nx) + np.abs(i % nx - j % nx)) == 1
    assert abs(rho_f[adjacent].mean() - rho_e[adjacent].mean()) < 1e-3


def test_flat_field_stays_flat_in_fast_mode(tmp_path):
    """Uniform surface brightness S: fiber flux S pi r^2, spaxel flux S p^2 in the covered interior
    (as tests/test_core_slice.py: more than ~3.5" inside the outer fiber centres), interpolated
    channels included."""
    sim = simulate_rss(
        None, bundle=37, wavelength=manga_wave(7000.0, 64), noise=30, dar_amplitude=2.0, seed=2
    )
    S = 3.0
    sim["flux"] = xr.full_like(sim["flux"], S * np.pi * 1.0**2)
    fast = build(sim, tmp_path / "flat.zarr", TOL)
    interp = fast["channel_exact"].values == 0
    assert interp.mean() > 0.3
    xx, yy = np.meshgrid(fast["x"].values, fast["y"].values)
    good = (fast["mask"].values & masks.DONOTUSE) == 0
    interior = good & (np.hypot(xx, yy) < 4.0)[None]
    assert interior[interp].sum() > 50 * interp.sum()
    rel = np.abs(fast["flux"].values[interior] / (S * 0.75**2) - 1)
    assert rel.max() <= 2e-3


def test_bad_tolerance_and_read_range_are_refused(tmp_path):
    sim = simulate_rss(None, bundle=19, wavelength=manga_wave(5000.0, 8), seed=1)
    with pytest.raises(ValueError, match="reuse_tolerance"):
        build(sim, tmp_path / "bad.zarr", -1.0)
    n = sim.sizes["wavelength"]
    assert read_range(2, 5, n, block=4) == (0, 8)
    assert read_range(0, 4, 100, block=4) == (0, 5)
    a = [sim[v].values for v in ("xpos", "ypos")] + [np.full(sim["xpos"].shape, 1.2)]
    a += [sim[v].values for v in ("flux", "ivar", "mask")]
    from crrxr.core import CoreConfig

    with pytest.raises(InputError, match="read_range"):
        reconstruct_block_reuse(
            *a, Grid(0.75, 31), CoreConfig(), first=0, out=(2, 5), n_chan=100, tolerance=TOL
        )


@pytest.fixture(scope="module")
def lenslets(tmp_path_factory):
    d = tmp_path_factory.mktemp("lenslets")
    rss = d / "rss.zarr"
    simulate_rss(
        rss,
        lenslets=200,
        wavelength=manga_wave(5000.0, 64),
        scene=[Galaxy(), PointSource(x=2.0, y=-1.5, flux=50.0)],
        noise=30,
        dar_amplitude=1.0,
        seed=3,
    )
    return rss, d


@pytest.mark.parametrize(
    "floor, variant, interpolated",
    [(None, None, True), (1e-6, "code", False), (1e-3, "code", True)],
    ids=["profile", "code-1e-6", "code-1e-3"],
)
def test_lenslets_interpolate_only_where_well_conditioned(lenslets, floor, variant, interpolated):
    """The lenslet profile (paper variant, floor 1e-6): the near-floor modes weigh
    c ~ S^2 / lambda^2, the effective condition is ~1e3, and most channels are interpolated within
    their bound. The code variant at that floor has condition ~7e5 (W is not smooth in wavelength
    there; the bound was exceeded up to 11x): every channel is solved exactly, so the fast cube is
    the exact one. The code variant at a 1e-3 floor (condition ~3e2) interpolates again."""
    rss, d = lenslets
    extra = {} if floor is None else {"crr.sv_floor": floor}
    if variant is not None:
        extra["crr.variant"] = variant
    tag = "profile" if floor is None else f"{floor:g}-{variant}"
    kw = dict(chunk=64, profile="lenslet-0.75", **extra)
    exact = build(rss, d / f"exact-{tag}.zarr", 0.0, **kw)
    fast = build(rss, d / f"fast-{tag}.zarr", TOL, **kw)
    interp = fast["channel_exact"].values == 0
    ok, sigma = good_sigma(exact)
    err = np.where(ok, np.abs(fast["flux"].values - exact["flux"].values) / sigma, 0)
    if interpolated:
        assert interp.mean() > 0.5, interp.mean()
        per_channel = err.max(axis=(1, 2))
        assert np.all(per_channel <= fast["reuse_bound"].values * 1.001 + 1e-5)
        assert err.max() > 1e-7
        assert_masks_explained(fast, exact)
    else:
        assert not interp.any()
        for name in ("flux", "ivar", "mask"):
            np.testing.assert_array_equal(fast[name].values, exact[name].values, err_msg=name)


def test_lenslet_profile_flat_field_in_fast_mode(tmp_path):
    """The lenslet profile (paper variant) on a uniform surface brightness S: lenslet flux
    S pi r^2 (r: the equal-area radius the RSS records), spaxel flux S p^2 over the interior (more
    than 2.5" inside the outermost lenslet's radius; nearer the hexagon's edges single pixels are off
    by up to 9 %, in the code variant at a 1e-3 floor alike), interpolated channels included; the fast
    cube is flat to the same accuracy as the exact one."""
    sim = simulate_rss(
        None, lenslets=200, wavelength=manga_wave(5000.0, 64), noise=30, dar_amplitude=1.0, seed=4
    )
    r = float(sim.attrs["fiber_radius_arcsec"])
    S = 2.0
    sim["flux"] = xr.full_like(sim["flux"], S * np.pi * r**2)
    kw = dict(chunk=64, profile="lenslet-0.75")
    exact = build(sim, tmp_path / "exact.zarr", 0.0, **kw)
    fast = build(sim, tmp_path / "fast.zarr", TOL, **kw)
    interp = fast["channel_exact"].values == 0
    assert interp.mean() > 0.5
    edge = np.hypot(sim["xpos"].values, sim["ypos"].values).max()
    xx, yy = np.meshgrid(fast["x"].values, fast["y"].values)
    good = (fast["mask"].values & masks.DONOTUSE) == 0
    interior = good & (np.hypot(xx, yy) < edge - 2.5)[None]
    assert interior[interp].sum() > 50 * interp.sum()
    p = float(fast["x"].values[1] - fast["x"].values[0])
    for cube in (exact, fast):
        rel = cube["flux"].values[interior] / (S * p**2) - 1
        assert abs(rel.mean()) <= 2e-3 and np.abs(rel).max() <= 0.02
    diff = np.abs(fast["flux"].values - exact["flux"].values)[interior] / (S * p**2)
    assert diff.max() <= 1e-3


def test_build_summary_reports_reuse_and_the_kernel_cut_it_needs(tmp_path):
    """The build summary says how many channels were interpolated (counted here from the store) and
    the largest bound; at a cut below the one reuse needs it names the condition limit that cut
    imposes and the fix; where none could be interpolated at a sufficient cut, it says why."""
    sim = simulate_rss(
        None, bundle=19, wavelength=manga_wave(5000.0, 64), noise=30, dar_amplitude=1.0, seed=6
    )
    seeing = seeing_at(sim["seeing_fwhm"].values.max(), sim["wavelength"].values[0])
    k0 = radial_kernel(np.array(0.0), seeing)
    for cut in (4.0, 7.0):
        path = tmp_path / f"cut{cut:g}.zarr"
        report = run_build(
            sim,
            path,
            params={"kernel.truncation_radius_arcsec": cut, "crr.reuse_tolerance": TOL},
            wave_chunk=64,
            scheduler="synchronous",
            progress=False,
        )
        cube = xr.open_zarr(path)
        n_interp = int((cube["channel_exact"].values == 0).sum())
        assert report.reuse[:4] == (TOL, cut, n_interp, 64)
        assert report.reuse[4] == pytest.approx(float(cube["reuse_bound"].values.max()))
        line = next(x for x in report.summary().splitlines() if x.startswith("weight reuse"))
        assert f"{n_interp}/64 channel(s) interpolated" in line
        # the cut beyond which the cut never limits: the kernel at the largest seeing falls there
        # to JITTER_MAX / COND_MAX of its peak; the limit at this cut: JITTER_MAX / that level
        need, limit = report.reuse[5:]
        level = JITTER_MAX / COND_MAX
        assert radial_kernel(np.array(need), seeing) / k0 == pytest.approx(level, rel=1e-3)
        assert 5.0 < need < 7.0
        at_cut = radial_kernel(np.array(cut), seeing) / k0
        assert limit == pytest.approx(min(COND_MAX, JITTER_MAX / at_cut), rel=1e-6)
        if cut == 4.0:  # the kernel at 4" is ~1e-4 of its peak: W jitters, nothing interpolated
            named = float(re.search(r"kernel.truncation_radius_arcsec=([0-9.]+)", line)[1])
            assert n_interp == 0 and need <= named < need + 0.1
            assert f"condition number stays below {limit:.2g}" in line and limit < 100
        else:
            assert n_interp > 0 and "none" not in line and "truncation" not in line
    none = dataclasses.replace(report, reuse=(TOL, 7.0, 0, 64, 0.0, need, COND_MAX)).summary()
    assert "none met the bound" in none and "0/64 channel(s) interpolated" in none
    exact = run_build(sim, tmp_path / "exact.zarr", wave_chunk=64, progress=False)
    assert exact.reuse is None and "weight reuse" not in exact.summary()


def test_paper_variant_solves_masked_channels_exactly(cosmic):
    """The removal is derived for the code variant only: with the paper variant every channel with
    samples of its own masked is solved exactly, and the rest still interpolates."""
    hit, rss, d = cosmic[0], cosmic[3], cosmic[4]
    fast = build(rss, d / "paper.zarr", TOL, **{"crr.variant": "paper"})
    ex = fast["channel_exact"].values
    assert np.all(ex[list(hit)] == 1), ex[list(hit)]
    assert (ex == 0).sum() > 20


@pytest.mark.parametrize("workers", [1, 2])
def test_short_reuse_cube_keeps_whole_block_chunks(tmp_path, workers, caplog):
    """The default chunk shrinks on short cubes to keep workers busy, but not below a reuse block
    (a chunk of part of a block solves the whole block again); an explicit chunk that is not a
    multiple of the block is built as asked, with a warning that names the fix."""
    sim = simulate_rss(
        None, bundle=7, wavelength=manga_wave(6000.0, 130), noise=30, dar_amplitude=1.0, seed=8
    )
    for chunk, warned in ((None, False), (20, True)):
        caplog.clear()
        report = run_build(
            sim,
            tmp_path / f"c{chunk}_{workers}.zarr",
            params={**CUT, "crr.reuse_tolerance": TOL},
            wave_chunk=chunk,
            scheduler="threads",
            workers=workers,
            progress=False,
        )
        assert report.plan.wave_chunk == (chunk or 64)
        assert ("multiple of 64" in caplog.text) == warned


@pytest.mark.parametrize("workers", [1, 2])
def test_long_reuse_cube_defaults_to_four_block_chunks(workers):
    """Where ``engine.wave_chunk`` is left at its default, a reuse build takes chunks of
    CHUNK_BLOCKS whole blocks (their boundary solves shared), unless >= 4 chunks per worker need
    smaller ones; an exact build keeps the default, and an explicit chunk is kept as asked."""
    sim = simulate_rss(
        None, bundle=7, wavelength=manga_wave(3700.0, 2100), noise=30, dar_amplitude=1.0, seed=8
    )
    chunk = {
        tol: prepare(sim, {**CUT, "crr.reuse_tolerance": tol}, workers=workers)[2].wave_chunk
        for tol in (0.0, TOL)
    }
    assert chunk[0.0] == settings.default_wave_chunk() == 64
    # 2100 channels: >= 4 chunks of 256 per worker for 1 and 2 workers
    assert chunk[TOL] == CHUNK_BLOCKS * 64 == 256
    explicit = prepare(sim, {**CUT, "crr.reuse_tolerance": TOL}, wave_chunk=64, workers=workers)
    assert explicit[2].wave_chunk == 64


def test_large_seeing_needs_a_larger_kernel_cut(tmp_path):
    """At 1.5" seeing the kernel at a 6" cut is ~2e-6 of its peak: pairs crossing the cut make W
    jitter (amplified by the condition, here ~2.6e3), where the curvature bound was measured to
    fail, so every channel is solved exactly (the fast cube is the exact one; without the rule
    59 of 65 channels would be interpolated) and the summary names the cut that is needed. At
    that cut channels are interpolated within their bound."""
    sim = galaxy19(None, 7000.0, 64, dar=1.0, seed=9, seeing=1.5)
    exact, fast, report = exact_and_fast(sim, tmp_path, 6.0)
    assert np.all(fast["channel_exact"].values == 1)
    for name in ("flux", "ivar", "mask"):
        np.testing.assert_array_equal(fast[name].values, exact[name].values, err_msg=name)
    line = next(x for x in report.summary().splitlines() if x.startswith("weight reuse"))
    cut = float(re.search(r"kernel.truncation_radius_arcsec=([0-9.]+)", line)[1])
    seeing = seeing_at(sim["seeing_fwhm"].values.max(), sim["wavelength"].values[0])
    level = radial_kernel(np.array(cut), seeing) / radial_kernel(np.array(0.0), seeing)
    assert 6.0 < cut < 8.0 and 0.5 * JITTER_MAX / COND_MAX < level <= JITTER_MAX / COND_MAX
    exact, fast, report = exact_and_fast(sim, tmp_path, cut)
    interp = fast["channel_exact"].values == 0
    assert interp.mean() > 0.5 and "truncation" not in report.summary()
    assert_within_bound(exact, fast)
    assert_masks_explained(fast, exact)


@pytest.mark.parametrize(("seed", "start"), [(10, 7200.0), (11, 8400.0)])
def test_ill_conditioned_weights_are_interpolated_within_their_bound(tmp_path, seed, start):
    """At 2" seeing a 19 x 9 bundle's weights have condition numbers 3e4-4.5e4 in the red (checked
    here from the singular values of the channels' kernel matrices): above the 8e3 the reuse rule
    allowed while the kernel table was linear in radius (its kinks, amplified by the condition,
    broke the bound). With the cubic table and the cut the summary names, most channels are
    interpolated and each stays within its certified bound of the exact build (CLI-equivalent
    path: run_build)."""
    sim = galaxy19(None, start, 64, dar=1.0, seed=seed, seeing=2.0)
    cut = 10.0
    grid, cfg, _ = core_inputs(sim, {"kernel.truncation_radius_arcsec": cut})
    solver = ChannelSolver(grid, cfg)
    fw = seeing_at(sim["seeing_fwhm"].values[sim["exposure_index"].values], start)
    A = solver.kernel_matrix(
        sim["xpos"].values[:, 0].copy(), sim["ypos"].values[:, 0].copy(), fw, sim["ivar"][:, 0] > 0
    )[0]
    s = np.linalg.svd(A.toarray(), compute_uv=False)
    assert 2.5e4 < s[0] / s[s >= 1e-6][-1] < COND_MAX

    exact, fast, report = exact_and_fast(sim, tmp_path, cut)
    assert "truncation" not in report.summary()
    assert (fast["channel_exact"].values == 0).mean() > 0.5
    assert_within_bound(exact, fast)
    iv_ok = good_sigma(exact)[0] & (fast["ivar"].values > 0)
    assert np.max(np.abs(fast["ivar"].values[iv_ok] / exact["ivar"].values[iv_ok] - 1)) < 1e-3
    assert_masks_explained(fast, exact)


def reuse_block_against_exact(sim):
    """The first 64 channels of a 65-channel RSS, reused and exact; asserts every interpolated
    channel's flux within its stored bound and ivar within 0.1 % and within its stored variance
    bound (interpolated ones). Returns (ReuseResult, per-channel largest flux error in sigma)."""
    grid, cfg, arrays = core_inputs(sim)
    rr = reconstruct_block_reuse(*arrays, grid, cfg, first=0, out=(0, 64), n_chan=65, tolerance=TOL)
    ex = reconstruct_block(*(a[:, :64] for a in arrays), grid, cfg)
    fa = rr.block
    worst = np.zeros(64)
    for o in np.flatnonzero(~rr.exact):
        ok = (ex.ivar[o] > 0) & (fa.ivar[o] > 0)
        ok &= ((ex.mask[o] | fa.mask[o]) & masks.DONOTUSE) == 0
        err = np.abs(fa.flux[o][ok] - ex.flux[o][ok]) * np.sqrt(ex.ivar[o][ok])
        assert err.max() <= rr.bound[o] * 1.001 + 1e-7, (o, rr.nodes[o], err.max(), rr.bound[o])
        iv = np.max(np.abs(fa.ivar[o][ok] / ex.ivar[o][ok] - 1))
        assert iv <= 1e-3, (o, iv)
        if rr.nodes[o] >= 2:  # interpolated (a node's own removal carries no variance model)
            assert iv <= rr.var_bound[o] * 1.001 + 1e-9, (o, rr.nodes[o], iv, rr.var_bound[o])
        worst[o] = err.max()
    return rr, worst


@pytest.mark.parametrize(
    ("check_nodes", "at", "nodes", "k"),
    [
        ((3, 35), 19, (3, 11), np.arange(3, 12)),  # linear, checked over the parent segment
        ((3, 19, 35), 11, (3, 11, 19), np.arange(3, 20)),  # quadratic, the parent's quadratic
        # the second half's quadratic, checked in the first half
        ((3, 19, 35), 11, (3, 19, 35), np.arange(19, 36)),
        # cubic: a segment's nodes and its parent's other end, checked against the cubic through
        # the segment's ends and its parent's and grandparent's other ends
        ((3, 11, 19, 35), 7, (3, 7, 11, 19), np.arange(3, 12)),
    ],
    ids=["linear", "quadratic", "sibling-quadratic", "cubic"],
)
def test_interpolation_model_is_exact_for_a_constant_next_derivative(check_nodes, at, nodes, k):
    """The error model of linear (2 nodes), quadratic (3) and cubic (4) interpolation, against a
    dense reference: for a polynomial of degree + 1 (constant next derivative), interpolation through
    the nodes errs at k by exactly D ratio(k), with D the check's error (prediction - value) at
    its node; the Lagrange coefficients reproduce any polynomial of the interpolant's degree."""

    degree = len(nodes) - 1
    rng = np.random.default_rng(degree)
    coef = rng.normal(size=degree + 2)  # highest power first
    # W(c) as a (1, 1) matrix per channel: the polynomial's value
    value = np.polyval(coef, np.arange(40.0))
    pred = _lagrange(check_nodes, np.array([at]))[:, 0] @ value[list(check_nodes)]
    D = np.array([[pred - value[at]]])
    model = _Check(check_nodes, at, D, np.zeros(1), 0.0, 0.0).model(nodes)
    interp = _lagrange(nodes, k).T @ value[list(nodes)]
    expected = np.abs(model.D[0, 0]) * model.ratio(k)
    np.testing.assert_allclose(np.abs(interp - value[k]), expected, rtol=1e-9, atol=1e-9)
    assert expected.max() > 1e-3  # the case interpolates with a real error
    low = np.polyval(coef[1:], np.arange(40.0))  # degree `degree`: reproduced exactly
    np.testing.assert_allclose(_lagrange(nodes, k).T @ low[list(nodes)], low[k], rtol=1e-12)


@pytest.mark.parametrize("bad", [0.0, 0.002], ids=["unmasked", "masked"])
def test_cubic_interpolation_holds_its_bound_where_w_curves_fastest(bad):
    """Just past the DAR reference (5000 A, DAR 2", 19 x 9), where W curves fastest, some halves
    are bounded only by the cubic through four nodes (with and without masked samples). Every
    interpolated channel against its exact solve: flux within the certified bound, ivar within
    0.1 %; the cubic channels really differ from the exact solves."""
    rr, worst = reuse_block_against_exact(galaxy19(None, 5000.0, 65, dar=2.0, bad=bad).load())
    cubic = rr.nodes == 4
    assert cubic.sum() >= 3, np.bincount(rr.nodes)
    assert worst[cubic].max() > 1e-6


@pytest.mark.parametrize(("start", "dar"), [(3650.0, 1.0), (4300.0, 2.0), (6000.0, 2.0)])
def test_second_half_takes_the_quadratic_checked_in_the_first(start, dar):
    """Where both linear halves of a block fail and the first is refined (its middle, channel 16,
    solved), the quadratic through the block's three nodes (0, 32, 64) is checked at 16 and
    interpolates the second half: 4 solves (0, 16, 32, 64) instead of 5 (and 48). Every channel
    against its exact solve: flux within the stored bound, ivar within 0.1 %."""
    rr, worst = reuse_block_against_exact(galaxy19(None, start, 65, dar=dar).load())
    assert rr.n_solves == 4
    assert np.flatnonzero(rr.exact).tolist() == [0, 16, 32]
    assert np.all(rr.nodes[33:64] == 3)  # quadratic through (0, 32, 64)
    assert worst[33:].max() > 1e-6  # the second half really differs from the exact solves


@pytest.mark.parametrize("bound", [0.0, 1e-3, 0.02, 0.1])
def test_pixels_left_out_of_the_bounds_are_lowcov_in_the_exact_solve_too(bound):
    """A pixel left out of the flux and variance bounds must be LOWCOV whatever the exact
    coverages are within the bound: reference, the LOWCOV rule (coverage above 2 x the median
    nonzero coverage) applied to the worst case, every pixel left out lowered and every other
    raised by the bound. Pixels far above the edge are left out (the rule is not vacuous)."""
    rng = np.random.default_rng(4)
    cover = rng.lognormal(sigma=0.8, size=(300, 6))
    cover[:5, 0] = 0.0  # pixels without coverage do not enter the median
    threshold = 2.0
    out = _certain_lowcov(threshold, cover, np.full(6, bound))
    worst = np.where(out, cover * (1 - bound), cover * (1 + bound))
    edge = threshold * np.array([np.median(c[c > 0]) for c in worst.T])
    assert np.all(worst[out] > np.broadcast_to(edge, cover.shape)[out])
    edge0 = threshold * np.array([np.median(c[c > 0]) for c in cover.T])
    far = cover > edge0 * (1 + 3 * bound) / (1 - 3 * bound) + 1e-9
    assert far.any() and np.all(out[far])
    assert not np.any(out[cover < edge0])


@pytest.mark.parametrize("bad", [0.0, 0.002], ids=["unmasked", "masked"])
@pytest.mark.parametrize("dar", [1.0, 2.0])
def test_quadratic_interpolation_holds_its_bound_near_the_dar_reference(dar, bad):
    """Near the DAR reference wavelength (4900 A; the exposures' offsets vanish together) W curves
    too fast for linear interpolation between the nodes the variance bound allows; the quadratic
    through a segment's three nodes, checked against the parent segment's quadratic, takes over.
    Every interpolated channel (linear and quadratic, with and without masked samples) against
    its exact solve: flux within the certified bound, ivar within 0.1 %."""

    sim = galaxy19(None, 4900.0, 65, dar=dar, bad=bad).load()
    rr, worst = reuse_block_against_exact(sim)
    quad = rr.nodes == 3
    assert quad.sum() >= 5, np.bincount(rr.nodes)
    if bad:
        masked_quad = quad & np.any(~(sim["mask"].values[:, :64] == 0), axis=0)
        assert masked_quad.any(), "a channel with masked samples interpolated quadratically"
    assert worst[quad].max() > 1e-7  # the quadratic channels really differ from the exact solves


@pytest.mark.parametrize(
    ("start", "dar", "bad", "share"),
    [
        (4900.0, 1.0, 0.002, 0.6),
        (3650.0, 2.0, 0.0, 0.8),
        (6000.0, 2.0, 0.0, 0.9),
        (5000.0, 2.0, 0.002, 0.6),
    ],
    ids=["dar-reference", "selection-changes", "sibling-quadratic", "cubic"],
)
def test_fast_build_is_within_its_bound(tmp_path, start, dar, bad, share):
    """Four cases of the core tests through run_build (the CLI's path): near the DAR reference
    (DAR 1", 0.2 % masked; quadratic interpolation in use, test above), across selection changes
    (DAR 2" in the blue; nodes moved between selections, test below), a second half interpolated
    by the quadratic checked in the first, and cubic interpolation (masked channels included;
    tests above). Each channel within its stored bound of the exact build, ivar within 0.1 %,
    masks explained, most channels interpolated."""
    sim = galaxy19(None, start, 64, dar=dar, bad=bad)
    exact, fast, _ = exact_and_fast(sim, tmp_path, 6.0)
    assert (fast["channel_exact"].values == 0).mean() > share
    assert_within_bound(exact, fast)
    iv_ok = good_sigma(exact)[0] & (fast["ivar"].values > 0)
    assert np.max(np.abs(fast["ivar"].values[iv_ok] / exact["ivar"].values[iv_ok] - 1)) < 1e-3
    assert_masks_explained(fast, exact)


def test_blocks_in_one_call_share_their_boundary_solve_with_the_same_bits(tmp_path):
    """A block's closing channel is the next block's first: processed in one call (one chunk),
    the next block takes over that solve instead of repeating it. The cube is bitwise the one
    block-by-block calls give (core) and the one any chunking gives (engine, CLI path)."""

    rss = tmp_path / "rss.zarr"
    sim = galaxy19(rss, 6000.0, 200, dar=1.0, bad=0.002, seed=3).load()
    grid, cfg, arrays = core_inputs(sim)
    whole = reconstruct_block_reuse(
        *(a[:, :193] for a in arrays), grid, cfg, first=0, out=(0, 192), n_chan=200, tolerance=TOL
    )
    parts = [
        reconstruct_block_reuse(
            *(a[:, b : b + 65] for a in arrays),
            grid,
            cfg,
            first=b,
            out=(b, b + 64),
            n_chan=200,
            tolerance=TOL,
        )
        for b in (0, 64, 128)
    ]
    for name in ("flux", "ivar", "mask"):
        joined = np.concatenate([getattr(r.block, name) for r in parts])
        np.testing.assert_array_equal(getattr(whole.block, name), joined, err_msg=name)
    for name in ("exact", "bound", "nodes"):
        joined = np.concatenate([getattr(r, name) for r in parts])
        np.testing.assert_array_equal(getattr(whole, name), joined, err_msg=name)
    assert sum(r.n_solves for r in parts) - 2 <= whole.n_solves < sum(r.n_solves for r in parts)

    cubes = [build(rss, tmp_path / f"fast{c}.zarr", TOL, chunk=c) for c in (192, 64, 7)]
    for other in cubes[1:]:
        for name in ("flux", "ivar", "mask", "channel_exact", "reuse_bound"):
            np.testing.assert_array_equal(other[name].values, cubes[0][name].values, err_msg=name)


def assert_interpolated_within_bounds(rr, ex) -> None:
    """Every interpolated channel of the reuse block ``rr`` against the exact block ``ex``: flux
    within its bound, ivar within 0.1 %, masks equal but for its borderline pixels; some bound
    above 1e-5 (interpolated, not copied)."""
    fa = rr.block
    for o in np.flatnonzero(~rr.exact):
        ok = (ex.ivar[o] > 0) & (fa.ivar[o] > 0)
        ok &= ((ex.mask[o] | fa.mask[o]) & masks.DONOTUSE) == 0
        err = np.abs(fa.flux[o][ok] - ex.flux[o][ok]) * np.sqrt(ex.ivar[o][ok])
        assert err.max() <= rr.bound[o] * 1.001 + 1e-7, (o, err.max(), rr.bound[o])
        assert np.max(np.abs(fa.ivar[o][ok] / ex.ivar[o][ok] - 1)) <= 1e-3
        assert np.count_nonzero(fa.mask[o] != ex.mask[o]) <= rr.borderline[o]
    assert max(rr.bound) > 1e-5


def selection_runs(grid, cfg, arrays, n: int) -> list[int]:
    """Lengths of the runs of channels with the same solved-pixel selection among the first ``n``."""
    solver = ChannelSolver(grid, cfg)
    dead = np.zeros(arrays[0].shape[0], dtype=bool)
    sel = [
        solver._geometry(*(np.ascontiguousarray(a[:, c]) for a in arrays[:2]), dead)[3].copy()
        for c in range(n)
    ]
    starts = [0] + [c for c in range(1, n) if not np.array_equal(sel[c], sel[c - 1])]
    return list(np.diff(starts + [n]))


@pytest.mark.parametrize(
    ("start", "dar", "bad", "seed"),
    [(3650.0, 2.0, 0.0, 5), (3650.0, 1.5, 0.0, 5), (5500.0, 2.0, 0.0, 5), (3650.0, 2.0, 5e-4, 7)],
)
def test_blocks_interpolate_across_selection_changes(start, dar, bad, seed):
    """Pixels entering and leaving the selection (DAR in the blue) no longer end the interpolation:
    node solves are moved to each channel's selection (crrxr.core.pixel_update), so a block needs
    fewer exact channels than runs of one selection each would (every run had its own nodes); also
    with a few channels with masked samples (no more than runs; solved exactly where their nodes
    lie on other selections). Every interpolated channel against its exact solve: flux within its
    bound, ivar within 0.1 %, masks equal but for borderline pixels; PSF images of channels in
    every selection within 1e-3 of the peak."""
    sim = galaxy19(None, start, 65, dar=dar, bad=bad, seed=seed).load()
    grid, cfg, arrays = core_inputs(sim)
    runs = selection_runs(grid, cfg, arrays, 65)
    assert len(runs) >= 3
    # runs of one selection each: the ends of every run and a middle check are exact (all of a
    # run of <= 3 channels), but the block's closing channel, which is not an output
    per_run = sum(min(length, 3) for length in runs) - 1
    want = list(range(1, 64, 6))
    rr = reconstruct_block_reuse(
        *arrays, grid, cfg, first=0, out=(0, 64), n_chan=65, tolerance=TOL, want=want
    )
    ex = reconstruct_block(*(a[:, :64] for a in arrays), grid, cfg, want=want)
    assert rr.n_moves > 0
    assert rr.exact.sum() < per_run, (rr.exact.sum(), runs)
    assert not bad or np.any(sim["mask"].values[:, :64] != 0), "channels with masked samples"
    assert_interpolated_within_bounds(rr, ex)
    for w in want:
        np.testing.assert_allclose(rr.block.psf[w], ex.psf[w], rtol=0, atol=1e-3 * ex.psf[w].max())


@pytest.mark.parametrize(
    ("start", "dar", "bad", "seed"),
    [(3650.0, 2.0, 0.0, 5), (3650.0, 2.0, 5e-4, 7), (7000.0, 1.0, 3e-3, 3)],
    ids=["moved", "moved-masked", "removed"],
)
def test_fast_lsf_is_the_second_moment_through_the_weights_applied(start, dar, bad, seed):
    """The cube LSF of a fast block is sqrt(W sigma^2 / W 1) of the weights each channel gets
    (interpolated, moved across selection changes, samples removed), formed without W. Reference:
    the flux path. With a tolerance that accepts every interpolation the plan depends on the
    geometry and ivar only, so the fast cubes of RSSs whose flux is sigma^2 and 1 use the same
    weights, and their ratio is the LSF squared; at the issue's tolerance the LSF agrees with the
    exact solves'."""
    sim = galaxy19(None, start, 65, dar=dar, bad=bad, seed=seed, lsf_sigma=1.3, lsf_spread=0.4)
    sim = sim.load()
    grid, cfg, arrays = core_inputs(sim)
    sig = sim["lsf_sigma"].values
    assert np.ptp(sig[:, 0]) > 0.2  # the LSF varies between fibers
    x, y, fw, _, iv, mask = arrays
    want = [3, 30, 50]
    kw = dict(first=0, out=(0, 64), n_chan=65, tolerance=1e6, want=want)
    rr = reconstruct_block_reuse(*arrays, grid, cfg, lsf={"lsf_sigma": sig}, **kw)
    num = reconstruct_block_reuse(x, y, fw, sig**2, iv, mask, grid, cfg, **kw)
    den = reconstruct_block_reuse(x, y, fw, np.ones_like(sig), iv, mask, grid, cfg, **kw)
    for other in (num, den):
        np.testing.assert_array_equal(other.exact, rr.exact)
        np.testing.assert_array_equal(other.nodes, rr.nodes)
    assert (~rr.exact).sum() >= 40
    usable = (iv > 0) & (mask == 0)
    own = np.array([not np.array_equal(usable[:, c], usable[:, 0]) for c in range(64)])
    if start < 5000:  # the blue: selection changes
        assert rr.n_moves > 0
    else:  # channels with samples of their own masked interpolated on removed weights
        assert np.count_nonzero(own & ~rr.exact) >= 3
    got = rr.block.lsf["lsf_sigma"]
    with np.errstate(divide="ignore", invalid="ignore"):
        moment = num.block.flux / den.block.flux
    ok = np.isfinite(got)
    assert ok.sum() > 0.3 * got.size
    np.testing.assert_allclose(got[ok], np.sqrt(moment[ok]), rtol=1e-9)
    assert np.all(~np.isfinite(np.sqrt(moment[~ok])) | (den.block.flux[~ok] == 0))
    # at the issue's tolerance: against the exact solves' LSF
    fast = reconstruct_block_reuse(
        *arrays, grid, cfg, first=0, out=(0, 64), n_chan=65, tolerance=TOL, lsf={"lsf_sigma": sig}
    )
    ex = reconstruct_block(*(a[:, :64] for a in arrays), grid, cfg, lsf={"lsf_sigma": sig[:, :64]})
    a, b = fast.block.lsf["lsf_sigma"], ex.lsf["lsf_sigma"]
    both = np.isfinite(a) & np.isfinite(b)
    assert both.sum() > 0.3 * a.size and np.array_equal(np.isfinite(a), np.isfinite(b))
    rel = np.abs(a[both] / b[both] - 1)
    print("lsf rel vs exact", rel.max(), "interpolated", (~fast.exact).sum())
    assert rel.max() <= 1e-4
    assert rel.max() > 0  # interpolated, not copied


@pytest.mark.parametrize(
    ("start", "dar", "bad", "seed"),
    [(3650.0, 2.0, 5e-4, 7), (7000.0, 1.0, 3e-3, 3)],
    ids=["moved", "removed"],
)
def test_a_bounded_cache_changes_the_time_not_the_cube(start, dar, bad, seed):
    """The solves, eigendecompositions, moved weights and removals a block keeps are bounded
    (cache_bytes); what the cache drops is recomputed with the same bits when asked for again, so a
    block with a 1-byte cache (nothing kept but the value in use) is bitwise the block with the
    default cache, flux to LSF and PSF, for more solves."""
    sim = galaxy19(None, start, 129, dar=dar, bad=bad, seed=seed, lsf_sigma=1.3, lsf_spread=0.4)
    sim = sim.load()
    grid, cfg, arrays = core_inputs(sim)
    kw = dict(
        first=0,
        out=(0, 128),
        n_chan=129,
        tolerance=TOL,
        want=[3, 70],
        lsf={"lsf_sigma": sim["lsf_sigma"].values},
    )
    kept = reconstruct_block_reuse(*arrays, grid, cfg, **kw)
    bounded = reconstruct_block_reuse(*arrays, grid, cfg, cache_bytes=1, **kw)
    assert (~kept.exact).sum() >= 60
    assert kept.n_moves > 0 if start < 5000 else kept.n_solves > 0
    assert bounded.n_solves > kept.n_solves
    assert bounded.peak_cache < kept.peak_cache / 3
    a, b = kept.block, bounded.block
    for name in ("flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
    np.testing.assert_array_equal(b.lsf["lsf_sigma"], a.lsf["lsf_sigma"])
    for w in (3, 70):
        np.testing.assert_array_equal(b.psf[w], a.psf[w])
    for name in ("exact", "bound", "nodes", "borderline"):
        np.testing.assert_array_equal(getattr(bounded, name), getattr(kept, name), err_msg=name)


@pytest.mark.parametrize(
    ("n_lenslets", "start", "dar", "seed"),
    [(200, 5000.0, 1.0, 3), (400, 3650.0, 1.0, 3), (300, 3650.0, 2.0, 5)],
)
def test_lenslet_blocks_interpolate_across_selection_changes(n_lenslets, start, dar, seed):
    """The lenslet profile (paper variant) takes the pixel-side route (more lenslets than selected
    pixels): its node solves are moved to each channel's selection too (crrxr.core.pixel_update),
    so a block needs fewer exact channels than runs of one selection each would. Every
    interpolated channel against its exact solve: flux within its bound, ivar within 0.1 %, masks
    equal but for borderline pixels."""
    sim = simulate_rss(
        None,
        lenslets=n_lenslets,
        wavelength=manga_wave(start, 65),
        scene=[Galaxy(), PointSource(x=2.0, y=-1.5, flux=50.0)],
        noise=30,
        dar_amplitude=dar,
        seed=seed,
    ).load()
    p = settings.resolve_params(rss_attrs=sim.attrs, profile="lenslet-0.75", overrides=CUT)
    grid, cfg = settings.make_grid(sim, p), settings.core_config(p)
    arrays = (sim["xpos"].values, sim["ypos"].values, sample_seeing(sim, 5400.0, -0.2))
    arrays += tuple(sim[v].values for v in ("flux", "ivar", "mask"))
    assert cfg.variant == "paper"
    runs = selection_runs(grid, cfg, arrays, 65)
    assert len(runs) >= 2
    rr = reconstruct_block_reuse(*arrays, grid, cfg, first=0, out=(0, 64), n_chan=65, tolerance=TOL)
    ex = reconstruct_block(*(a[:, :64] for a in arrays), grid, cfg)
    assert rr.n_moves > 0
    assert rr.exact.sum() < sum(min(length, 3) for length in runs) - 1, (rr.exact.sum(), runs)
    assert_interpolated_within_bounds(rr, ex)
