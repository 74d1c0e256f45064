#!/usr/bin/env bash
# The main job: set up, then reproduce every figure and table at CPU size.
# Extra arguments go to `python -m experiments` (e.g. --full, --only NAME, --force, --list).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/python -m experiments all "$@"
