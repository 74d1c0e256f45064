"""Doctest set-up: the examples in jaxkl's docstrings run under the same strict settings
as the tests (tests/conftest.py). At the repository root, not in jaxkl/, so that the
wheel does not ship it."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
