"""Implementation of :mod:`jaxkl.rl.audit` (its module docstring has the overview)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxkl._src.rl import tabular
from jaxkl._src.rl.full_kl import full_kl_values
from jaxkl._src.rl.token_kl import (
    DEFAULT_LOG_RATIO_CLIP,
    ESTIMATORS,
    GRADIENTS,
    PLACEMENTS,
    KLConfig,
    check_kl_config,
    importance_weight,
    token_kl_values,
)
from jaxkl._src.validation import (
    check_choice,
    check_clip,
    check_float_array,
    check_mask,
    check_same_shape,
    compute_dtype,
)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

REWARD_GRADIENTS = ("natural", "importance_weighted")
# Per-sequence reductions whose expectation is a sum over sequences, plus the token
# mean's large-batch limit E[sum_t v_t] / E[n].
SEQUENCE_AGGREGATIONS = (
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
    "token-mean",
)


CONFIGS: tuple[KLConfig, ...] = tuple(
    KLConfig(estimator, placement, gradient)
    for estimator in ESTIMATORS
    for placement, gradients in (("loss", GRADIENTS), ("reward", REWARD_GRADIENTS))
    for gradient in gradients
)


class GradientAudit(NamedTuple):
    """Exact expected gradients of configurations, against the two KL gradients.

    Attributes:
      gradients: ``[C, *param_shape]``, one expected gradient per configuration.
      reverse_kl_gradient: ``grad KL(pi || pi_ref)``, ``param_shape``.
      forward_kl_gradient: ``grad KL(pi_ref || pi)``.
      cosine_reverse, cosine_forward: ``[C]`` cosine similarity with each (0 where a
        gradient is exactly 0).
      relative_error_reverse, relative_error_forward: ``[C]``, ``|g - g_KL| / |g_KL|``
        (the absolute ``|g|`` where ``g_KL = 0``, e.g. at ``pi = pi_ref``).
      scale_reverse, scale_forward: ``[C]``, ``<g, g_KL> / |g_KL|**2``: the multiple of
        the KL gradient that ``g`` projects onto (1 for an unbiased gradient; ``1/T`` for
        a length-normalised one; 0 where ``g_KL = 0``).
      reverse_kl, forward_kl: the exact ``KL(pi || pi_ref)`` and ``KL(pi_ref || pi)``.
    """

    gradients: Array
    reverse_kl_gradient: Array
    forward_kl_gradient: Array
    cosine_reverse: Array
    cosine_forward: Array
    relative_error_reverse: Array
    relative_error_forward: Array
    scale_reverse: Array
    scale_forward: Array
    reverse_kl: Array
    forward_kl: Array


def check_configs(
    configs: Iterable[KLConfig],
    *,
    log_ratio_clip: float | None = DEFAULT_LOG_RATIO_CLIP,
    value_clip: float | None = None,
) -> tuple[KLConfig, ...]:
    """Validates configurations and gives each the audit's clamps.

    Tuples ``(estimator, placement, gradient)`` are accepted. The placement
    ``"reward"`` takes the gradients of :data:`REWARD_GRADIENTS` only. Every configuration
    gets ``log_ratio_clip`` and ``value_clip`` (the audit's arguments); a configuration
    that sets other clamps of its own is an error, not silently overridden.

    Args:
      configs: :class:`KLConfig` instances or tuples (at least one).
      log_ratio_clip, value_clip: the clamps of every configuration (as in
        :func:`jaxkl.rl.token_kl`).

    Returns:
      A tuple of validated :class:`KLConfig` (hashable: a static argument of ``jit``).

    Raises:
      TypeError: an entry that is not a tuple of 1 to 5 fields.
      ValueError: an unknown estimator, placement or gradient (named in the message), a
        clamp set differently from the audit's, no entry.

    Example:
      >>> from jaxkl.rl import audit
      >>> [c.name for c in audit.check_configs([("k1", "reward"), audit.KLConfig("k3")])]
      ['k1 reward natural', 'k3 loss natural']
      >>> audit.check_configs([("k1", "reward", "straight_through")])
      Traceback (most recent call last):
        ...
      ValueError: Unknown `gradient (with placement='reward')` 'straight_through'; expected...
    """
    log_ratio_clip = check_clip(log_ratio_clip, "log_ratio_clip")
    value_clip = check_clip(value_clip, "value_clip")
    defaults = KLConfig()
    checked = []
    for i, config in enumerate(configs):
        if isinstance(config, str) or not isinstance(config, tuple) or not 1 <= len(config) <= 5:
            raise TypeError(
                f"Each of `configs` must be a KLConfig(estimator, placement, gradient), got "
                f"{config!r}."
            )
        config = KLConfig(*config)
        name = f"configs[{i}]"
        check_choice(config.estimator, "estimator", ESTIMATORS)
        check_choice(config.placement, "placement", PLACEMENTS)
        allowed = GRADIENTS if config.placement == "loss" else REWARD_GRADIENTS
        check_choice(config.gradient, f"gradient (with placement={config.placement!r})", allowed)
        config = check_kl_config(config, name)  # the clamps
        for field, value in (("log_ratio_clip", log_ratio_clip), ("value_clip", value_clip)):
            own = getattr(config, field)
            if own != getattr(defaults, field) and own != value:
                raise ValueError(
                    f"`{name}.{field}` is {own} but the audit's `{field}` is {value}; pass "
                    f"the clamp as the audit's `{field}` argument."
                )
        checked.append(config._replace(log_ratio_clip=log_ratio_clip, value_clip=value_clip))
    if not checked:
        raise ValueError("`configs` must hold at least one configuration.")
    return tuple(checked)


def token_surrogate(
    config: KLConfig,
    logprobs: ArrayLike,
    ref_logprobs: ArrayLike,
    old_logprobs: ArrayLike,
    *,
    mask: ArrayLike | None = None,
) -> Array:
    r"""Per-token surrogate losses ``[..., T]`` whose gradient is the configuration's.

    For ``placement="loss"`` this is :func:`jaxkl.rl.token_kl` at ``logprobs``; for
    ``"reward"`` it is ``sg(K_t) * log pi`` or ``sg(K_t) * pi / pi_old`` with ``K_t`` the
    penalty-to-go (the reversed cumulative sum over the last axis) of the per-token
    penalty evaluated at the sampling policy ``old_logprobs``. The values of reward
    surrogates are not KL estimates; only their gradients mean something. The clamps are
    the configuration's (``config.log_ratio_clip``, ``config.value_clip``); the
    importance weight of the reward placement is :func:`jaxkl.rl.token_kl`'s, clamped
    the same way.

    .. math:: \ell_t = \mathrm{sg}(K_t)\, s_t, \quad K_t = \sum_{u \ge t} k(l_u), \quad
              s_t = \log\pi(y_t)\ 	ext{or}\ \pi(y_t) / \mathrm{sg}(\pi_{old}(y_t)).

    Tokens whose ``old_logprobs`` is ``-inf`` (never sampled) and masked tokens give 0
    with zero gradient.

    Args:
      config: a :class:`KLConfig` (or a tuple of its fields).
      logprobs: ``log pi(y_t)`` ``[..., T]``, float dtype (differentiate with respect to
        this).
      ref_logprobs: ``log pi_ref(y_t)``, same shape.
      old_logprobs: ``log pi_old(y_t)`` of the sampling policy, same shape.
      mask: optional bool/0-1 array of the same shape (other concrete values raise
        ValueError).

    Returns:
      Per-token surrogates, shape of ``logprobs``, float32 (float64 for f64 inputs).

    Raises:
      TypeError, ValueError: a bad configuration or array, named in the message.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxkl.rl import audit
      >>> logp, ref = jnp.array([[-1.0, -2.0]]), jnp.array([[-1.5, -1.0]])
      >>> audit.token_surrogate(audit.KLConfig("k1", "reward"), logp, ref, logp)
      Array([[0.5, 2. ]], dtype=float32)
      >>> # k1 = -l = [0.5, -1]; its gradient is the penalty-to-go K = [-0.5, -1].
      >>> jax.grad(lambda x: audit.token_surrogate(
      ...     audit.KLConfig("k1", "reward"), x, ref, logp).sum())(logp)
      Array([[-0.5, -1. ]], dtype=float32)
    """
    config = check_kl_config(config, "config")
    if config.placement == "reward":
        check_choice(config.gradient, "config.gradient (with placement='reward')",
                     REWARD_GRADIENTS)
    logprobs = check_float_array(logprobs, "logprobs")
    ref_logprobs = check_float_array(ref_logprobs, "ref_logprobs")
    old_logprobs = check_float_array(old_logprobs, "old_logprobs")
    check_same_shape([("logprobs", logprobs), ("ref_logprobs", ref_logprobs),
                      ("old_logprobs", old_logprobs)])
    valid = None if mask is None else check_mask(mask, logprobs.shape)
    dtype = compute_dtype(logprobs, ref_logprobs, old_logprobs)
    return surrogate_values(
        config, logprobs.astype(dtype), ref_logprobs.astype(dtype), old_logprobs.astype(dtype),
        valid,
    )


def surrogate_values(
    config: KLConfig, logprobs: Array, ref_logprobs: Array, old_logprobs: Array,
    mask: Array | None,
) -> Array:
    """:func:`token_surrogate` on checked inputs (one shape, one compute dtype)."""
    chex.assert_equal_shape([logprobs, ref_logprobs, old_logprobs])
    chex.assert_type([ref_logprobs, old_logprobs], logprobs.dtype)
    # A token the sampling policy cannot produce (old log-prob -inf: a -inf logit) has
    # weight 0 in every expectation; masking it keeps its undefined terms (pi / pi_old =
    # 0 / 0, log pi = -inf) out of the values and the backward pass.
    sampled = old_logprobs > -jnp.inf
    mask = sampled if mask is None else mask & sampled
    if config.placement == "loss":
        old = old_logprobs if config.gradient == "importance_weighted" else None
        return token_kl_values(config, logprobs, ref_logprobs, old, mask)
    penalty = token_kl_values(
        config._replace(gradient="natural"), old_logprobs, ref_logprobs, None, mask
    )
    to_go = jax.lax.stop_gradient(jnp.flip(jnp.cumsum(jnp.flip(penalty, -1), -1), -1))
    # Double-where: the masked tokens' log-probabilities are replaced before any
    # arithmetic, so that neither their value nor their zero cotangent turns into NaN.
    logprobs = jnp.where(mask, logprobs, jnp.zeros_like(logprobs))
    old_logprobs = jnp.where(mask, old_logprobs, jnp.zeros_like(old_logprobs))
    if config.gradient == "natural":
        score = logprobs
    else:
        score, _ = importance_weight(
            logprobs, jax.lax.stop_gradient(old_logprobs), config.log_ratio_clip
        )
    surrogate = to_go * score.astype(to_go.dtype)
    return jnp.where(mask, surrogate, 0)


def _compare(gradients: Array, reference: Array) -> tuple[Array, Array, Array]:
    """Cosine, relative error and projection scale of each row of ``gradients``."""
    flat = gradients.reshape(gradients.shape[0], -1)
    ref = reference.reshape(-1)
    dot = flat @ ref
    norms = jnp.linalg.norm(flat, axis=-1)
    ref_norm = jnp.linalg.norm(ref)
    denominator = norms * ref_norm
    cosine = jnp.where(denominator > 0, dot / jnp.where(denominator > 0, denominator, 1), 0)
    safe_ref = jnp.where(ref_norm > 0, ref_norm, 1)
    relative = jnp.linalg.norm(flat - ref[None], axis=-1) / safe_ref
    scale = dot / safe_ref**2
    return cosine, relative, scale


def _audit(expected_losses, logits, reverse, forward, configs) -> GradientAudit:
    gradients = jnp.stack([jax.grad(expected_losses, argnums=0)(logits, c) for c in configs])
    reverse_kl, reverse_grad = jax.value_and_grad(reverse)(logits)
    forward_kl, forward_grad = jax.value_and_grad(forward)(logits)
    cos_r, rel_r, scale_r = _compare(gradients, reverse_grad)
    cos_f, rel_f, scale_f = _compare(gradients, forward_grad)
    return GradientAudit(
        gradients, reverse_grad, forward_grad, cos_r, cos_f, rel_r, rel_f, scale_r, scale_f,
        reverse_kl, forward_kl,
    )


def _prepare(logits, ref_logits, old_logits):
    logits = check_float_array(logits, "logits")
    ref_logits = check_float_array(ref_logits, "ref_logits")
    check_same_shape([("logits", logits), ("ref_logits", ref_logits)])
    arrays = [logits, ref_logits]
    if old_logits is not None:
        old_logits = check_float_array(old_logits, "old_logits")
        check_same_shape([("logits", logits), ("old_logits", old_logits)])
        arrays.append(old_logits)
    dtype = compute_dtype(*arrays)
    logits, ref_logits = logits.astype(dtype), ref_logits.astype(dtype)
    old_logits = None if old_logits is None else old_logits.astype(dtype)
    return logits, ref_logits, old_logits


def audit_categorical(
    logits: ArrayLike,
    ref_logits: ArrayLike,
    *,
    old_logits: ArrayLike | None = None,
    configs: Iterable[KLConfig] = CONFIGS,
    log_ratio_clip: float | None = DEFAULT_LOG_RATIO_CLIP,
    value_clip: float | None = None,
) -> GradientAudit:
    r"""Exact expected gradients of KL configurations for one categorical distribution.

    .. math:: g_c = \sum_{y=1}^{V} \pi_{old}(y)\, \nabla_\theta \ell_c(\theta; y),
              \qquad \pi = \mathrm{softmax}(\theta),

    with ``ell_c`` the per-token surrogate of configuration ``c`` (:func:`token_surrogate`),
    compared with ``grad KL(pi || pi_ref)`` and ``grad KL(pi_ref || pi)``
    (:func:`jaxkl.rl.full_kl`). See the module docstring for the configurations.

    Reference: Y. Tang and R. Munos, "On a few pitfalls in KL divergence gradient
    estimation for RL", 2025, arXiv:2506.09477.

    Args:
      logits: policy logits ``theta``, shape ``[V]``, float dtype.
      ref_logits: reference logits, ``[V]``.
      old_logits: logits of the sampling (behaviour) policy, ``[V]``; default
        on-policy (``stop_gradient(logits)``).
      configs: the configurations to audit (static), default all of :data:`CONFIGS`.
      log_ratio_clip, value_clip: passed to :func:`jaxkl.rl.token_kl` (the library's
        defaults, so the audit is of what a default training run computes).

    Returns:
      A :class:`GradientAudit`; the gradients are ``[C, V]``, float32 at least.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl.rl import audit
      >>> configs = [audit.KLConfig("k1"), audit.KLConfig("k2"), audit.KLConfig("k3")]
      >>> out = audit.audit_categorical(jnp.array([1.0, 0.0, -1.0]), jnp.zeros(3),
      ...                               configs=configs)
      >>> [round(float(e), 4) for e in out.relative_error_reverse]  # k1: 0, k2: exact
      [1.0, 0.0, 0.3592]
      >>> round(float(out.relative_error_forward[2]), 4)  # k3 follows KL(ref || pi)
      0.0
    """
    logits, ref_logits, old_logits = _prepare(logits, ref_logits, old_logits)
    if logits.ndim != 1:
        raise ValueError(f"`logits` must have shape [V], got {logits.shape}.")
    return _audit_categorical(
        logits, ref_logits, old_logits,
        configs=check_configs(configs, log_ratio_clip=log_ratio_clip, value_clip=value_clip),
    )


# Compiled once per static set of options, so that eager calls (the experiments, the
# tests) do not dispatch each of the configurations' ops one by one.
@functools.partial(jax.jit, static_argnames=("configs",))
def _audit_categorical(logits, ref_logits, old_logits, *, configs):
    ref_logp = jax.nn.log_softmax(ref_logits)

    def expected_loss(theta, config):
        logp = jax.nn.log_softmax(theta)
        old_logp = jax.lax.stop_gradient(
            logp if old_logits is None else jax.nn.log_softmax(old_logits)
        )
        # All V outcomes at once, each a one-token sequence [V, 1] (the token axis is
        # last, and the reward's penalty-to-go must not run across outcomes).
        values = surrogate_values(
            config, logp[:, None], ref_logp[:, None], old_logp[:, None], None
        )
        return jnp.sum(jnp.exp(old_logp) * values[:, 0])

    return _audit(
        expected_loss,
        logits,
        lambda theta: full_kl_values(theta, ref_logits, jnp.ones((), bool), None),
        lambda theta: full_kl_values(ref_logits, theta, jnp.ones((), bool), None),
        configs,
    )


def audit_sequence(
    logits: ArrayLike,
    ref_logits: ArrayLike,
    *,
    old_logits: ArrayLike | None = None,
    configs: Iterable[KLConfig] = CONFIGS,
    aggregation: str = "seq-mean-token-sum",
    eos_token: int | None = None,
    log_ratio_clip: float | None = DEFAULT_LOG_RATIO_CLIP,
    value_clip: float | None = None,
) -> GradientAudit:
    r"""Exact expected gradients of per-token KL configurations at sequence level.

    For a tabular autoregressive policy (:mod:`jaxkl.rl.tabular`, logits
    ``[num_nodes, V]``), enumerating every sequence ``y``:

    .. math:: g_c = \sum_y \pi_{old}(y)\, \nabla_\theta\, \mathrm{agg}_t\,
              \ell_c(\theta; y_t \mid y_{<t}),

    against the gradients of the *sequence-level* ``KL(pi || pi_ref)`` and
    ``KL(pi_ref || pi)`` (:func:`jaxkl.rl.tabular.sequence_kl`). On-policy, summed per-token
    k2 (or straight-through) losses give ``sum_t E_{h ~ pi}[grad KL_t(h)]`` with the prefix
    distribution held fixed: only part of the sequence gradient, which also has the
    score-function term of the prefixes; k1 in the reward with penalty-to-go gives all of
    it.

    Aggregations (per sequence, then averaged over sequences): ``"seq-mean-token-sum"``
    ``sum_t v_t``; ``"seq-mean-token-mean"`` ``(1/n) sum_t v_t``;
    ``"seq-mean-token-sum-norm"`` ``(1/T) sum_t v_t``; ``"token-mean"`` the large-batch
    limit of :func:`jaxkl.rl.aggregate`'s token mean, ``E[sum_t v_t] / E[n]``. They differ
    by more than a constant only when ``eos_token`` makes lengths vary.

    Reference: Y. Tang and R. Munos, "On a few pitfalls in KL divergence gradient
    estimation for RL", 2025, arXiv:2506.09477.

    Args:
      logits: policy table ``[num_nodes, V]``, float dtype.
      ref_logits: reference table, same shape.
      old_logits: sampling policy's table (default on-policy).
      configs: configurations to audit (static), default :data:`CONFIGS`.
      aggregation: one of :data:`SEQUENCE_AGGREGATIONS`.
      eos_token: optional token that ends a sequence (variable lengths).
      log_ratio_clip, value_clip: passed to :func:`jaxkl.rl.token_kl`.

    Returns:
      A :class:`GradientAudit`; gradients ``[C, num_nodes, V]``, float32 at least. The
      enumeration is exact; the arithmetic is in the inputs' dtype, and in float32 the
      round-off of summing all ``V**T`` sequences grows with their number, far above
      float32's epsilon for long sequences even for configurations exact in theory. For
      exact figures pass float64 logits under ``jax_enable_x64``, as
      ``experiments/gradient_audit.py`` does.

    Example:
      >>> import jax
      >>> from jaxkl.rl import audit, tabular
      >>> theta = jax.random.normal(jax.random.key(0), (tabular.num_nodes(2, 3), 2))
      >>> configs = [audit.KLConfig("k1", "reward"), audit.KLConfig("k2")]
      >>> out = audit.audit_sequence(theta, 0 * theta, configs=configs)
      >>> [round(float(r), 6) for r in out.relative_error_reverse]  # k2: a part only
      [0.0, 0.414336]
    """
    logits, ref_logits, old_logits = _prepare(logits, ref_logits, old_logits)
    tabular.tree_shape(logits)
    if eos_token is not None:
        check_choice(eos_token, "eos_token", range(logits.shape[-1]))
    return _audit_sequence(
        logits, ref_logits, old_logits,
        configs=check_configs(configs),
        aggregation=check_choice(aggregation, "aggregation", SEQUENCE_AGGREGATIONS),
        eos_token=eos_token,
    )


@functools.partial(
    jax.jit,
    static_argnames=("configs", "aggregation", "eos_token"),
)
def _audit_sequence(logits, ref_logits, old_logits, *, configs, aggregation, eos_token):
    sampler = logits if old_logits is None else old_logits
    tokens, mask, weights = tabular.sequence_weights(
        jax.lax.stop_gradient(sampler), eos_token=eos_token
    )
    ref_logp = tabular.token_logprobs(ref_logits, tokens)
    old_logp = jax.lax.stop_gradient(tabular.token_logprobs(sampler, tokens))
    lengths = mask.sum(-1).astype(weights.dtype)

    def expected_loss(theta, config):
        logp = tabular.token_logprobs(theta, tokens)
        values = surrogate_values(config, logp, ref_logp, old_logp, mask)
        sums = values.sum(-1)
        if aggregation == "seq-mean-token-mean":
            sums = sums / lengths
        elif aggregation == "seq-mean-token-sum-norm":
            sums = sums / tokens.shape[-1]
        expected = jnp.sum(weights * sums)
        if aggregation == "token-mean":
            expected = expected / jnp.sum(weights * lengths)
        return expected

    return _audit(
        expected_loss,
        logits,
        lambda theta: tabular.sequence_kl(theta, ref_logits, eos_token=eos_token),
        lambda theta: tabular.sequence_kl(ref_logits, theta, eos_token=eos_token),
        configs,
    )
