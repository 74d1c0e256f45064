#!/usr/bin/env bash
# Set up, lint (ruff, the settings in pyproject.toml), then run the whole test suite
# (unit, statistical, property and doctests). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
