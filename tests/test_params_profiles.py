"""Profiles, user YAML overrides, --set parsing, the `crrxr params` CLI and the README table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crrxr.cli import main as crrxr_main
from crrxr.params import (
    ParameterStore,
    ProfileError,
    list_profiles,
    load_profile,
    parse_set_options,
    reconstruction_resolver,
    reconstruction_spec,
)
from crrxr.params.table import markdown_table, readme_section

REPO = Path(__file__).resolve().parent.parent
MANGA_EXTENT = {7: 12.0, 19: 17.0, 37: 22.0, 61: 27.0, 91: 32.0, 127: 36.0}  # DESIGN.md section 3


def test_shipped_profiles():
    names = list_profiles()
    assert names == [
        "lenslet-0.75",
        "manga-7",
        "manga-19",
        "manga-37",
        "manga-61",
        "manga-91",
        "manga-127",
    ]
    spec, r = reconstruction_spec(), reconstruction_resolver()
    for n, extent in MANGA_EXTENT.items():
        store = load_profile(f"manga-{n}")
        store.validate_against(spec)
        assert store["grid.extent_arcsec"] == extent
        assert store["kernel.fiber_radius_arcsec"] == 1.0
        nside = r.resolve(store, "grid.nside")
        assert nside % 2 == 1 and nside == (math.ceil(extent / 0.75) // 2) * 2 + 1
    lens = load_profile("lenslet-0.75")
    assert lens["grid.extent_arcsec"] == 0.0 and lens["grid.pixel_scale_arcsec"] == 0.75
    # equal-area radius of a hexagonal 0.75" lenslet cell (as the simulator's lenslet arrays): the flux
    # factor is the pixel-to-cell area ratio
    cell = math.sqrt(3.0) / 2.0 * 0.75**2
    assert math.pi * lens["kernel.fiber_radius_arcsec"] ** 2 == pytest.approx(cell, rel=1e-15)
    assert r.resolve(lens, "output.flux_factor") == pytest.approx(0.75**2 / cell, rel=1e-15)


def test_defaults_without_a_profile():
    assert load_profile() == ParameterStore.from_spec_defaults(reconstruction_spec())
    assert load_profile(None, {"crr.lambda": 1e-4})["crr.lambda"] == 1e-4


def test_user_yaml_over_a_profile(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(
        "profile: manga-127\n"
        "description: tuned\n"
        "crr.lambda: 1e-4\n"  # YAML 1.1 reads this as a string: coerced to float
        "grid:\n"
        "  pixel_scale_arcsec: 0.5\n"
        "mask.bad_bits: 0b101\n"
        "output.correlation_wavelengths_angstrom: [5000, 6000.5]\n"
        "output.correlation_bands: g, r\n"
        "method: shepard\n"
    )
    store = load_profile(f)
    assert store["grid.extent_arcsec"] == 36.0  # from the base profile
    assert store["crr.lambda"] == 1e-4 and store["grid.pixel_scale_arcsec"] == 0.5
    assert store["mask.bad_bits"] == 5 and store["method"] == "shepard"
    wl = store["output.correlation_wavelengths_angstrom"]
    assert wl.dtype == np.float64 and wl.tolist() == [5000.0, 6000.5]
    # overrides win over the file; a path given as str works too
    assert load_profile(str(f), overrides={"crr.lambda": 2e-4})["crr.lambda"] == 2e-4
    # a base given as a relative path
    (tmp_path / "child.yaml").write_text("profile: mine.yaml\nengine.wave_chunk: 8\n")
    child = load_profile(tmp_path / "child.yaml")
    assert child["engine.wave_chunk"] == 8 and child["grid.pixel_scale_arcsec"] == 0.5


@pytest.mark.parametrize(
    "text, match",
    [
        (
            "crr.lamda: 1.0\n",
            r"bad\.yaml: crr\.lamda: unknown parameter \(did you mean 'crr\.lambda'\?\)",
        ),
        (
            "grid.pixel_scale_arcsec: -1\n",
            r"bad\.yaml: grid\.pixel_scale_arcsec: -1\.0 is out of bounds; "
            r"allowed range \(0, inf\) arcsec",
        ),
        ("mask.bad_bits: 4294967296\n", r"mask\.bad_bits: .*allowed range \[0, 4294967295\]"),
        ("crr.lambda: fast\n", r"bad\.yaml: crr\.lambda: expected a float64 value, got str 'fast'"),
        ("engine.wave_chunk: 2.5\n", r"engine\.wave_chunk: expected a int64 value"),
        ("method: mle\n", r"method: 'mle' is not allowed; one of 'crr', 'shepard'"),
        ("grid.nside: 31\n", r"grid\.nside: is derived"),
        ("crr.lambda: .nan\n", r"crr\.lambda: NaN and infinity are not allowed"),
        ("profile: manga-128\n", r"unknown profile 'manga-128' \(did you mean 'manga-127'\?\)"),
        ("- 1\n- 2\n", r"expected a mapping"),
        ("crr: {lambda: 1.0}\ncrr.lambda: 2.0\n", r"'crr\.lambda' is given twice"),
        ("a: [1, 2\n", r"not valid YAML"),
        ("!!python/object:os.system {}\n", r"not valid YAML"),  # safe loader only
    ],
)
def test_bad_user_yaml(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ProfileError, match=match) as info:
        load_profile(f)
    assert str(f) in str(info.value)


def test_every_problem_in_a_file_is_reported(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("crr.lamda: 1.0\ngrid.pixel_scale_arcsec: 0\nmethod: x\n")
    with pytest.raises(ProfileError) as info:
        load_profile(f)
    assert len(info.value.problems) == 3
    assert all(p.startswith(str(f)) for p in info.value.problems)


def test_base_profile_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("profile: b.yaml\n")
    (tmp_path / "b.yaml").write_text("profile: a.yaml\n")
    with pytest.raises(ProfileError, match="cycle"):
        load_profile(tmp_path / "a.yaml")


def test_missing_file_and_unknown_profile():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_profile("no/such/file.yaml")
    with pytest.raises(
        ProfileError, match="unknown profile 'lenslet'.*shipped profiles: lenslet-0.75"
    ):
        load_profile("lenslet")


def test_parse_set_options():
    spec = reconstruction_spec()
    got = parse_set_options(
        [
            "crr.lambda=1e-4",
            "method = shepard",
            "engine.wave_chunk=0x20",
            "mask.bad_bits=0b11",
            "output.correlation_wavelengths_angstrom=5000,6000.25",
            "output.correlation_bands=r,i",
        ],
        spec,
    )
    assert got["crr.lambda"] == 1e-4 and type(got["crr.lambda"]) is float
    assert (
        got["method"] == "shepard" and got["engine.wave_chunk"] == 32 and got["mask.bad_bits"] == 3
    )
    assert got["output.correlation_wavelengths_angstrom"].tolist() == [5000.0, 6000.25]
    assert got["output.correlation_bands"] == "r,i"
    with pytest.raises(ProfileError, match=r"--set: crr\.lambda: -1\.0 is out of bounds"):
        parse_set_options(["crr.lambda=-1"], spec)
    with pytest.raises(ProfileError, match="expected KEY=VALUE"):
        parse_set_options(["crr.lambda"], spec)
    with pytest.raises(ProfileError, match="did you mean 'grid.pixel_scale_arcsec'"):
        parse_set_options(["grid.pixelscale_arcsec=1"], spec)
    with pytest.raises(ProfileError, match="given twice"):
        parse_set_options(["crr.lambda=1", "crr.lambda=2"], spec)


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_show_manga_127(capsys):
    assert crrxr_main(["params", "show", "manga-127"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "manga-127" in lines[0]
    row = next(line for line in lines if line.startswith("grid.extent_arcsec "))
    assert row.split() == ["grid.extent_arcsec", "36.0", "arcsec", "profile"]
    assert next(line for line in lines if line.startswith("grid.nside ")).split() == [
        "grid.nside",
        "49",
    ]
    flux = next(line for line in lines if line.startswith("output.flux_factor "))
    assert float(flux.split()[1]) == 0.75**2 / math.pi
    assert "needs data" in next(line for line in lines if line.startswith("seeing.fwhm_arcsec "))
    # columns are aligned: every value starts in the same column
    rows = [
        line for line in lines if line.startswith(("method ", "crr.lambda ", "engine.wave_chunk "))
    ]
    assert len({len(r) - len(r[len(r.split()[0]) :].lstrip()) for r in rows}) == 1


def test_cli_show_set_and_json(capsys):
    assert crrxr_main(["params", "show", "manga-19", "--set", "crr.lambda=1e-4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"]["crr.lambda"] == 1e-4 and data["params"]["grid.extent_arcsec"] == 17.0
    assert data["derived"]["grid.nside"] == 23
    assert data["spec"]["fingerprint"] == reconstruction_spec().fingerprint()
    assert set(data["unresolved"]) == {
        "seeing.fwhm_arcsec",
        "seeing.sigma1_arcsec",
        "seeing.sigma2_arcsec",
    }


def test_cli_show_errors(capsys):
    assert crrxr_main(["params", "show", "manga-127", "--set", "crr.lamda=1"]) == 1
    assert "did you mean 'crr.lambda'" in capsys.readouterr().err


def test_cli_validate(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("profile: manga-61\ncrr.lambda: 0.002\n")
    assert crrxr_main(["params", "validate", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {good}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("crr.lamda: 0.01\nshepard.sigma_arcsec: -2\n")
    assert crrxr_main(["params", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert (
        f"INVALID {bad}" in err and "did you mean 'crr.lambda'" in err and "(0, inf) arcsec" in err
    )
    assert crrxr_main(["params", "validate", str(tmp_path / "none.yaml")]) == 1


def test_cli_list(capsys):
    assert crrxr_main(["params", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_profiles())


def test_console_script_in_a_fresh_process():
    res = subprocess.run(
        [sys.executable, "-m", "crrxr.cli", "params", "show", "manga-127"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    assert "grid.nside" in res.stdout


# -- README ---------------------------------------------------------------------------------------
def test_readme_table_is_generated_from_the_spec():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme_section(readme) == markdown_table(reconstruction_spec()), (
        "README parameter table is out of date: run scripts/gen_param_table.py"
    )
    table = markdown_table(reconstruction_spec())
    for key in reconstruction_spec().keys():
        assert f"| `{key}` |" in table


def test_correlation_bands_must_match_wavelengths(tmp_path):
    ok = load_profile(
        None, {"output.correlation_wavelengths_angstrom": [6000.0], "output.correlation_bands": "r"}
    )
    assert ok["output.correlation_bands"] == "r"
    with pytest.raises(ProfileError, match="must name 1 distinct band"):
        load_profile(None, {"output.correlation_wavelengths_angstrom": [6000.0]})  # bands g,r,i,z
    f = tmp_path / "bands.yaml"
    f.write_text("output.correlation_bands: g,g,i,z\n")
    with pytest.raises(ProfileError, match=r"bands\.yaml: .*4 distinct band"):
        load_profile(f)
