"""The wheel checker (scripts/_wheel_contents.py) that scripts/wheel_smoke.sh runs in CI on
the real wheel: here on doctored wheels, so that each kind of packaging fault is seen."""

import importlib.util
import pathlib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_wheel_contents",
                                               ROOT / "scripts" / "_wheel_contents.py")
wheel_contents = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wheel_contents)
VERSION = wheel_contents.package_version()


def make_wheel(tmp_path, *, version=VERSION, drop=(), extra=(), license_file=True,
               license_expression="Apache-2.0"):
    files = sorted(wheel_contents.expected_files() - set(drop)) + list(extra)
    dist_info = f"jaxkl-{version}.dist-info"
    path = tmp_path / f"jaxkl-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name in files:
            archive.writestr(name, "")
        archive.writestr(f"{dist_info}/METADATA",
                         f"Name: jaxkl\nVersion: {version}\n"
                         f"License-Expression: {license_expression}\n")
        if license_file:
            archive.writestr(f"{dist_info}/licenses/LICENSE", "Apache License")
    return path


def test_a_complete_wheel_passes(tmp_path):
    assert wheel_contents.problems(make_wheel(tmp_path)) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(drop=["jaxkl/py.typed"]), "missing from the wheel: jaxkl/py.typed"),
    (dict(drop=["jaxkl/rl/presets.py"]), "missing from the wheel: jaxkl/rl/presets.py"),
    (dict(extra=["jaxkl/conftest.py"]), "shipped but not part of jaxkl: jaxkl/conftest.py"),
    (dict(extra=["tests/test_rl_grpo.py"]), "shipped but not part of jaxkl: tests/"),
    (dict(version="0.0.1"), "is not version"),
    (dict(license_file=False), "LICENSE file is not in the wheel"),
    (dict(license_expression="MIT"), "no License-Expression: Apache-2.0"),
])
def test_each_packaging_fault_is_reported(tmp_path, kwargs, message):
    found = wheel_contents.problems(make_wheel(tmp_path, **kwargs))
    assert any(message in line for line in found), found


def test_no_conftest_or_test_file_inside_the_package():
    """The doctest configuration lives at the repository root (conftest.py): a conftest
    inside jaxkl/ would be installed into users' site-packages."""
    assert not list((ROOT / "jaxkl").rglob("conftest.py"))
    assert (ROOT / "conftest.py").exists()
