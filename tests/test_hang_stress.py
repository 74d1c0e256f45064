"""Stress: the workloads that deadlocked XLA:CPU (jaxlib LAPACK kernels) finish, repeatedly.

Each run is a subprocess under a watchdog (tests/_hang_workloads.py): a stall prints every
thread's stack and fails here within the limit instead of hanging the suite. Before
full-covariance log-densities moved to plain JAX (jaxkl._linalg), ``estimate_sweep`` and
``reference_monte_carlo`` hung in 6 of 6 runs on a 2-core machine.
"""

import pathlib
import subprocess
import sys

import pytest

from tests._hang_workloads import WORKLOADS

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPEATS = 2
LIMIT_S = 240  # a run takes 8-25 s on 2 cores; a stall is caught well inside pytest's limit


@pytest.mark.slow
@pytest.mark.parametrize("repeat", range(REPEATS))
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_workload_finishes(workload, repeat):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_hang_workloads.py"), workload, str(LIMIT_S)],
        cwd=ROOT, capture_output=True, text=True, timeout=LIMIT_S + 60,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("done"), (
        f"{workload} run {repeat} exited {proc.returncode}; stderr:\n{proc.stderr[-6000:]}"
    )
