# Sourced by scripts/_bootstrap.sh: a separate .venv-marvin holding the `marvin` extra of
# pyproject.toml (sdss-marvin), which tests use to read exported LOGCUBEs. Separate because
# sdss-marvin 2.8 pins numpy<2 and packaging<21, which would downgrade crrxr's own environment.
# Idempotent (stamp keyed on pyproject.toml). A failed install leaves no stamp; the marvin tests
# then skip with the reason.
MARVIN_VENV="$ROOT/.venv-marvin"
marvin_stamp="$MARVIN_VENV/.crrxr-install-stamp"
if [ ! -f "$marvin_stamp" ] || [ "$(cat "$marvin_stamp")" != "$want" ]; then
    echo "[crrxr] installing the marvin extra into .venv-marvin (first run takes a few minutes)"
    marvin_reqs="$(.venv/bin/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["marvin"]))')"
    if { [ -x "$MARVIN_VENV/bin/python" ] || "$PY" -m venv "$MARVIN_VENV"; } &&
        "$MARVIN_VENV/bin/python" -m pip install -q $marvin_reqs 2>&1 | { grep -v "is ignored: it is neither" || true; }; then
        echo "$want" > "$marvin_stamp"
    else
        echo "[crrxr] could not install marvin into .venv-marvin; marvin tests will skip"
    fi
fi
