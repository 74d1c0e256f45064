"""The README's Python examples run as written (they are part of the documentation), and
print what their ``# prints:`` comments say."""

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
RUNNABLE = [b for b in BLOCKS if "# runnable" in b]
CONTINUES = "# runnable, continues the block above"


def _namespace(index: int) -> dict:
    """The globals block ``index`` runs in: fresh, or for a block that continues the one
    above, the namespace that block (and its own chain) left, their output discarded."""
    if not RUNNABLE[index].startswith(CONTINUES):
        return {}
    namespace = _namespace(index - 1)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(RUNNABLE[index - 1], str(README), "exec"), namespace)
    return namespace


def test_readme_has_a_runnable_quick_start():
    assert RUNNABLE, "README.md should contain at least one ```python block marked # runnable"


@pytest.mark.parametrize("index", range(len(RUNNABLE)),
                         ids=[f"block{i}" for i in range(len(RUNNABLE))])
def test_readme_block_runs(index):
    block, namespace = RUNNABLE[index], _namespace(index)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), namespace)
    # Every `# prints: X` comment, in order, is one printed line (no more, no fewer).
    assert out.getvalue().splitlines() == re.findall(r"# prints: (.*)", block)


def test_the_rl_example_is_runnable():
    # The jaxkl.rl example once raised as written (a [B, T-1] mask against [B, T] logits):
    # it was not marked # runnable, so no test executed it.
    assert any("rl.full_kl_from_hidden(" in block for block in RUNNABLE)
    assert all("# prints:" in block for block in RUNNABLE if not block.startswith(CONTINUES))
    assert not RUNNABLE[0].startswith(CONTINUES)
