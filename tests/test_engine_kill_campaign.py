"""Randomized kill campaign (issue #10): real ``crrxr build`` processes killed (SIGKILL, SIGTERM,
SIGINT) at random moments, many of them inside the template write, each followed by ``--resume``;
every resumed cube must equal an uninterrupted build bitwise, and nothing temporary may be left."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from rss_fixtures import write_rss

CRRXR = str(Path(sys.executable).with_name("crrxr"))
TRIALS = int(os.environ.get("CRRXR_KILL_TRIALS", "10"))


def _cmd(rss, store, *extra):
    return [CRRXR, "build", str(rss), str(store), "--wave-chunk", "2", "--workers", "1"]
    # (extra options appended by callers)


def _timeline(rss, store) -> tuple[float, float]:
    """(seconds until the temporary template appears, seconds until the build ends)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(_cmd(rss, store) + ["--no-progress"], stderr=subprocess.DEVNULL)
    t_tmpl = None
    while proc.poll() is None:
        if t_tmpl is None and any(store.parent.glob(f".{store.name}.tmp-*")):
            t_tmpl = time.monotonic() - t0
        time.sleep(0.005)
    assert proc.returncode == 0
    end = time.monotonic() - t0
    return (t_tmpl if t_tmpl is not None else end / 3), end


@pytest.mark.slow
def test_random_kills_then_resume_equal_an_uninterrupted_build(tmp_path):
    rss = write_rss(tmp_path / "rss.zarr", n_wave=16, n_exp=3)
    ref = tmp_path / "ref.zarr"
    _, t_end = _timeline(rss, ref)
    expected = xr.open_zarr(ref).load()
    rng = random.Random(20261201)
    outcomes = []
    for trial in range(TRIALS):
        store = tmp_path / f"cube{trial}.zarr"
        in_template = trial % 3 == 0  # inside the template write: wait for its temporary folder
        delay = rng.uniform(0.0, 0.15) if in_template else rng.uniform(0.0, t_end)
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
        proc = subprocess.Popen(
            _cmd(rss, store) + ["--no-progress"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        if in_template:
            while proc.poll() is None and not any(tmp_path.glob(f".{store.name}.tmp-*")):
                time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err
        # 75: stopped cleanly; a signal before the handlers are installed (still importing) ends
        # the process with the default action, before it touched anything
        allowed = (0, 75, 130, -signal.SIGKILL, -signal.SIGINT, -signal.SIGTERM)
        assert proc.returncode in allowed, (proc.returncode, err)
        where = "template+" if in_template else ""
        outcomes.append((f"{where}{delay:.2f}", signal.Signals(sig).name, proc.returncode))
        r = subprocess.run(
            _cmd(rss, store) + ["--resume", "--no-progress"], capture_output=True, text=True
        )
        assert r.returncode == 0, (outcomes[-1], r.stderr)
        got = xr.open_zarr(store).load()
        for name in expected.data_vars:
            np.testing.assert_array_equal(
                got[name].values, expected[name].values, err_msg=f"{name} after {outcomes[-1]}"
            )
        leftovers = [p.name for p in tmp_path.glob(f".{store.name}*")]
        assert leftovers == [], leftovers
    print("kill campaign (delay s, signal, exit):", outcomes)
    assert any(rc == -signal.SIGKILL for _, _, rc in outcomes)
