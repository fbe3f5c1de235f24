"""Checks of the shared RSS generator (tests/rss_fixtures.py) against its own documented physics."""

from __future__ import annotations

import numpy as np
from rss_fixtures import make_rss


def test_make_rss_flux_peaks_at_the_centre_fiber():
    ds = make_rss(n_exp=1, noise=1e-6, jitter=0.0)
    centre = int(np.argmin(np.hypot(ds.xpos[:, 0], ds.ypos[:, 0]).values))
    assert int(np.argmax(ds.flux.values[:, 0])) == centre
    # the whole bundle collects most of a point source's flux (fibers cover ~58% of the area)
    assert 0.3 * 10 < float(ds.flux[:, 0].sum()) < 10.0


def test_flat_field_fiber_flux_is_sb_times_fiber_area():
    ds = make_rss(n_wave=2, point_flux=0.0, flat_sb=2.0, noise=1e-9)
    np.testing.assert_allclose(ds.flux.values, 2.0 * np.pi, rtol=1e-6)


def test_dithers_form_the_manga_lattice_and_dar_moves_positions():
    ds = make_rss(n_exp=3, jitter=0.0, dar=1.0, n_wave=3)
    x, y = ds.xpos.values[:, 0], ds.ypos.values[:, 0]
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(d.min(axis=1), 1.44, atol=0.005)
    np.testing.assert_allclose(ds.xpos.values[:, -1] - ds.xpos.values[:, 0], 1.0)
