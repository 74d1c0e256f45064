#!/usr/bin/env bash
# Packaging check, as a user who installs jaxkl meets it: build the wheel (python -m build),
# check what it ships, install it into a fresh virtual environment outside the repository
# (pinned by constraints.txt), and run the import-and-examples smoke test there: every
# public module imports from site-packages, and every docstring example of the installed
# package passes. Usage: bash scripts/wheel_smoke.sh [WORKDIR]  (default: a new temp dir).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
cd "$root"
# sdist first, then the wheel from the sdist (python -m build's default): a stale build/
# folder in the checkout cannot leak into the wheel, and the sdist is checked too.
.venv/bin/python -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
wheel="$(ls "$work"/dist/jaxkl-*.whl)"
.venv/bin/python scripts/_wheel_contents.py "$wheel"
python="${PYTHON:-python3}"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet -c constraints.txt "$wheel" pytest
# From a folder with nothing of the repository in it, so that only the wheel is imported.
mkdir -p "$work/run"
cd "$work/run"
"$work/venv/bin/python" - "$root" <<'PY'
import importlib, pathlib, sys
import jaxkl
repo = pathlib.Path(sys.argv[1]).resolve()
where = pathlib.Path(jaxkl.__file__).resolve()
assert repo not in where.parents, f"jaxkl imported from the repository: {where}"
assert (where.parent / "py.typed").exists(), "py.typed missing from the installed package"
names = ["jaxkl", "jaxkl.estimators", "jaxkl.families", "jaxkl.fitting", "jaxkl.mixtures",
         "jaxkl.montecarlo", "jaxkl.reference", "jaxkl.sharding", "jaxkl.stats", "jaxkl.rl",
         "jaxkl.rl.audit", "jaxkl.rl.presets", "jaxkl.rl.tabular"]
for name in names:
    module = importlib.import_module(name)
    missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
print(f"wheel smoke: jaxkl {jaxkl.__version__} from {where.parent}; {len(names)} modules import")
PY
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider --doctest-modules --pyargs jaxkl \
  -o doctest_optionflags="NORMALIZE_WHITESPACE ELLIPSIS NUMBER" -o addopts=""
echo "wheel smoke: passed ($wheel)"
