#!/usr/bin/env bash
# Build the documentation site into docs/_build/html with warnings as errors.
# Sets up .venv like scripts/setup.sh (pinned by constraints.txt), adds the [docs] extra
# (Sphinx, myst-parser, furo, offline MathJax, playwright for scripts/docs_check.py),
# then runs sphinx-build -W --keep-going: any warning fails the build (exit 1) after
# every warning has been printed. Extra arguments go to sphinx-build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
stamp=.venv/.jaxkl-docs-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[docs]"
  echo "$want" > "$stamp"
fi
rm -rf docs/_build/html docs/_build/doctrees
exec .venv/bin/python -m sphinx -b html -W --keep-going -q \
  -d docs/_build/doctrees docs docs/_build/html "$@"
