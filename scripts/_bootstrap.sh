# Sourced by scripts/demo and scripts/test: create .venv if missing and install crrxr[all].
# Idempotent: a stamp file keyed on pyproject.toml skips the install when nothing changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[crrxr] creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
stamp=".venv/.crrxr-install-stamp"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[crrxr] installing crrxr[all] into .venv (first run takes about a minute)"
    # (this machine's pip config names local mirrors that may not exist: drop those warnings only)
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored: it is neither" || true; }
    .venv/bin/python -m pip install -q -e ".[all]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
    echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# Two cores: keep BLAS single-threaded unless the caller says otherwise; crrxr sizes
# worker thread pools itself (workers x BLAS threads never exceed the cores).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
