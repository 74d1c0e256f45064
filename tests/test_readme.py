"""The README's Python examples run as written (they are part of the documentation)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
RUNNABLE = [b for b in BLOCKS if "# runnable" in b]


def test_readme_has_a_runnable_quick_start():
    assert RUNNABLE, "README.md should contain at least one ```python block marked # runnable"


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"block{i}" for i in range(len(RUNNABLE))])
def test_readme_block_runs(block):
    exec(compile(block, str(README), "exec"), {})
