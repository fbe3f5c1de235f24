"""Lenslet ill-conditioning: how the singular-value floor ``crr.sv_floor`` shapes PSF, noise,
correlation and flux, and which solver route each floor allows (issue #14).

A lenslet RSS is simulated (``simulate_rss(lenslets=N)``, DAR on, galaxy + point source, S/N 30,
seeded) at a few wavelengths and reconstructed with the ``lenslet-0.75`` profile's settings but the
code variant (the profile's own is the paper variant since this study), once per floor. Per (floor, channel) the script reports:

- the spectrum: rank kept, s_max, condition s_max / s_min over the kept modes, the route
  ``solver="auto"`` takes and its error estimate, max|W_gram - W_svd| / max|W_svd| (W_svd: the SVD
  route ``auto`` falls back to);
- PSF: kernel-model fit (free centre, crrxr.core.psf) of noiseless point sources at several sub-pixel
  positions: FWHM / true kernel FWHM, pseudo-Strehl, total flux;
- flat field: W applied to a uniform surface brightness, reconstructed / true over interior pixels;
- correlation: quadratic mean of rho over all interior pixel pairs 1 and 2 px apart (rows and
  columns), from C = W N W^T with the RSS's variances;
- noise: propagated sigma per pixel (what the cube's ivar stores) against a seeded Monte-Carlo of
  ``--mc`` noise realisations of the sample fluxes (same realisations for every floor), per pixel and
  for a 1.5" aperture flux around the central point source.

``--timing-lenslets`` repeats the spectrum / route / accuracy part on a large array and times the
routes (CPU seconds of this process, one BLAS thread): ``auto``, ``gram`` forced, ``svd`` (the lean
SVD ``auto`` falls back to).

    OMP_NUM_THREADS=1 python scripts/study_sv_floor.py --lenslets 500 --timing-lenslets 2400 \\
        --json floor.jsonl

Floors are absolute (units of singular values of N~ A, A = K p^2, as ``crr.sv_floor``); ``--rel-floors``
adds floors relative to each channel's s_max (the script converts them to absolute ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
from scipy import sparse  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from crrxr.core import CoreConfig, Grid, reconstruct_block  # noqa: E402
from crrxr.core.covariance import pair_correlation  # noqa: E402
from crrxr.core.crr import GRAM_RTOL, solve_crr  # noqa: E402
from crrxr.core.kernel import kernel_fwhm, seeing_at  # noqa: E402
from crrxr.core.psf import fit_kernel_fwhm, pseudo_strehl  # noqa: E402
from crrxr.core.response import point_source_fluxes  # noqa: E402
from crrxr.core.slice import ChannelSolver  # noqa: E402
from crrxr.engine import settings  # noqa: E402
from crrxr.simulate import simulate_rss  # noqa: E402
from crrxr.simulate.scenes import Galaxy, PointSource  # noqa: E402

PROFILE = "lenslet-0.75"
# noiseless point sources (arcsec): on a pixel centre, on edges/corners, off-centre
SOURCES = ((0.0, 0.0), (0.375, 0.0), (0.375, 0.375), (0.2, -0.1), (3.1, 2.2), (-2.6, -3.4))
APERTURE = 1.5  # aperture radius (arcsec) of the point-source flux noise
INTERIOR = 1.5  # interior pixels: every point within this distance is inside the array


@dataclasses.dataclass
class Channel:
    """One channel's inputs: positions, seeing, sample variances, grid, config and kernel matrix."""

    x: np.ndarray
    y: np.ndarray
    fw: np.ndarray
    var: np.ndarray
    grid: Grid
    cfg: CoreConfig
    A: sparse.csr_matrix
    sel: np.ndarray
    use: np.ndarray
    wavelength: float


