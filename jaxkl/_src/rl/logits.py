r"""From a policy's logits to what an RL loss needs: token log-probabilities, entropy,
and the response mask of EOS-terminated samples.

Both :func:`token_logprobs` and :func:`entropy` need one normaliser per token,
``log sum_v exp(z_v / tau)``, over a vocabulary of 10^4-10^5 entries. Written naively
(``log_softmax`` of the logits cast to float32), reverse-mode autodiff keeps a
``[tokens, vocab]`` float32 array for the backward pass: 4x the size of bf16 logits.
Here the forward pass is row reductions (the maximum, then the shifted sums) and the
derivatives are a custom JVP whose coefficients are elementwise given one number per
token (the log-normaliser):

.. math::
    \frac{\partial \log p_y}{\partial z_v} = \frac{[v = y] - p_v}{\tau}, \qquad
    \frac{\partial H}{\partial z_v} = -\frac{p_v (\log p_v + H)}{\tau},
    \qquad p = \mathrm{softmax}(z / \tau).

Memory, measured with compiled ``memory_analysis`` at ``[8, 1024, 32768]`` on XLA:CPU
(tests/test_rl_logits.py): neither function keeps a ``[tokens, vocab]`` temporary,
forward or backward, for bf16 or float32 logits (at most 0.06 MiB against 0.5-1 GiB of
logits). That takes care in how the elementwise work is written, because XLA:CPU
writes a float32 ``[tokens, vocab]`` array (100-400% of the logits) as soon as a select
(``jnp.where``) or a comparison sits between the logits and a reduction, or the upcast
logits feed a gather as well: ``-inf`` is floored with ``jnp.maximum``, the one-hot of
the sampled token is float arithmetic, and the gather reads the logits behind an
optimisation barrier.

The tangents are checkpoints that save nothing, so the transposed (reverse-mode) pass
recomputes ``p`` and writes the gradient in one elementwise pass, as
:func:`jaxkl.rl.full_kl` does.

Peers: verl's ``logprobs_from_logits`` and ``entropy_from_logits``, TRL's
``selective_log_softmax`` and ``entropy_from_logits``, tunix's ``selective_log_softmax``
and ``compute_entropy_from_logits`` compute the same quantities; verl's
``get_response_mask`` and tunix's ``make_completion_mask`` the same mask.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxkl._src.validation import (
    check_integer_array,
    check_logits,
    check_positive_number,
    check_token_ids,
    compute_dtype,
)

Array = jax.Array

_NOTHING_SAVED = jax.checkpoint_policies.nothing_saveable


def _finite_floor(x: Array) -> Array:
    """``x`` with ``-inf`` raised to the smallest finite float of its dtype.

    ``jnp.maximum`` where a select (``jnp.where``) would do: XLA:CPU fuses an elementwise
    maximum into the row reductions, but a select makes it write a ``[tokens, vocab]``
    float32 temporary (measured: 100-200% of the logits at ``[8, 1024, 32768]``).
    """
    return jnp.maximum(x, jnp.finfo(x.dtype).min)


def _scaled(logits: Array, temperature: float, compute) -> Array:
    z = logits.astype(compute)
    return z if temperature == 1.0 else z / jnp.asarray(temperature, compute)


def _log_normalizer(z: Array) -> Array:
    """``log sum_v exp(z_v)`` per row, shifted by the row's maximum (0 for an all ``-inf`` row).

    One number per row on purpose: returning the maximum and the shifted sum separately
    made XLA:CPU write a float32 copy of bf16 logits (1 GiB at [8192, 32768]); their sum
    fuses into the two reductions with no temporary.
    """
    shift = _finite_floor(jax.lax.stop_gradient(z.max(axis=-1)))
    return shift + jnp.log(jnp.exp(z - shift[..., None]).sum(axis=-1))


# ---- token log-probabilities -------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _token_logprobs(temperature: float, logits: Array, tokens: Array) -> Array:
    return _token_logprobs_and_normalizer(temperature, logits, tokens)[0]


def _token_logprobs_and_normalizer(temperature, logits, tokens):
    compute = compute_dtype(logits)
    log_normalizer = _log_normalizer(_scaled(logits, temperature, compute))
    # One logit per row is read; an id out of [0, V) reads NaN (checked when concrete).
    # The barrier keeps the gather out of the reductions' fusion: sharing the logits'
    # upcast with it made XLA:CPU write a float32 copy of bf16 logits (200%).
    picked = jnp.take_along_axis(jax.lax.optimization_barrier(logits), tokens[..., None],
                                 axis=-1, mode="fill", fill_value=jnp.nan)[..., 0]
    return _scaled(picked, temperature, compute) - log_normalizer, log_normalizer


def _token_logprobs_tangent(temperature, logits, tokens, log_normalizer, tangent):
    """``sum_v ([v = y] - p_v) dz_v / tau`` per row."""
    compute = log_normalizer.dtype
    p = jnp.exp(_scaled(logits, temperature, compute) - log_normalizer[..., None])
    coefficient = _one_hot(tokens, logits.shape, compute) - p
    return _scaled(jnp.sum(coefficient * tangent.astype(compute), axis=-1), temperature,
                   compute)


def _one_hot(tokens: Array, shape, compute) -> Array:
    """``[v = y]`` as ``compute`` floats, by arithmetic on exact integer-valued floats.

    ``max(0, 1 - |v - y|)`` rather than a comparison: XLA:CPU fuses float arithmetic into
    the reduction that writes the gradient, but writes a compared one-hot out as a
    ``[tokens, vocab]`` float32 array (200% of bf16 logits at ``[8, 1024, 32768]``). Ids
    are exact floats up to ``2**(mantissa bits + 1)`` (16.7M in float32); beyond that the
    comparison is used.
    """
    vocab = shape[-1]
    if vocab > 2 ** (jnp.finfo(compute).nmant + 1):
        vocab_ids = jax.lax.broadcasted_iota(tokens.dtype, shape, len(shape) - 1)
        return (vocab_ids == tokens[..., None]).astype(compute)
    vocab_ids = jax.lax.broadcasted_iota(compute, shape, len(shape) - 1)
    return jnp.maximum(1 - jnp.abs(vocab_ids - tokens[..., None].astype(compute)), 0)


@_token_logprobs.defjvp
def _token_logprobs_jvp(temperature, primals, tangents):
    logits, tokens = primals
    d_logits, _ = tangents
    out, log_normalizer = _token_logprobs_and_normalizer(temperature, logits, tokens)
    tangent_fn = jax.checkpoint(functools.partial(_token_logprobs_tangent, temperature),
                                policy=_NOTHING_SAVED)
    return out, tangent_fn(logits, tokens, log_normalizer, d_logits)


# ---- entropy -----------------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _entropy(temperature: float, logits: Array) -> Array:
    return _entropy_and_normalizer(temperature, logits)[0]


def _entropy_and_normalizer(temperature, logits):
    z = _scaled(logits, temperature, compute_dtype(logits))
    log_normalizer = _log_normalizer(z)
    log_p = z - log_normalizer[..., None]
    # H = -sum_v p_v log p_v; p_v = 0 terms add 0: log p_v = -inf is raised to the
    # smallest finite float, so that p_v log p_v = 0 exactly.
    p = jnp.exp(log_p)
    entropy = -(p * _finite_floor(log_p)).sum(axis=-1)
    # H >= 0 exactly; rounding near a one-hot row can leave -eps. A row with no finite
    # logit is no distribution: its log-normaliser is -inf, every log p_v = -inf - -inf
    # is NaN, and so is H (the maximum passes NaN through), as for token_logprobs. (A
    # select on the normaliser here would make XLA:CPU write a float32 copy of bf16
    # logits.)
    entropy = jnp.maximum(entropy, 0)
    return entropy, log_normalizer


def _entropy_tangent(temperature, logits, log_normalizer, entropy, tangent):
    """``-sum_v p_v (log p_v + H) dz_v / tau`` per row."""
    compute = log_normalizer.dtype
    log_p = _scaled(logits, temperature, compute) - log_normalizer[..., None]
    p = jnp.exp(log_p)
    coefficient = -p * (_finite_floor(log_p) + entropy[..., None])
    return _scaled(jnp.sum(coefficient * tangent.astype(compute), axis=-1), temperature,
                   compute)


@_entropy.defjvp
def _entropy_jvp(temperature, primals, tangents):
    (logits,), (d_logits,) = primals, tangents
    out, log_normalizer = _entropy_and_normalizer(temperature, logits)
    tangent_fn = jax.checkpoint(functools.partial(_entropy_tangent, temperature),
                                policy=_NOTHING_SAVED)
    return out, tangent_fn(logits, log_normalizer, out, d_logits)


def entropy_values(logits: Array) -> Array:
    """:func:`entropy` at temperature 1 on checked float ``[..., V]`` logits."""
    return _entropy(1.0, logits)


# ---- public edge -------------------------------------------------------------------


def _check_temperature(temperature) -> float:
    temperature = check_positive_number(temperature, "temperature")
    if not math.isfinite(temperature):
        raise ValueError(f"`temperature` must be a positive finite number, got {temperature}.")
    return temperature


def token_logprobs(logits: ArrayLike, tokens: ArrayLike, *, temperature: float = 1.0) -> Array:
    r"""``log pi(y_t)``: the log-probability of each token under ``softmax(logits / tau)``.

    .. math:: \log \pi(y_t) = z_{t y_t} / \tau - \log \sum_v \exp(z_{tv} / \tau)

    Computed in float32 (float64 for float64 logits) without a float32 copy of the
    logits, in the forward or the backward pass (see the module docstring); the gradient
    with respect to the logits is ``([v = y_t] - pi_v) / tau`` times the cotangent. What
    verl's ``logprobs_from_logits`` and TRL's/tunix's ``selective_log_softmax`` compute;
    feed the result to :func:`jaxkl.rl.token_kl` and :func:`jaxkl.rl.grpo_loss`.

    Logits for a step ``t`` predict token ``t + 1``: align them as your model does
    (usually ``logits[:, :-1]`` against ``tokens[:, 1:]``) before calling.

    Args:
      logits: ``[..., V]`` float logits (bf16, float16, float32 or float64). ``-inf``
        entries (filtered vocabulary) are allowed; a row with no finite logit is not a
        distribution and gives NaN.
      tokens: ``[...]`` integer token ids in ``[0, V)``, the shape of ``logits[..., 0]``.
      temperature: ``tau``, a positive finite Python number (static), as the sampler used.

    Returns:
      ``[...]`` log-probabilities, float32 (float64 for float64 logits), ``<= 0``.
      Differentiable in ``logits`` (reverse and forward mode).

    Raises:
      TypeError: non-float ``logits``, non-integer ``tokens``, a non-numeric temperature.
      ValueError: a scalar or empty-vocabulary ``logits``, ``tokens`` of the wrong shape,
        an id outside ``[0, V)`` (checked when ``tokens`` is concrete; under ``jit`` such
        an id gives NaN), a temperature that is not positive and finite.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
      >>> rl.token_logprobs(logits, jnp.array([0, 2]))  # log 0.5, log 0.8
      Array([-0.6931472 , -0.22314355], dtype=float32)
    """
    logits = check_logits(logits)
    batch_shape, vocab = logits.shape[:-1], logits.shape[-1]
    tokens = check_token_ids(tokens, vocab, shape_of=("logits", logits.shape, "vocabulary"),
                             vocab_of="logits")
    temperature = _check_temperature(temperature)
    # Negative ids would wrap around in a gather; send every out-of-range id to V, which
    # the gather fills with NaN.
    tokens = jnp.where((tokens >= 0) & (tokens < vocab), tokens, vocab).astype(jnp.int32)
    out = _token_logprobs(temperature, logits, tokens)
    chex.assert_shape(out, batch_shape)
    return out


def entropy(logits: ArrayLike, *, temperature: float = 1.0) -> Array:
    r"""Per-token entropy of ``pi = softmax(logits / tau)``, in nats.

    .. math:: H_t = -\sum_v \pi_{tv} \log \pi_{tv}
                  = \log S_t - \frac{1}{S_t}\sum_v e^{c_{tv}} c_{tv},
              \quad c_{tv} = z_{tv}/\tau - \max_v z_{tv}/\tau,\ S_t = \sum_v e^{c_{tv}}

    Computed in float32 (float64 for float64 logits) without a float32 copy of the
    logits; the gradient is ``-pi_v (log pi_v + H) / tau`` times the cotangent (module
    docstring). What verl's/TRL's ``entropy_from_logits`` and tunix's
    ``compute_entropy_from_logits`` compute; an entropy bonus is ``-coef * aggregate(H)``.

    Args:
      logits: ``[..., V]`` float logits; ``-inf`` entries are allowed (they carry no
        mass); a row with no finite logit gives NaN.
      temperature: ``tau``, a positive finite Python number (static).

    Returns:
      ``[...]`` entropies in nats, in ``[0, log V]``, float32 (float64 for float64 logits).

    Raises:
      TypeError: non-float ``logits`` or a non-numeric temperature.
      ValueError: a scalar or empty-vocabulary ``logits``; a temperature that is not
        positive and finite.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> rl.entropy(jnp.zeros((1, 4)))  # uniform over 4: log 4
      Array([1.3862944], dtype=float32)
    """
    logits = check_logits(logits)
    temperature = _check_temperature(temperature)
    return _entropy(temperature, logits)


def response_mask(tokens: ArrayLike, *, eos_token: int | Sequence[int]) -> Array:
    """The valid tokens of right-padded, EOS-terminated responses: up to and including
    the first EOS of each row; every token of a row with no EOS.

    ``mask_t = (number of EOS tokens strictly before t) == 0``, as verl's
    ``get_response_mask`` and tunix's ``make_completion_mask`` compute it. Pass the
    result as ``mask`` to :func:`jaxkl.rl.token_kl`, :func:`jaxkl.rl.aggregate` and
    :func:`jaxkl.rl.grpo_loss`.

    Args:
      tokens: ``[..., T]`` integer token ids of the responses (rank >= 1).
      eos_token: one id, or a sequence of ids that each end a response.

    Returns:
      ``[..., T]`` bool mask.

    Raises:
      TypeError: non-integer ``tokens`` or ``eos_token``.
      ValueError: scalar ``tokens``, an empty or negative ``eos_token``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> rl.response_mask(jnp.array([[5, 7, 2, 0, 0], [5, 5, 5, 5, 5]]), eos_token=2)
      Array([[ True,  True,  True, False, False],
             [ True,  True,  True,  True,  True]], dtype=bool)
    """
    tokens = check_integer_array(tokens, "tokens")
    if tokens.ndim < 1:
        raise ValueError("`tokens` must have a time axis (rank >= 1), got a scalar.")
    ids = np.atleast_1d(np.asarray(eos_token, dtype=object))
    if ids.ndim != 1 or ids.size == 0 or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids
    ):
        raise TypeError(
            f"`eos_token` must be an int or a non-empty sequence of ints, got {eos_token!r}."
        )
    if min(ids) < 0:
        raise ValueError(f"`eos_token` ids must be non-negative, got {eos_token!r}.")
    is_eos = jnp.isin(tokens, jnp.asarray(ids.astype(np.int64), tokens.dtype))
    eos_before = jnp.cumsum(is_eos, axis=-1, dtype=jnp.int32) - is_eos.astype(jnp.int32)
    return eos_before == 0
