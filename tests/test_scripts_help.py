"""Every script in scripts/ starts: ``--help`` exits 0 (its imports resolve). Benchmarks and studies
are not run by the suite, so a moved helper would otherwise break them silently (time_executors.py
imported a test helper from a module it had left)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_help(script, tmp_path):
    r = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower(), r.stdout