def load_channels(
    n_lenslets: int, wavelengths: list[float], snr: float, seed: int
) -> tuple[list[Channel], tuple]:
    """Simulate the lenslet RSS (in memory) and build each channel's kernel matrix as the engine does.

    Also returns the (n_samples, n_chan) block inputs of :func:`crrxr.core.reconstruct_block`
    (x, y, fwhm, flux, ivar, mask)."""
    scene = [Galaxy(), PointSource(x=0.0, y=0.0, flux=50.0)]
    rss = simulate_rss(
        None,
        bundle=None,
        lenslets=n_lenslets,
        scene=scene,
        noise=snr,
        wavelength=np.asarray(wavelengths, dtype=float),
        dar=True,
        seed=seed,
    )
    # the study is of the code variant's floor (the profile now uses the paper variant; --variants
    # adds paper rows explicitly), so the engine rows keep their meaning
    p = settings.resolve_params(
        profile=PROFILE, rss_attrs=rss.attrs, overrides={"crr.variant": "code"}
    )
    cfg = settings.core_config(p)
    grid = settings.make_grid(rss, p)
    ei = rss["exposure_index"].values
    fw = seeing_at(
        rss["seeing_fwhm"].values[ei][:, None],
        rss["wavelength"].values[None, :],
        float(p["seeing.lambda_ref_angstrom"]),
        float(p["seeing.exponent"]),
    )
    ivar = rss["ivar"].values
    out = []
    for c, wl in enumerate(rss["wavelength"].values):
        x = np.ascontiguousarray(rss["xpos"].values[:, c])
        y = np.ascontiguousarray(rss["ypos"].values[:, c])
        f = np.ascontiguousarray(fw[:, c])
        usable = ivar[:, c] > 0
        A, sel, use = ChannelSolver(grid, cfg).kernel_matrix(x, y, f, usable)
        var = 1.0 / ivar[use, c]
        out.append(Channel(x[use], y[use], f[use], var, grid, cfg, A, sel, use, float(wl)))
    block = (rss["xpos"].values, rss["ypos"].values, fw)
    block += tuple(rss[v].values for v in ("flux", "ivar", "mask"))
    return out, block


def interior_pixels(ch: Channel) -> np.ndarray:
    """Boolean over the solved pixels: every point within INTERIOR arcsec lies inside the array
    (within 0.5" of a lenslet centre; the largest gap of a 0.75" hexagonal lattice is 0.43")."""
    tree = cKDTree(np.column_stack([ch.x, ch.y]))
    xx, yy = ch.grid.centres()
    px, py = xx[ch.sel], yy[ch.sel]
    ok = tree.query(np.column_stack([px, py]))[0] <= 0.5
    for a in np.linspace(0, 2 * np.pi, 24, endpoint=False):
        for r in (0.5 * INTERIOR, INTERIOR):
            q = np.column_stack([px + r * np.cos(a), py + r * np.sin(a)])
            ok &= tree.query(q)[0] <= 0.5
    return ok


