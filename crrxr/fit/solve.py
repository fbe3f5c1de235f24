"""Least-squares fit of one model to one :class:`~crrxr.fit.models.FitData`: start values, the
optimizer on the packed parameter vector (``crrxr.params.pack``/``unpack``), parameter covariance,
Fisher information and its eigenmodes.

Covariance = F^-1 with the Fisher information F = J^T J of the whitened residuals (the noise is
known, so chi^2 is not used to rescale it). Eigenmodes are those of F in units of the parameter
standard errors (D F D, D = diag(stderr)), largest eigenvalue first: mode 0 is the best-constrained
combination, the last one the worst.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from crrxr.fit.models import FitData
from crrxr.params import DerivedResolver, ParameterStore, ParamSpec, pack, refresh_derived, unpack

STATUS_OK = 0
STATUS_NOT_CONVERGED = 1
STATUS_TOO_FEW_DATA = 2
STATUS_MASKED = 3
STATUS_NOT_FITTED = 4
STATUS_ERROR = 5
BINARY_STARTS = 3
STATUS_MEANINGS = "ok not_converged too_few_data channel_masked not_fitted error"


@dataclass(frozen=True)
class ChannelFit:
    """One fit: values (n_par,) in ``keys`` order, stderr, covariance (n_par, n_par), chi2, dof,
    status, fisher (n_par, n_par), eigenvalues (n_par,), eigenvectors (n_par modes, n_par), derived
    values and their stderr (n_derived,)."""

    values: np.ndarray
    stderr: np.ndarray
    covariance: np.ndarray
    chi2: float
    dof: int
    status: int
    fisher: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    derived: np.ndarray
    derived_stderr: np.ndarray

    @classmethod
    def empty(cls, n_par: int, n_derived: int, status: int) -> ChannelFit:
        nan = np.full(n_par, np.nan)
        mat = np.full((n_par, n_par), np.nan)
        d = np.full(n_derived, np.nan)
        return cls(nan, nan, mat, np.nan, 0, status, mat, nan, mat, d, d)


def _bounds(spec: ParamSpec, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = [], []
    for k in keys:
        b = spec[k].bounds
        lo.append(-np.inf if b is None or b.lo is None else float(b.lo))
        hi.append(np.inf if b is None or b.hi is None else float(b.hi))
    return np.array(lo), np.array(hi)


def _linear_amplitudes(data: FitData, stores: list[ParameterStore]) -> np.ndarray:
    """Whitened linear least-squares amplitudes of the predictions of ``stores`` (unit templates)."""
    A = np.column_stack([data.whiten(data.predict(s)) for s in stores])
    coef, *_ = np.linalg.lstsq(A, data.whiten(data.values), rcond=None)
    return coef


def start_values(
    kind: str, spec: ParamSpec, data: FitData
) -> ParameterStore | list[ParameterStore]:
    """Start values: the brightest data point as the position, amplitudes by linear least squares.
    For a binary: the best single source as the primary, then a list of the
    :data:`BINARY_STARTS` data points that, as the secondary, fit best (each is tried)."""
    base = ParameterStore.from_spec_defaults(spec).without(spec.derived_keys())
    i = int(np.argmax(data.values))
    x0, y0 = float(data.px[i]), float(data.py[i])
    if kind == "psf":
        s = base.replace({"psf.x_arcsec": x0, "psf.y_arcsec": y0, "psf.amplitude": 1.0})
        (amp,) = _linear_amplitudes(data, [s])
        return s.replace({"psf.amplitude": float(max(amp, 1e-30))})
    if kind == "source":
        s = base.replace({"source.x_arcsec": x0, "source.y_arcsec": y0})
        unit = s.replace({"source.flux": 1.0, "source.background": 0.0})
        flat = s.replace({"source.flux": 0.0, "source.background": 1.0})
        flux, bg = _linear_amplitudes(data, [unit, flat])
        return s.replace({"source.flux": float(flux), "source.background": float(bg)})
    prim = base.replace(
        {
            "binary.x_arcsec": x0,
            "binary.y_arcsec": y0,
            "binary.contrast": 0.0,
            "binary.flux_total": 1.0,
        }
    )
    prim = _refine_primary(data, prim)
    x0, y0 = prim["binary.x_arcsec"], prim["binary.y_arcsec"]
    found = []
    r = np.hypot(data.px - x0, data.py - y0)
    one = prim.replace({"binary.flux_total": 1.0})
    w_one = data.whiten(data.predict(one))
    wd = data.whiten(data.values)
    for k in np.flatnonzero((r > 1.0) & (data.values > 0.05 * data.values[i])):
        dx, dy = data.px[k] - x0, data.py[k] - y0
        sep = float(np.hypot(dx, dy))
        pa = float(np.rad2deg(np.arctan2(-dx, dy)) % 360.0)
        sec = prim.replace(
            {
                "binary.separation_arcsec": sep,
                "binary.position_angle_deg": pa,
                # (nearly) all flux in the secondary: a unit template of it
                "binary.contrast": 1e12,
                "binary.flux_total": (1.0 + 1e12) / 1e12,
            }
        )
        A = np.column_stack([w_one, data.whiten(data.predict(sec))])
        (f1, f2), *_ = np.linalg.lstsq(A, wd, rcond=None)
        if f1 <= 0 or f2 <= 0:
            continue
        res = wd - A @ np.array([f1, f2])
        found.append((float(res @ res), sep, pa, f2 / f1, f1 + f2))
    if not found:
        raise ValueError("no start found for the binary's secondary")
    found.sort()
    return [
        prim.replace(
            {
                "binary.separation_arcsec": sep,
                "binary.position_angle_deg": pa,
                "binary.contrast": float(c),
                "binary.flux_total": float(ft),
            }
        )
        for _, sep, pa, c, ft in found[:BINARY_STARTS]
    ]


def _refine_primary(data: FitData, prim: ParameterStore) -> ParameterStore:
    """Best single point source (the binary with contrast 0) near the start: position and flux."""
    wd = data.whiten(data.values)

    def store(v: np.ndarray) -> ParameterStore:
        return prim.replace(
            {
                "binary.x_arcsec": float(v[0]),
                "binary.y_arcsec": float(v[1]),
                "binary.flux_total": float(v[2]),
            }
        )

    (flux,) = _linear_amplitudes(data, [prim])
    v0 = np.array([prim["binary.x_arcsec"], prim["binary.y_arcsec"], max(float(flux), 1e-12)])
    sol = optimize.least_squares(
        lambda v: data.whiten(data.predict(store(v))) - wd, v0, x_scale="jac"
    )
    return store(sol.x).replace({"binary.flux_total": 1.0})


def fit_data(
    kind: str,
    spec: ParamSpec,
    resolver: DerivedResolver,
    data: FitData,
    start: ParameterStore | None = None,
) -> ChannelFit:
    """Fit ``data``; values in the order of ``spec.primitive_keys()``."""
    keys = list(spec.primitive_keys())
    derived = list(spec.derived_keys())
    if data.n_eff <= len(keys):
        return ChannelFit.empty(len(keys), len(derived), STATUS_TOO_FEW_DATA)
    start = start if start is not None else start_values(kind, spec, data)
    starts = start if isinstance(start, list) else [start]
    start = starts[0]
    lo, hi = _bounds(spec, keys)
    wd = data.whiten(data.values)

    def residuals(v: np.ndarray) -> np.ndarray:
        return data.whiten(data.predict(unpack(v, start, spec, keys))) - wd

    sol = None
    dof = data.n_eff - len(keys)
    good_enough = dof + 5.0 * np.sqrt(2.0 * dof)  # chi^2 of the right minimum, within 5 sigma
    for s0 in starts:
        x0 = np.clip(pack(s0, spec, keys), lo, hi)
        trial = optimize.least_squares(
            residuals, x0, bounds=(lo, hi), x_scale="jac", xtol=1e-10, ftol=1e-12, gtol=1e-10
        )
        if sol is None or trial.cost < sol.cost:
            sol = trial
        if 2.0 * sol.cost <= good_enough:
            break  # further starts are tried only while the fit is clearly not the right minimum
    J = _jacobian(residuals, sol.x, lo, hi)
    F = J.T @ J
    try:
        cov = np.linalg.inv(F)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(F)
    stderr = np.sqrt(np.clip(np.diag(cov), 0, None))
    D = np.diag(stderr)
    w, V = np.linalg.eigh(D @ F @ D)
    order = np.argsort(w)[::-1]
    best = unpack(sol.x, start, spec, keys)
    if kind == "binary":
        best = best.replace(
            {"binary.position_angle_deg": best["binary.position_angle_deg"] % 360.0}
        )
    values = pack(best, spec, keys)
    ctx = {"peak": data.peak}
    dvals, dstd = _derived(spec, resolver, best, keys, cov, ctx, derived)
    chi2 = float(sol.fun @ sol.fun)
    status = STATUS_OK if sol.status > 0 else STATUS_NOT_CONVERGED
    return ChannelFit(
        values,
        stderr,
        cov,
        chi2,
        data.n_eff - len(keys),
        status,
        F,
        w[order],
        V[:, order].T,
        dvals,
        dstd,
    )


def _jacobian(fun, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Central differences (one-sided at a bound), step 1e-6 x max(1, |x|)."""
    f0 = fun(x)
    J = np.empty((f0.size, x.size))
    for k in range(x.size):
        h = 1e-6 * max(1.0, abs(x[k]))
        up, dn = x.copy(), x.copy()
        up[k] = min(x[k] + h, hi[k])
        dn[k] = max(x[k] - h, lo[k])
        J[:, k] = (fun(up) - fun(dn)) / (up[k] - dn[k])
    return J


def _derived(spec, resolver, best, keys, cov, ctx, derived):
    if not derived:
        return np.zeros(0), np.zeros(0)
    full = refresh_derived(best, spec, resolver, context=ctx)
    vals = np.array([float(full[k]) for k in derived])
    x = pack(best, spec, keys)
    G = np.empty((len(derived), x.size))
    for j in range(x.size):
        h = 1e-6 * max(1.0, abs(x[j]))
        v = x.copy()
        v[j] += h
        try:
            moved = refresh_derived(unpack(v, best, spec, keys), spec, resolver, context=ctx)
        except ValueError:
            v[j] -= 2 * h
            h = -h
            moved = refresh_derived(unpack(v, best, spec, keys), spec, resolver, context=ctx)
        G[:, j] = (np.array([float(moved[k]) for k in derived]) - vals) / h
    return vals, np.sqrt(np.clip(np.einsum("ij,jk,ik->i", G, cov, G), 0, None))
