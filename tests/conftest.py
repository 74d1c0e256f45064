"""Makes JAX strict for the whole suite.

Implicit rank promotion (adding a [n] to a [n, 1] array) is a classic silent bug in
estimator code, so it raises here. Implicit dtype promotion raises too
(``jax_numpy_dtype_promotion="strict"``, as equinox and others test): jaxkl must work
for users who turn it on, so every test, doctest included, runs under it, and standard
promotion (which accepts everything strict accepts, with the same results) is covered
by the same runs. Unexpected warnings fail the run (pyproject's ``filterwarnings =
error``).
"""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def x64():
    """Runs the test body with 64-bit JAX types enabled."""
    with jax.enable_x64(True):
        yield
