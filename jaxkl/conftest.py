"""Doctest set-up: the examples in docstrings run under the same strict settings."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
