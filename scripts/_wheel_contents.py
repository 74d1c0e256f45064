"""What the jaxkl wheel ships: checked against the repository (scripts/wheel_smoke.sh).

Every module of ``jaxkl/`` and ``py.typed``; the license in the metadata; nothing else
(no test configuration, tests, experiments or scripts); the version of
``jaxkl/_src/version.py`` in the file name and the metadata. Exit status 1 with the
differences otherwise.

Usage: python scripts/_wheel_contents.py dist/jaxkl-VERSION-py3-none-any.whl
"""

from __future__ import annotations

import pathlib
import re
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def expected_files() -> set[str]:
    package = ROOT / "jaxkl"
    files = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py")}
    return files | {"jaxkl/py.typed"}


def package_version() -> str:
    """``__version__`` of jaxkl/_src/version.py, read without importing jaxkl."""
    text = (ROOT / "jaxkl/_src/version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE).group(1)


def problems(wheel: pathlib.Path) -> list[str]:
    version = package_version()
    found = []
    if not wheel.name.startswith(f"jaxkl-{version}-"):
        found.append(f"wheel {wheel.name} is not version {version}")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"jaxkl-{version}.dist-info"
        metadata = archive.read(f"{dist_info}/METADATA").decode() if (
            f"{dist_info}/METADATA" in names) else ""
    package = {n for n in names if not n.startswith(f"{dist_info}/")}
    want = expected_files()
    found += [f"missing from the wheel: {n}" for n in sorted(want - package)]
    found += [f"shipped but not part of jaxkl: {n}" for n in sorted(package - want)]
    if f"Version: {version}" not in metadata:
        found.append(f"METADATA does not give Version: {version}")
    if "License-Expression: Apache-2.0" not in metadata:
        found.append("METADATA has no License-Expression: Apache-2.0")
    if f"{dist_info}/licenses/LICENSE" not in names:
        found.append("the LICENSE file is not in the wheel's metadata")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    wheel = pathlib.Path(argv[0])
    found = problems(wheel)
    for line in found:
        print(f"wheel contents: {line}", file=sys.stderr)
    if not found:
        print(f"wheel contents: {wheel.name} ships jaxkl's {len(expected_files())} files, "
              "the license and nothing else")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
