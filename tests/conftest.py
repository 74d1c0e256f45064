"""Makes JAX strict for the whole suite.

Implicit rank promotion (adding a [n] to a [n, 1] array) is a classic silent bug in
estimator code, so it raises here. Unexpected warnings fail the run (pyproject's
``filterwarnings = error``).
"""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Runs the test body with 64-bit JAX types enabled."""
    with jax.enable_x64(True):
        yield
