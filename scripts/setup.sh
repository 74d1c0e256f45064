#!/usr/bin/env bash
# Create .venv (if absent) and install jaxkl with the pinned versions in constraints.txt.
# Usage: source-free; other scripts call it. Needs only python3 >= 3.11 on the machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -c 'import sys; assert sys.version_info >= (3, 11), "jaxkl needs Python >= 3.11"'
  "$python" -m venv .venv
fi
stamp=.venv/.jaxkl-installed
# The version file too: the installed metadata carries the version (an editable install
# does not re-read it), and tests compare the two.
want="$(cat pyproject.toml constraints.txt jaxkl/_src/version.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[experiments,dev]"
  echo "$want" > "$stamp"
fi
