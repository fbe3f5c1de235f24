"""Parameter resolution for a build: layering of profile, config file, overrides and RSS hints."""

import pytest

from crrxr.engine.settings import resolve_params
from crrxr.params import load_profile

LENSLET_RADIUS = 0.393778175928249


def test_rss_fiber_radius_used_when_nothing_sets_one():
    p = resolve_params(rss_attrs={"fiber_radius_arcsec": LENSLET_RADIUS})
    assert p["kernel.fiber_radius_arcsec"] == LENSLET_RADIUS
    assert resolve_params()["kernel.fiber_radius_arcsec"] == 1.0  # no hint: the spec default


def test_explicit_fiber_radius_wins_over_the_rss_hint(caplog):
    hint = {"fiber_radius_arcsec": LENSLET_RADIUS}
    assert resolve_params(profile="manga-19", rss_attrs=hint)["kernel.fiber_radius_arcsec"] == 1.0
    assert "differs from the RSS's recorded fiber radius" in caplog.text
    p = resolve_params(overrides=["kernel.fiber_radius_arcsec=0.5"], rss_attrs=hint)
    assert p["kernel.fiber_radius_arcsec"] == 0.5
    lens = resolve_params(profile="lenslet-0.75", rss_attrs=hint)
    assert lens == load_profile("lenslet-0.75")


def test_config_file_may_name_the_same_base_profile(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("profile: manga-37\ncrr.lambda: 1.0e-4\n")
    alone = resolve_params(config=cfg)
    both = resolve_params(profile="manga-37", config=cfg)
    assert alone == both
    assert both["crr.lambda"] == 1e-4 and both["grid.extent_arcsec"] == 22.0


def test_config_file_naming_another_profile_is_refused(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("profile: manga-37\ncrr.lambda: 1.0e-4\n")
    with pytest.raises(
        ValueError, match="names the base profile 'manga-37' but --profile 'manga-127'"
    ):
        resolve_params(profile="manga-127", config=cfg)
