"""Argument checks shared across the public API.

They run at trace time (on shapes and dtypes), so they cost nothing under ``jit``, and
they raise ``TypeError``/``ValueError`` messages that name the offending argument.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np


def check_float_array(x, name: str) -> jax.Array:
    """Returns ``x`` as a JAX array, raising ``TypeError`` unless it has a float dtype.

    Integer and boolean inputs are rejected rather than silently cast: a log-ratio or a
    log-probability stored as an integer is almost always a bug upstream.
    """
    if x is None:
        raise TypeError(f"`{name}` must be an array of floats, got None.")
    if isinstance(x, (bool, int)) or (
        hasattr(x, "dtype") and not jnp.issubdtype(x.dtype, jnp.floating)
    ):
        dtype = getattr(x, "dtype", type(x).__name__)
        raise TypeError(f"`{name}` must have a floating dtype, got {dtype}.")
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as e:  # e.g. a list holding None
        raise TypeError(f"`{name}` must be an array of floats, got {type(x).__name__}.") from e
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`{name}` must have a floating dtype, got {x.dtype}.")
    return x


def check_integer_array(x, name: str) -> jax.Array:
    """Returns ``x`` as a JAX array, raising ``TypeError`` unless it has an integer dtype.

    Token ids stored as floats or booleans are rejected rather than cast: a float id is
    almost always a mix-up with log-probabilities upstream.
    """
    if x is None or isinstance(x, (bool, float)):
        raise TypeError(f"`{name}` must be an array of integers, got {x!r}.")
    try:
        x = jnp.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be an array of integers, got {type(x).__name__}.") from e
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"`{name}` must have an integer dtype, got {x.dtype}.")
    return x


def check_token_ids(tokens, vocab: int, *, shape_of: tuple[str, tuple, str],
                    vocab_of: str) -> jax.Array:
    """Integer ``tokens`` of the shape ``shape_of = (name, shape, axis)`` names (that array
    without its last axis), with ids in ``[0, vocab)`` (the vocabulary of ``vocab_of``)
    when they are concrete; ``TypeError``/``ValueError`` naming ``tokens`` otherwise.
    Under ``jit`` the ids are not known here; the callers turn an id out of range into
    NaN."""
    tokens = check_integer_array(tokens, "tokens")
    name, shape, axis = shape_of
    if tokens.shape != tuple(shape[:-1]):
        raise ValueError(
            f"`tokens` has shape {tokens.shape} but must have shape {tuple(shape[:-1])}, the "
            f"shape of `{name}` {tuple(shape)} without its {axis} axis."
        )
    values = concrete_value(tokens)
    if values is not None and values.size and not (values.min() >= 0 and values.max() < vocab):
        raise ValueError(
            f"`tokens` must hold ids in [0, {vocab}) (the vocabulary of `{vocab_of}`), got "
            f"ids from {values.min()} to {values.max()}."
        )
    return tokens


def check_logits(logits, name: str = "logits") -> jax.Array:
    """Float logits with a non-empty vocabulary axis (last), else ``TypeError``/``ValueError``."""
    logits = check_float_array(logits, name)
    if logits.ndim < 1:
        raise ValueError(f"`{name}` must have a vocabulary axis (rank >= 1), got a scalar.")
    if logits.shape[-1] == 0:
        raise ValueError(
            f"`{name}` has an empty vocabulary axis (shape {logits.shape}): a softmax over no "
            "entries is not a distribution."
        )
    return logits


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


def compute_dtype(*arrays_or_dtypes) -> jnp.dtype:
    """The dtype to compute in: the inputs' promoted dtype, float32 at least.

    bf16/f16 inputs are upcast because KL estimates are small differences of large
    numbers; float64 inputs (under x64) stay float64.

    Written without ``jnp.promote_types`` on mixed dtypes: under
    ``jax_numpy_dtype_promotion="strict"`` promoting bf16 with float32 raises, and jaxkl
    must run under strict promotion (callers then cast every input explicitly).
    """
    widest = 32
    for x in arrays_or_dtypes:
        dtype = jnp.result_type(x)  # one argument: no promotion, allowed under "strict"
        if jnp.issubdtype(dtype, jnp.floating):
            widest = max(widest, jnp.finfo(dtype).bits)
    return jnp.dtype(jnp.float64 if widest > 32 else jnp.float32)


def concrete_value(x) -> np.ndarray | None:
    """The value of ``x`` as NumPy, or None under a trace (where values are unknown).

    Value checks (positivity, finiteness) run when it is not None; under ``jit``/``vmap``
    only shapes and dtypes can be checked.
    """
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_numeric_values(x, name: str) -> np.ndarray | None:
    """``x``'s concrete values (None under a trace), raising ``TypeError`` naming ``name``
    unless they are numbers (not None, strings or objects)."""
    if x is None:
        raise TypeError(f"`{name}` must be a number or an array of numbers, got None.")
    try:
        values = concrete_value(x)
    except (TypeError, ValueError):
        values = np.asarray(None)
    # jnp.issubdtype also knows bfloat16 (an ml_dtypes type NumPy does not call a number).
    if values is not None and (values.dtype == bool
                               or not jnp.issubdtype(values.dtype, jnp.number)):
        raise TypeError(
            f"`{name}` must be a number or an array of numbers, got {type(x).__name__} "
            f"of dtype {values.dtype}."
        )
    return values


def check_positive_values(x, name: str) -> None:
    """Raises ``ValueError`` unless every (concrete) entry of ``x`` is positive and finite."""
    values = check_numeric_values(x, name)
    if values is not None and not np.all((values > 0) & np.isfinite(values)):
        raise ValueError(f"`{name}` must be positive and finite, got {values}.")


def check_key(key) -> jax.Array:
    """Returns ``key`` if it is one PRNG key (typed, or a raw ``uint32[2]``), else raises."""
    if key is None:
        raise TypeError("`key` must be a PRNG key from jax.random.key or jax.random.PRNGKey, "
                        "got None.")
    try:
        key = key if isinstance(key, jax.Array) else jnp.asarray(key)
    except (TypeError, ValueError) as e:
        raise TypeError("`key` must be a PRNG key from jax.random.key or jax.random.PRNGKey, "
                        f"got {type(key).__name__}.") from e
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"`key` must be a single PRNG key, got shape {key.shape}; batch with "
                "jax.vmap over keys."
            )
        return key
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise TypeError(
            "`key` must be a PRNG key from jax.random.key or jax.random.PRNGKey, got "
            f"dtype {key.dtype} and shape {key.shape}."
        )
    return key


def _as_number(value, name: str, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(
        value, "__float__"
    ):
        raise TypeError(f"`{name}` must be {expected}, got {value!r}.")
    if np.ndim(value) != 0:
        raise ValueError(f"`{name}` must be {expected} (a scalar), got shape {np.shape(value)}.")
    if isinstance(value, jax.Array) and concrete_value(value) is None:
        raise TypeError(
            f"`{name}` must be known when the function is traced ({expected}: it sets a "
            "static bound or constant), got a traced value; pass a Python number, or close "
            "over it outside jit."
        )
    return float(value)


def check_positive_number(value, name: str, *, allow_none: bool = False) -> float | None:
    """A positive Python/NumPy number (``None`` too when ``allow_none``), as a float."""
    if value is None and allow_none:
        return None
    expected = "a positive number or None" if allow_none else "a positive number"
    value = _as_number(value, name, expected)
    if not value > 0:
        raise ValueError(f"`{name}` must be {expected}, got {value}.")
    return value


def check_clip(value, name: str) -> float | None:
    """A symmetric clip bound: ``None`` (off) or a positive number, as a float."""
    return check_positive_number(value, name, allow_none=True)


def check_mask(mask, shape, name: str = "mask") -> jax.Array:
    """Returns ``mask != 0`` as a bool array, raising unless it has exactly ``shape``.

    A mask selects tokens: bool, or real numbers holding only 0 and 1. A concrete mask
    with any other value (a fractional weight, -1, NaN) raises ``ValueError``: verl's
    ``masked_mean`` would weight by it, jaxkl would count it as 1, so it is never taken
    silently. Under a trace the values are unknown and nonzero counts as valid.
    """
    if mask is None:
        raise TypeError(f"`{name}` must be a boolean or numeric array of shape "
                        f"{tuple(shape)}, got None.")
    dtype = getattr(mask, "dtype", None)
    if dtype is not None and not _is_mask_dtype(dtype):
        raise TypeError(f"`{name}` must be boolean or real numeric, got {dtype}.")
    try:
        mask = jnp.asarray(mask)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{name}` must be a boolean or numeric array.") from e
    if mask.shape != tuple(shape):
        raise ValueError(f"`{name}` has shape {mask.shape} but must have shape {tuple(shape)}.")
    if not _is_mask_dtype(mask.dtype):
        raise TypeError(f"`{name}` must be boolean or real numeric, got {mask.dtype}.")
    if mask.dtype == jnp.bool_:
        return mask
    values = concrete_value(mask)
    bad = None if values is None else values[(values != 0) & (values != 1)]
    if bad is not None and bad.size:
        raise ValueError(
            f"`{name}` must hold only 0 and 1 (or be boolean), got {bad.flat[0]}; a mask selects "
            "tokens, it does not weight them."
        )
    return mask != 0


def _is_mask_dtype(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.bool_) or (jnp.issubdtype(dtype, jnp.number)
                                               and not jnp.issubdtype(dtype, jnp.complexfloating))


def check_non_negative_number(value, name: str) -> float:
    """A non-negative, finite Python/NumPy number (NaN and bools rejected), as a float."""
    value = _as_number(value, name, "a non-negative number")
    if not 0 <= value < float("inf"):
        raise ValueError(f"`{name}` must be a non-negative number, got {value}.")
    return value


def check_scalar(value, name: str):
    """Raises unless ``value`` is a real scalar (a number or a 0-d, possibly traced, array).

    A coefficient of shape ``[T]`` or ``[B, 1]`` would otherwise broadcast silently
    against ``[..., T]`` per-token values.
    """
    dtype = getattr(value, "dtype", None)
    if isinstance(value, bool) or (dtype is None and not isinstance(value, (int, float))) or (
        dtype is not None
        and not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))
    ):
        raise TypeError(f"`{name}` must be a real scalar, got {value!r}.")
    if np.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {np.shape(value)}.")
    return value


@contextlib.contextmanager
def third_party_promotion() -> Iterator[None]:
    """JAX's default promotion rules around calls into distrax, TFP and optax.

    jaxkl's own code runs under ``jax_numpy_rank_promotion="raise"`` and
    ``jax_numpy_dtype_promotion="strict"`` (the test suite sets both). The libraries it
    calls rely on implicit promotion internally (distrax broadcasts ``(n, d)`` samples
    against ``(d,)`` parameters; optax's Adam computes ``decay ** count`` with an int32
    count), so they get the standard rules back for the duration of their call only.
    """
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


def check_weight_values(values: np.ndarray, dtype, name: str) -> None:
    """Raises ``ValueError`` unless concrete ``values`` are non-negative and sum to 1 over
    the last axis (to a few ulps of ``dtype`` per component, at least 1e-6): silently
    renormalising would hide a bug upstream; unnormalised weights go in as ``logits``."""
    if np.any(values < 0):
        raise ValueError(f"`{name}` must be non-negative, got {values}.")
    sums = values.sum(axis=-1, dtype=np.float64)
    tolerance = max(1e-6, 4 * values.shape[-1] * float(jnp.finfo(dtype).eps))
    if np.any(np.abs(sums - 1) > tolerance):
        raise ValueError(
            f"`{name}` must sum to 1 over the last axis, got sums {sums}; normalise them "
            "or pass unnormalised `logits` instead."
        )
