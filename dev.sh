#!/usr/bin/env bash
# The project's two entry points on a fresh machine; each installs what it needs first.
#   ./dev.sh demo   — the 2D product-composition demo (analytic components, about a minute)
#   ./dev.sh test   — the test suite (extra arguments go to pytest)
# Set-up: a local virtual environment in .venv (override with VENV=...), torch 2.13.0 (the CPU
# wheel) when torch is absent, then this package in editable mode with its test extras.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
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
