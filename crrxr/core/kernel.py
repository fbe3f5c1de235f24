"""The reconstruction kernel: double-Gaussian seeing convolved with a circular fiber top hat.

Seeing is a normalised double Gaussian with sigma1 = FWHM / 2.355 / 1.05 and sigma2 = ratio * sigma1
(Liu, Blanton & Law 2020, Eqs. 26-27). The outer component carries ``wing_ratio`` of the inner one's
total flux (``wing="flux"``, the authors' code, which reproduces the paper's Table 1) or of its central
value (``wing="peak"``, the paper's text). A Gaussian of width sigma convolved with a top hat of radius
R has the closed radial form K(r) = P(|Z + r| <= R) / (pi R^2) with Z ~ N(0, sigma^2 I): the CDF of a
Rice distribution, so no FFT grid is needed.
"""

from __future__ import annotations

import numpy as np
from scipy import interpolate, optimize, special

FWHM_TO_SIGMA = 1.0 / 2.355
PSF_FWHM_FACTOR = 1.05


def seeing_at(
    fwhm_ref: float | np.ndarray,
    wavelength: float | np.ndarray,
    lambda_ref: float = 5400.0,
    exponent: float = -0.2,
) -> np.ndarray:
    """Seeing FWHM (arcsec) at ``wavelength`` (Angstrom) from the FWHM at ``lambda_ref``.

    FWHM(l) = FWHM(l_ref) (l / l_ref)^exponent; arrays broadcast (e.g. (n_exp, 1) x (n_wave,)).
    """
    return (
        np.asarray(fwhm_ref, dtype=float)
        * (np.asarray(wavelength, dtype=float) / lambda_ref) ** exponent
    )


def double_gaussian_components(
    fwhm: float,
    sigma_ratio: float = 2.0,
    wing_ratio: float = 1.0 / 9.0,
    wing: str = "flux",
) -> tuple[tuple[float, float], tuple[float, float]]:
    """((flux fraction, sigma) of the inner, (flux fraction, sigma) of the outer Gaussian), arcsec."""
    if not np.isfinite(fwhm) or fwhm <= 0:
        raise ValueError(f"seeing FWHM must be a positive finite number of arcsec, got {fwhm!r}")
    if wing not in ("flux", "peak"):
        raise ValueError(f"wing convention must be 'flux' or 'peak', got {wing!r}")
    sigma1 = fwhm * FWHM_TO_SIGMA / PSF_FWHM_FACTOR
    sigma2 = sigma_ratio * sigma1
    # Flux ratio of the outer to the inner component; a central-value ratio scales by (s2/s1)^2.
    flux_ratio = wing_ratio if wing == "flux" else wing_ratio * sigma_ratio**2
    f1 = 1.0 / (1.0 + flux_ratio)
    return (f1, sigma1), (1.0 - f1, sigma2)


def tophat_gaussian(r: np.ndarray, sigma: float, radius: float) -> np.ndarray:
    """Unit-flux top hat of ``radius`` convolved with a circular Gaussian ``sigma`` at radii ``r``.

    Returns arcsec^-2. P(|Z + r| <= R) for Z ~ N(0, sigma^2 I) is the Rice CDF; scipy's
    ``special.chndtr`` (the non-central chi-square CDF with 2 dof) evaluates it as
    P(chi'^2_2(lambda=(r/s)^2) <= (R/s)^2).
    """
    r = np.asarray(r, dtype=float)
    p = special.chndtr((radius / sigma) ** 2, 2.0, (r / sigma) ** 2)
    return np.clip(p, 0.0, 1.0) / (np.pi * radius**2)


def radial_kernel(
    r: np.ndarray,
    fwhm: float,
    fiber_radius: float = 1.0,
    sigma_ratio: float = 2.0,
    wing_ratio: float = 1.0 / 9.0,
    wing: str = "flux",
) -> np.ndarray:
    """Kernel value (arcsec^-2, unit integral over the plane) at radii ``r`` (arcsec, any shape)."""
    (f1, s1), (f2, s2) = double_gaussian_components(fwhm, sigma_ratio, wing_ratio, wing)
    return f1 * tophat_gaussian(r, s1, fiber_radius) + f2 * tophat_gaussian(r, s2, fiber_radius)


