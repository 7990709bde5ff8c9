#!/usr/bin/env bash
# The project's two entry points on a fresh machine; each installs what it needs first.
#   ./dev.sh demo   — the 2D product-composition demo (analytic components, about a minute)
#   ./dev.sh test   — the test suite (extra arguments go to pytest)
# Set-up: a local virtual environment in .venv (override with VENV=...), torch 2.13.0 when torch
# is absent, then this package in editable mode with its test extras.
#
# Which torch build that is depends on where pip looks. `pip install torch==2.13.0` from PyPI
# alone gets, on Linux x86-64, the CUDA build (a 527 MB wheel plus about 15 NVIDIA CUDA
# packages, some 2.7 GB in all; it runs on the CPU too), and on macOS and Windows the CPU
# build. Where pip is configured with a local wheel folder holding torch-2.13.0+cpu (pip's
# find-links), that CPU wheel wins, since 2.13.0+cpu sorts above 2.13.0. For the CPU wheel
# elsewhere, name PyTorch's CPU index: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# ./dev.sh test (or install torch yourself before the first run: an installed torch is kept).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      "$VENV/bin/python" -m pip install -q "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
    else
      "$VENV/bin/python" -m pip install -q "torch==2.13.0"
    fi
  fi
  local stamp="$VENV/.score-compose-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    touch "$stamp"
  fi
}

case "${1:-}" in
  demo)
    shift; setup
    exec "$VENV/bin/compose" demo "$@" ;;
  test)
    shift; setup
    exec "$VENV/bin/python" -m pytest -q "$@" ;;
  *)
    echo "usage: ./dev.sh demo [--out DIR] | ./dev.sh test [pytest args]" >&2
    exit 2 ;;
esac