def neighbour_pairs(ch: Channel, inside: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (into W) of interior pixel pairs k pixels apart along rows and columns."""
    nx = ch.grid.shape[1]
    pos = np.full(ch.grid.size, -1, dtype=np.intp)
    pos[ch.sel] = np.arange(ch.sel.size)
    flat = ch.sel[inside]
    iy, ix = np.divmod(flat, nx)
    a, b = [], []
    for dy, dx in ((0, k), (k, 0)):
        ny_, nx_ = iy + dy, ix + dx
        ok = (ny_ < ch.grid.shape[0]) & (nx_ < nx)
        j = pos[ny_[ok] * nx + nx_[ok]]
        keep = j >= 0
        keep[keep] = inside[j[keep]]
        a.append(pos[flat[ok][keep]])
        b.append(j[keep])
    return np.concatenate(a), np.concatenate(b)


def spectrum(A: sparse.csr_matrix) -> np.ndarray:
    """Singular values of A, descending."""
    return np.linalg.svd(A.toarray(), compute_uv=False)


def near_floor(S: np.ndarray, floor: float) -> dict:
    """Modes dropped, modes within a factor 2 of the floor, and the kept / dropped mode closest to it
    (as a ratio to the floor): how far the rank decision is from flipping."""
    kept, dropped = S[S >= floor], S[S < floor]
    return {
        "n_sv_below": int(dropped.size),
        "n_sv_near": int(np.sum((S >= floor / 2) & (S <= 2 * floor))),
        "kept_min_over_floor": float(kept.min() / floor) if kept.size and floor > 0 else np.inf,
        "dropped_max_over_floor": float(dropped.max() / floor) if dropped.size else 0.0,
    }


def route_summary(
    A, floor: float, lam: float, timed: bool, variant: str = "code"
) -> tuple[dict, np.ndarray]:
    """Rank, condition, auto's route and estimate, gram-vs-SVD difference and (timed) CPU s."""
    out: dict = {}
    t0 = time.process_time()
    auto = solve_crr(A, lam=lam, floor=floor, variant=variant, solver="auto")
    t1 = time.process_time()
    gram = solve_crr(A, lam=lam, floor=floor, variant=variant, solver="gram")
    t2 = time.process_time()
    svd = solve_crr(A, lam=lam, floor=floor, variant=variant, solver="auto", try_gram=False)
    t3 = time.process_time()
    Ws = svd.weights
    out.update(
        rank_svd=svd.rank,
        rank_gram=gram.rank,
        cond=svd.condition,
        route_auto=auto.solver,
        gram_estimate=gram.error_estimate,
        dW_gram_svd=float(np.max(np.abs(gram.weights - Ws)) / np.max(np.abs(Ws))),
    )
    if timed:
        out.update(cpu_auto_s=t1 - t0, cpu_gram_s=t2 - t1, cpu_svd_s=t3 - t2)
    return out, Ws


def physics(ch: Channel, W: np.ndarray, inside: np.ndarray, noise: np.ndarray) -> dict:
    """PSF, flat field, correlation and noise of the weights W (n_sel, n_use) of one channel."""
    cfg, grid = ch.cfg, ch.grid
    fac = cfg.flux_factor
    kargs = dict(
        fiber_radius=cfg.fiber_radius,
        sigma_ratio=cfg.sigma_ratio,
        wing_ratio=cfg.wing_ratio,
        wing=cfg.wing,
    )
    seeing = float(ch.fw[0])  # one exposure: one seeing per channel
    true_fwhm = kernel_fwhm(seeing, **kargs)
    xx, yy = grid.centres()
    solved = np.zeros(grid.size, bool)
    solved[ch.sel] = True
    res: dict = {"true_fwhm": true_fwhm}
    fr, st, tf = [], [], []
    for sx, sy in SOURCES:
        f = point_source_fluxes(ch.x, ch.y, ch.fw, [(sx, sy, 1.0)], cfg)
        img = np.zeros(grid.size)
        img[ch.sel] = fac * (W @ f)
        img2 = img.reshape(grid.shape)
        use = (solved & (np.hypot(xx - sx, yy - sy) <= 4.0)).reshape(grid.shape)
        fit = fit_kernel_fwhm(img2, grid, free_centre=True, use=use, **kargs)
        fr.append(fit.fwhm / true_fwhm)
        st.append(pseudo_strehl(img2, grid, seeing, 1.0, sx, sy, **kargs))
        tf.append(float(img.sum()))
    res.update(fwhm_ratio=fr, strehl=st, total_flux=tf)
    flat = W @ np.ones(W.shape[1])  # reconstructed / true for a uniform surface brightness
    res.update(
        flat_mean=float(flat[inside].mean()),
        flat_min=float(flat[inside].min()),
        flat_max=float(flat[inside].max()),
        flat_rms=float(np.sqrt(np.mean((flat[inside] - 1) ** 2))),
    )
    for k in (1, 2):
        a, b = neighbour_pairs(ch, inside, k)
        rho = pair_correlation(W, ch.var, a, b)
        res[f"rho{k}"] = float(np.sqrt(np.mean(rho**2)))
    sig = fac * np.sqrt(np.square(W) @ ch.var)  # propagated: 1 / sqrt(cube ivar)
    cover = np.square(W) @ np.ones(W.shape[1])
    low = cover > ch.cfg.lowcov_threshold * np.median(cover[cover > 0])
    mc = fac * (W @ noise)  # (n_sel, n_mc)
    mc_sig = mc.std(axis=1, ddof=1)
    ratio = mc_sig[inside] / sig[inside]
    ap = (np.hypot(xx[ch.sel], yy[ch.sel]) <= APERTURE).astype(float)
    u = fac * (ap @ W)
    res.update(
        sigma_interior_median=float(np.median(sig[inside])),
        sigma_ok_max=float(sig[~low].max()),
        n_lowcov=int(low.sum()),
        n_solved=int(ch.sel.size),
        mc_over_prop_median=float(np.median(ratio)),
        mc_over_prop_p05=float(np.quantile(ratio, 0.05)),
        mc_over_prop_p95=float(np.quantile(ratio, 0.95)),
        ap_sigma_prop=float(np.sqrt(np.sum(u**2 * ch.var))),
        ap_sigma_mc=float((ap @ mc).std(ddof=1)),
        ap_sigma_nocorr=float(np.sqrt(np.sum(ap * sig**2))),
    )
    return res


def floors_for(A, floors: list[float], rel: list[float]) -> list[tuple[str, float, float]]:
    """(label, absolute floor, s_max) for the absolute and relative floors of one channel."""
    s_max = float(sparse.linalg.svds(A, k=1, return_singular_vectors=False)[0])
    out = [(f"{f:g}", f, s_max) for f in floors]
    out += [(f"{r:g} s_max", r * s_max, s_max) for r in rel]
    return out


def run_physics(args) -> list[dict]:
    """The physics grid on the small array."""
    chans = load_channels(args.lenslets, args.wavelengths, args.snr, args.seed)[0]
    rows = []
    for c, ch in enumerate(chans):
        S = spectrum(ch.A)
        inside = interior_pixels(ch)
        rng = np.random.default_rng([args.seed, c])
        noise = rng.standard_normal((ch.var.size, args.mc)) * np.sqrt(ch.var)[:, None]
        print(
            f"# {args.lenslets} lenslets, {ch.wavelength:.0f} A: A {ch.A.shape}, s_max {S[0]:.4f}, "
            f"s_min {S[-1]:.3g}, interior pixels {int(inside.sum())}",
            flush=True,
        )
        for label, floor, s_max in floors_for(ch.A, args.floors, args.rel_floors):
            for variant in args.variants:
                info, W = route_summary(ch.A, floor, ch.cfg.lam, timed=False, variant=variant)
                row = {
                    "part": "physics",
                    "lenslets": args.lenslets,
                    "wavelength": ch.wavelength,
                    # the code variant keeps the plain floor label (tables key on it)
                    "floor": label if variant == "code" else f"{label} {variant}",
                    "variant": variant,
                    "floor_abs": floor,
                    "s_max": s_max,
                    **near_floor(S, floor),
                    **info,
                    **physics(ch, W, inside, noise),
                }
                rows.append(row)
                emit(args, row)
    return rows


def run_timing(args) -> list[dict]:
    """Spectrum, route, gram-vs-SVD accuracy and CPU time per route on the large array."""
    chans, block = load_channels(args.timing_lenslets, args.timing_wavelengths, args.snr, args.seed)
    rows = []
    for floor in args.engine_floors:
        # what the engine pays: reconstruct_block, one channel at a time (each its own solve)
        cfg = dataclasses.replace(chans[0].cfg, sv_floor=floor)
        for c, ch in enumerate(chans):
            t0 = time.process_time()
            res = reconstruct_block(*(a[:, c : c + 1] for a in block), ch.grid, cfg)
            row = {
                "part": "engine",
                "lenslets": args.timing_lenslets,
                "wavelength": ch.wavelength,
                "floor": f"{floor:g}",
                "route": res.solver[0],
                "cpu_block_s": time.process_time() - t0,
            }
            rows.append(row)
            emit(args, row)
    for ch in chans:
        S = spectrum(ch.A)
        print(
            f"# {args.timing_lenslets} lenslets, {ch.wavelength:.0f} A: A {ch.A.shape}, "
            f"s_max {S[0]:.4f}, s_min {S[-1]:.3g}",
            flush=True,
        )
        if args.timing_physics:
            inside = interior_pixels(ch)
            rng = np.random.default_rng([args.seed, 1000])
            noise = rng.standard_normal((ch.var.size, args.mc)) * np.sqrt(ch.var)[:, None]
        for label, floor, s_max in floors_for(ch.A, args.timing_floors, args.rel_floors):
            info, W = route_summary(ch.A, floor, ch.cfg.lam, timed=True)
            if args.timing_physics:
                info.update(physics(ch, W, inside, noise))
            del W
            row = {
                "part": "timing",
                "lenslets": args.timing_lenslets,
                "wavelength": ch.wavelength,
                "floor": label,
                "floor_abs": floor,
                "s_max": s_max,
                **near_floor(S, floor),
                **info,
            }
            rows.append(row)
            emit(args, row)
    return rows


def emit(args, row: dict) -> None:
    """Print one JSON line and append it to ``--json``."""
    line = json.dumps(row)
    print(line, flush=True)
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(line + "\n")


def _rng(vals) -> str:
    lo, hi = float(np.min(vals)), float(np.max(vals))
    return f"{lo:.3f}" if abs(hi - lo) < 5e-4 else f"{lo:.3f}-{hi:.3f}"


def physics_table(rows: list[dict], ref_label: str = "1e-06") -> str:
    """Markdown: one row per floor, ranges over channels (and source positions)."""
    labels = list(dict.fromkeys(r["floor"] for r in rows))
    ref = {r["wavelength"]: r for r in rows if r["floor"] == ref_label}
    head = (
        "| floor | rank kept / pixels (modes within x2 of floor) | cond | auto | dW gram/svd | FWHM / kernel | pseudo-Strehl "
        f"| point-source flux | flat mean [min, max] | rho 1 px | rho 2 px | sigma / sigma({ref_label}) "
        f"| max sigma / sigma({ref_label}) | ap. sigma / sigma({ref_label}) | MC / propagated (pixel median; aperture) "
        "| LOWCOV |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for lab in labels:
        rs = [r for r in rows if r["floor"] == lab]
        rel_sig = [
            r["sigma_interior_median"] / ref[r["wavelength"]]["sigma_interior_median"] for r in rs
        ]
        rel_ap = [r["ap_sigma_prop"] / ref[r["wavelength"]]["ap_sigma_prop"] for r in rs]
        rel_max = [r["sigma_ok_max"] / ref[r["wavelength"]]["sigma_ok_max"] for r in rs]
        ranks = ", ".join(f"{r['rank_svd']}/{r['n_solved']} ({r['n_sv_near']})" for r in rs)
        routes = "/".join(dict.fromkeys(r["route_auto"] for r in rs))
        lines.append(
            f"| {lab} | {ranks} | {min(r['cond'] for r in rs):.2g}-{max(r['cond'] for r in rs):.2g} "
            f"| {routes} | {max(r['dW_gram_svd'] for r in rs):.1e} "
            f"| {_rng(sum((r['fwhm_ratio'] for r in rs), []))} "
            f"| {_rng(sum((r['strehl'] for r in rs), []))} "
            f"| {_rng(sum((r['total_flux'] for r in rs), []))} "
            f"| {_rng([r['flat_mean'] for r in rs])} [{min(r['flat_min'] for r in rs):.3f}, "
            f"{max(r['flat_max'] for r in rs):.3f}] "
            f"| {_rng([r['rho1'] for r in rs])} | {_rng([r['rho2'] for r in rs])} "
            f"| {_rng(rel_sig)} | {_rng(rel_max)} | {_rng(rel_ap)} "
            f"| {_rng([r['mc_over_prop_median'] for r in rs])}; "
            f"{_rng([r['ap_sigma_mc'] / r['ap_sigma_prop'] for r in rs])} "
            f"| {', '.join(str(r['n_lowcov']) for r in rs)} |"
        )
    return "\n".join(lines)


def paired_table(rows: list[dict], ref: str = "1e-06") -> str:
    """Markdown: each floor against ``ref`` channel by channel (worst case over channels)."""
    by = {(r["floor"], r["wavelength"]): r for r in rows}
    labels = [lab for lab in dict.fromkeys(r["floor"] for r in rows) if lab != ref]
    head = (
        f"| floor | worst flat pixel (vs {ref}) | worst point-source flux (vs {ref}) "
        "| max change FWHM / kernel | max change pseudo-Strehl | sigma change | rho 1 px change "
        "| rho 2 px change |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]

    def worst(r: dict) -> tuple[float, float]:
        flat = max(1 - r["flat_min"], r["flat_max"] - 1)
        return flat, float(np.max(np.abs(np.asarray(r["total_flux"]) - 1)))

    for lab in labels:
        pairs = [(by[(ref, w)], r) for (f, w), r in by.items() if f == lab and (ref, w) in by]
        a = np.array([worst(p) for p, _ in pairs])
        b = np.array([worst(r) for _, r in pairs])
        dfw = max(np.max(np.abs(np.subtract(r["fwhm_ratio"], p["fwhm_ratio"]))) for p, r in pairs)
        dst = max(np.max(np.abs(np.subtract(r["strehl"], p["strehl"]))) for p, r in pairs)
        dsig = [r["sigma_interior_median"] / p["sigma_interior_median"] - 1 for p, r in pairs]
        d1 = [r["rho1"] - p["rho1"] for p, r in pairs]
        d2 = [r["rho2"] - p["rho2"] for p, r in pairs]
        lines.append(
            f"| {lab} | {100 * b[:, 0].max():.1f} % ({100 * a[:, 0].max():.1f} %) "
            f"| {100 * b[:, 1].max():.1f} % ({100 * a[:, 1].max():.1f} %) | {dfw:.4f} | {dst:.4f} "
            f"| {100 * min(dsig):+.1f} to {100 * max(dsig):+.1f} % "
            f"| {min(d1):+.4f} to {max(d1):+.4f} | {min(d2):+.4f} to {max(d2):+.4f} |"
        )
    return "\n".join(lines)


def timing_table(rows: list[dict]) -> str:
    """Markdown: one row per (floor, channel) of the large array."""
    head = (
        f"| floor | wavelength | rank kept | cond | gram estimate (accept <= {GRAM_RTOL:g}) | auto "
        "| dW gram/svd | modes within x2 of floor | kept min / floor | dropped max / floor "
        "| CPU auto s | CPU gram s | CPU svd s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if r["part"] != "timing":
            continue
        lines.append(
            f"| {r['floor']} | {r['wavelength']:.0f} | {r['rank_svd']} | {r['cond']:.3g} "
            f"| {r['gram_estimate']:.2g} | {r['route_auto']} | {r['dW_gram_svd']:.1e} "
            f"| {r['n_sv_near']} | {r['kept_min_over_floor']:.3g} | {r['dropped_max_over_floor']:.3g} "
            f"| {r['cpu_auto_s']:.2f} | {r['cpu_gram_s']:.2f} | {r['cpu_svd_s']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the physics grid and/or the timing part; print JSON lines and markdown tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lenslets", type=int, default=500, help="physics grid array (0 = skip)")
    p.add_argument("--wavelengths", type=float, nargs="+", default=[3700.0, 5400.0, 9000.0])
    p.add_argument(
        "--floors", type=float, nargs="+", default=[1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2]
    )
    p.add_argument("--rel-floors", type=float, nargs="*", default=[1e-3])
    p.add_argument(
        "--variants",
        nargs="+",
        choices=("code", "paper"),
        default=["code"],
        help="CRR variants of the physics grid (rows of 'paper' are labelled '<floor> paper')",
    )
    p.add_argument("--ref", default="1e-06", help="floor label the physics tables compare against")
    p.add_argument("--mc", type=int, default=200, help="noise realisations")
    p.add_argument("--snr", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timing-lenslets", type=int, default=0, help="timing array (0 = skip)")
    p.add_argument("--timing-wavelengths", type=float, nargs="+", default=[5400.0, 9000.0])
    p.add_argument("--timing-floors", type=float, nargs="+", default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
    p.add_argument(
        "--engine-floors",
        type=float,
        nargs="*",
        default=[1e-6, 1e-3],
        help="floors timed through reconstruct_block on the timing array",
    )
    p.add_argument(
        "--timing-physics", action="store_true", help="PSF/noise/flux on the timing array too"
    )
    p.add_argument("--json", default=None, help="append JSON lines here")
    p.add_argument(
        "--summarise", nargs="+", default=None, help="only print the tables of these JSON files"
    )
    args = p.parse_args(argv)
    if args.summarise:
        rows = [json.loads(line) for f in args.summarise for line in open(f)]
        phys = [r for r in rows if r["part"] == "physics"]
        if phys:
            print(physics_table(phys, args.ref) + "\n\n" + paired_table(phys, args.ref))
        timing = [r for r in rows if r["part"] in ("timing", "engine")]
        if timing:
            print("\n" + timing_table(timing))
        return 0
    with threadpool_limits(1):
        phys = run_physics(args) if args.lenslets else []
        timing = run_timing(args) if args.timing_lenslets else []
    if phys:
        print(f"\n{args.lenslets} lenslets, channels {args.wavelengths}, {args.mc} realisations\n")
        print(physics_table(phys, args.ref))
        print()
        print(paired_table(phys, args.ref))
    if timing:
        print(f"\n{args.timing_lenslets} lenslets\n")
        print(timing_table(timing))
        engine = [r for r in timing if r["part"] == "engine"]
        if engine:
            print("\nreconstruct_block, CPU s per channel (route)\n")
            for r in engine:
                print(
                    f"floor {r['floor']}, {r['wavelength']:.0f} A: {r['cpu_block_s']:.2f} ({r['route']})"
                )
        if args.timing_physics:
            print(f"\n{args.timing_lenslets} lenslets, {args.mc} realisations\n")
            print(physics_table([r for r in timing if r["part"] == "timing"]))
            print()
            print(paired_table([r for r in timing if r["part"] == "timing"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