def kernel_fwhm(
    fwhm: float,
    fiber_radius: float = 1.0,
    sigma_ratio: float = 2.0,
    wing_ratio: float = 1.0 / 9.0,
    wing: str = "flux",
) -> float:
    """Full width at half maximum (arcsec) of :func:`radial_kernel` for seeing ``fwhm``."""
    return 2.0 * radius_for_level(0.5, fwhm, fiber_radius, sigma_ratio, wing_ratio, wing)


def cut_level(
    radius: float,
    fwhm: float,
    fiber_radius: float = 1.0,
    sigma_ratio: float = 2.0,
    wing_ratio: float = 1.0 / 9.0,
    wing: str = "flux",
) -> float:
    """The kernel at ``radius`` (arcsec) over its central value, for seeing ``fwhm`` (arcsec): the
    relative step a sample-pixel pair makes when it crosses a truncation at that radius."""
    args = (fwhm, fiber_radius, sigma_ratio, wing_ratio, wing)
    return float(
        radial_kernel(np.array(float(radius)), *args) / radial_kernel(np.array(0.0), *args)
    )


def radius_for_level(
    level: float,
    fwhm: float,
    fiber_radius: float = 1.0,
    sigma_ratio: float = 2.0,
    wing_ratio: float = 1.0 / 9.0,
    wing: str = "flux",
) -> float:
    """The radius (arcsec) beyond which the kernel stays below ``level`` (0 < level < 1) of its
    central value, for seeing ``fwhm``: the inverse of :func:`cut_level`."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    args = (fwhm, fiber_radius, sigma_ratio, wing_ratio, wing)
    log_level = np.log(level)

    def gap(r: float) -> float:
        return np.log(max(cut_level(r, *args), np.finfo(float).tiny)) - log_level

    hi = fiber_radius + fwhm
    while gap(hi) > 0:
        hi *= 2.0
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-12))


class KernelTable:
    """Exact kernel tabulated on a fine (radius, seeing) grid: a cubic spline in radius, linear in
    seeing.

    Rows are built with :func:`radial_kernel` on ``n_points`` radii spanning [0, ``r_max``], at seeing
    FWHM nodes spaced by the relative step ``fwhm_step`` (log-uniform; 0 = one row per distinct FWHM
    value, no interpolation in FWHM), and cached (up to ``max_rows`` rows). A block of channels whose
    seeing drifts as lambda^-0.2 (3e-5 per MaNGA channel) then pays for the special functions about
    once per 17 channels and exposure. Each row stores the values and the second derivatives of
    their cubic spline (K'(0) = 0; not-a-knot at ``r_max``), so the kernel is C2 in radius: linear
    interpolation put a kink into A wherever a sample-pixel distance crossed a radius node (every
    ~7 channels per pair under DAR), and CRR at condition ~4e4 turned those kinks into channel-to-
    channel jitter of W ~10x the curvature that weight reuse bounds (docs/benchmarks.md). The
    interpolation error is <= ~1e-11 of the kernel peak in radius (tested against the exact form);
    the seeing blend keeps it below 1e-6 at the default step.
    """

    def __init__(
        self,
        r_max: float,
        fiber_radius: float = 1.0,
        sigma_ratio: float = 2.0,
        wing_ratio: float = 1.0 / 9.0,
        wing: str = "flux",
        n_points: int = 4097,
        fwhm_step: float = 5e-4,
        max_rows: int = 512,
    ) -> None:
        if not (np.isfinite(r_max) and r_max > 0):
            raise ValueError(f"r_max must be a positive number of arcsec, got {r_max!r}")
        if not (np.isfinite(fwhm_step) and 0 <= fwhm_step < 0.1):
            raise ValueError(f"fwhm_step must be a relative step in [0, 0.1), got {fwhm_step!r}")
        self.r_max = float(r_max)
        self.step = self.r_max / (n_points - 1)
        self.radii = np.linspace(0.0, self.r_max, n_points)
        self.model = (fiber_radius, sigma_ratio, wing_ratio, wing)
        self.log_step = float(np.log1p(fwhm_step))
        self.max_rows = max_rows
        self._rows: dict[float, np.ndarray] = {}

    def row(self, fwhm: float) -> np.ndarray:
        """(2, n_points + 1): kernel values (arcsec^-2) at ``self.radii`` for seeing ``fwhm`` and their
        spline's second derivatives (arcsec^-4); a trailing 0 pads the end of both."""
        key = float(fwhm)
        row = self._rows.get(key)
        if row is None:
            if len(self._rows) >= self.max_rows:
                self._rows.pop(next(iter(self._rows)))
            values = radial_kernel(self.radii, key, *self.model)
            spline = interpolate.CubicSpline(self.radii, values, bc_type=((1, 0.0), "not-a-knot"))
            row = np.zeros((2, self.radii.size + 1))
            row[0, :-1] = values
            row[1, :-1] = spline(self.radii, 2)
            self._rows[key] = row
        return row

    def _nodes(self, fwhm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower node FWHM, upper node FWHM, weight of the upper node) for each FWHM value."""
        if self.log_step == 0.0:
            return fwhm, fwhm, np.zeros_like(fwhm)
        q = np.floor(np.log(fwhm) / self.log_step)
        lo = np.exp(q * self.log_step)
        hi = np.exp((q + 1) * self.log_step)
        return lo, hi, (fwhm - lo) / (hi - lo)

    def __call__(self, r: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
        """Kernel at radii ``r`` (<= r_max) for per-element seeing ``fwhm`` (same shape or scalar)."""
        r = np.asarray(r, dtype=float)
        fwhm = np.broadcast_to(np.asarray(fwhm, dtype=float), r.shape).ravel()
        return self.by_sample(r, np.arange(fwhm.size), fwhm)

    def by_sample(self, r: np.ndarray, sample: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
        """Kernel at radii ``r`` where element k belongs to sample ``sample[k]`` of seeing ``fwhm[sample[k]]``.

        Cheaper than ``__call__`` when many radii share few samples (the distinct seeing values are
        found among the samples, not among the radii).
        """
        r = np.asarray(r, dtype=float)
        fwhm = np.asarray(fwhm, dtype=float)
        if r.size == 0:
            return np.zeros(r.shape)
        if np.any(r > self.r_max * (1 + 1e-12)) or np.any(r < 0):
            raise ValueError(f"kernel table covers radii 0..{self.r_max} arcsec only")
        if np.any(~np.isfinite(fwhm)) or np.any(fwhm <= 0):
            raise ValueError("seeing FWHM must be positive and finite")
        uniq, inverse_sample = np.unique(fwhm, return_inverse=True)
        inverse = inverse_sample[np.asarray(sample).ravel()]
        lo, hi, w_hi = self._nodes(uniq)
        nodes, node_index = np.unique(np.concatenate([lo, hi]), return_inverse=True)
        table = np.stack([self.row(f) for f in nodes])  # (nodes, 2, ncol): values, 2nd derivatives
        i_lo, i_hi = node_index[: uniq.size], node_index[uniq.size :]
        ncol = table.shape[2]
        t = r.ravel() / self.step
        i = np.minimum(t.astype(np.intp), ncol - 2)
        u = t - i
        if uniq.size * ncol <= 2 * r.size:
            # few seeing values: blend the two seeing nodes once per value, so one radial gather follows
            w = w_hi[:, None, None]
            table = table[i_lo] * (1.0 - w) + table[i_hi] * w
            i_lo = i_hi = np.arange(uniq.size)
            w_hi = np.zeros(uniq.size)
        values = table[:, 0].ravel()
        second = table[:, 1].ravel()
        # cubic spline between nodes i and i + 1 from their values and second derivatives
        v = 1.0 - u
        c_lo = (v * v - 1.0) * v * (self.step * self.step / 6.0)
        c_hi = (u * u - 1.0) * u * (self.step * self.step / 6.0)

        def radial(rows: np.ndarray) -> np.ndarray:
            base = rows[inverse] * ncol + i
            return (
                values[base] * v
                + values[base + 1] * u
                + second[base] * c_lo
                + second[base + 1] * c_hi
            )

        w = w_hi[inverse]
        out = radial(i_lo)
        if np.any(w > 0):
            out = out * (1.0 - w) + radial(i_hi) * w
        return out.reshape(r.shape)
