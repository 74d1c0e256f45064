"""Argument checks shared across the public API.

They run at trace time (on shapes and dtypes), so they cost nothing under ``jit``, and
they raise ``TypeError``/``ValueError`` messages that name the offending argument.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np


def check_float_array(x, name: str) -> jax.Array:
    """Returns ``x`` as a JAX array, raising ``TypeError`` unless it has a float dtype.

    Integer and boolean inputs are rejected rather than silently cast: a log-ratio or a
    log-probability stored as an integer is almost always a bug upstream.
    """
    if isinstance(x, (bool, int)) or (
        hasattr(x, "dtype") and not jnp.issubdtype(x.dtype, jnp.floating)
    ):
        dtype = getattr(x, "dtype", type(x).__name__)
        raise TypeError(f"`{name}` must have a floating dtype, got {dtype}.")
    try:
        x = jnp.asarray(x)
    except TypeError as e:
        raise TypeError(f"`{name}` must be an array of floats, got {type(x).__name__}.") from e
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a floating dtype, got {x.dtype}.")
    return x


def check_same_shape(arrays: Iterable[tuple[str, jax.Array]]) -> None:
    """Raises ``ValueError`` naming the arguments whose shapes differ."""
    arrays = list(arrays)
    first_name, first = arrays[0]
    for name, x in arrays[1:]:
        if np.shape(x) != np.shape(first):
            raise ValueError(
                f"`{name}` has shape {np.shape(x)} but `{first_name}` has shape "
                f"{np.shape(first)}; they must be equal."
            )


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"Unknown `{name}` {value!r}; expected one of {list(choices)}.")
    return value


def check_positive_int(value, name: str) -> int:
    """Returns ``value`` as an int, raising ``ValueError`` unless it is an integer > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"`{name}` must be a positive integer, got {value!r}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value}.")
    return int(value)
