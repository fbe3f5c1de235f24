"""The README's examples, run top to bottom as written in a scratch folder.

Every ```bash and ```python block after "## Using it" runs in order (bash with -euo pipefail,
Python with this interpreter; ```sh blocks need a Ray or SLURM cluster of the reader's own and are
not run here: tests/test_ray.py and tests/test_slurm.py cover those commands); the set-up block above it is what runs this test. The scratch folder
gets what the examples assume of a checkout: ``.venv`` (a link to this environment), ``scripts/``
(a link) and the MaNGA file that ``ingest-manga`` reads (a small simulated LOGRSS under the README's
name).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_manga_end_to_end import write_logrss

from crrxr.simulate.rss_writer import simulate_rss

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    text = text[text.index("## Using it") :]
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)


def test_readme_has_the_examples():
    langs = [lang for lang, _ in readme_blocks()]
    assert langs.count("bash") >= 2 and langs.count("python") >= 1


@pytest.mark.slow
def test_readme_examples_run_as_written(tmp_path):
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (tmp_path / "scripts").symlink_to(ROOT / "scripts", target_is_directory=True)
    logrss = tmp_path / "manga-8720-1901-LOGRSS.fits"
    sim = simulate_rss(None, bundle=7, exposures=3, nwave=8, noise=10.0, seed=5).load()
    write_logrss(sim, logrss)
    with open(logrss, "rb") as src, gzip.open(f"{logrss}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    logrss.unlink()
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    # the reader activated .venv once (the first block says so); later blocks run in that shell
    env["PATH"] = f"{tmp_path / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for i, (lang, code) in enumerate(readme_blocks()):
        cmd = (
            ["bash", "-euo", "pipefail", "-c", code]
            if lang == "bash"
            else [sys.executable, "-c", code]
        )
        run = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, (
            f"README block {i} ({lang}) failed:\n{code}\n{run.stderr[-3000:]}"
        )
    for name in ("sim.zarr", "cube.zarr", "rss.zarr", "cube-py.zarr", "my.yaml"):
        assert (tmp_path / name).exists(), name
    with open(tmp_path / "manga-0-0-LOGCUBE.fits.gz", "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"
