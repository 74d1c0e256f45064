"""A stalled test fails fast with every thread's stack (pytest-timeout, thread method).

The suite's per-test limit is set in pyproject.toml; here a test that blocks inside a
compiled JAX program (as a deadlocked jaxlib kernel does, where no Python signal handler
runs) is run in a subprocess pytest under the project's configuration with a 5 s limit.
"""

import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

STALLING_TEST = '''
from tests._toy_experiments import _stall_inside_compiled_code


def test_stalls():
    _stall_inside_compiled_code()
'''


def test_a_stalled_test_fails_within_the_limit_with_stacks(tmp_path):
    (tmp_path / "test_stall.py").write_text(STALLING_TEST)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-o", "timeout=5", "-p", "no:cacheprovider",
         str(tmp_path / "test_stall.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Timeout" in output and "_stall_inside_compiled_code" in output, output[-4000:]
    assert "Stack of" in output or "most recent call first" in output
    assert elapsed < 60, elapsed
