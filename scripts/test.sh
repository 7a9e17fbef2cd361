#!/usr/bin/env bash
# Runs the whole test suite after setting up: lint (ruff), types (mypy), tests (pytest).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "== ruff";   .venv/bin/ruff check .
echo "== mypy";   .venv/bin/python scripts/typecheck.py
echo "== pytest"; .venv/bin/python -m pytest --durations=25 "$@"
