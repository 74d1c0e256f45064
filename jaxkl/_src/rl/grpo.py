r"""GRPO: group-normalised advantages, the clipped surrogate, the KL term, the loss.

GRPO (Shao et al. 2024) samples ``G`` answers per prompt, scores them, and uses the
group-normalised score as every token's advantage, so no value network is needed:

.. math::
    \hat A_i = \frac{r_i - \mathrm{mean}(r_{1..G})}{\mathrm{std}(r_{1..G}) + \epsilon},
    \qquad
    L = \mathrm{agg}_{i,t}\Big[-\min\big(\rho_{it} \hat A_i,
        \mathrm{clip}(\rho_{it}, 1-\epsilon_l, 1+\epsilon_h)\hat A_i\big)
        + \beta\, k(l_{it})\Big],

with ``rho = pi / pi_old`` and ``k`` a per-token KL(pi || pi_ref) estimate from
:func:`jaxkl.rl.token_kl` (k3 in the paper). Dr. GRPO (Liu et al. 2025) drops the std
division and the per-sequence length normalisation.

References:
  Z. Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
  Language Models", 2024, arXiv:2402.03300.
  Z. Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective" (Dr.
  GRPO), 2025, arXiv:2503.20783.
  J. Schulman et al., "Proximal Policy Optimization Algorithms", 2017, arXiv:1707.06347.
  D. Ziegler et al., "Fine-Tuning Language Models from Human Preferences", 2019,
  arXiv:1909.08593 (adaptive KL coefficient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxkl._src.rl.aggregate import (
    MODES,
    aggregate_values,
    check_normalizer,
    count_mask,
    masked_mean,
    needs_row_counts,
)
from jaxkl._src.rl.token_kl import (
    DEFAULT_LOG_RATIO_CLIP,
    KLConfig,
    check_kl_config,
    token_kl_values,
)
from jaxkl._src.validation import (
    check_choice,
    check_clip,
    check_float_array,
    check_mask,
    check_non_negative_number,
    check_same_shape,
    check_scalar,
    compute_dtype,
    concrete_value,
)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def group_advantages(rewards: ArrayLike, *, normalize_std: bool = True, eps: float = 1e-6) -> Array:
    r"""Group-relative advantages: each reward minus its group's mean, over its std.

    .. math:: \hat A_{gi} = (r_{gi} - \bar r_g) / (s_g + \epsilon) \quad\text{or}\quad
              r_{gi} - \bar r_g \ \ (\texttt{normalize\_std=False}, \text{Dr. GRPO}),

    with ``s_g`` the sample standard deviation (``ddof=1``, as ``torch.std`` in verl and
    TRL). A group whose rewards are all equal gets advantage exactly 0 (also with
    ``eps=0``): rounding in the float mean would otherwise leave ``O(ulp)`` residuals,
    which the division by the ``O(ulp)`` std blows up to ``O(1)`` advantages. The
    computation runs in units of the group's largest ``|r|``, so rewards of any magnitude
    the dtype holds give the right advantages (``[1e20, -1e20, 0, 0]`` in float32 gives
    ``+-sqrt(3/2)``, not the zeros of an overflowing variance).

    Args:
      rewards: ``[..., G]``, the last axis holding the ``G >= 2`` answers to one prompt.
      normalize_std: divide by the group std (GRPO) or not (Dr. GRPO).
      eps: added to the std (a non-negative number).

    Returns:
      Advantages of the same shape, float32 at least.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> rl.group_advantages(jnp.array([[1.0, 0.0, 0.0, 1.0]]), eps=0.0)
      Array([[ 0.8660254, -0.8660254, -0.8660254,  0.8660254]], dtype=float32)
    """
    rewards = check_float_array(rewards, "rewards")
    if rewards.ndim < 1 or rewards.shape[-1] < 2:
        raise ValueError(
            f"`rewards` must have a group axis (last) of size >= 2, got shape {rewards.shape}."
        )
    eps = check_non_negative_number(eps, "eps")
    r = rewards.astype(compute_dtype(rewards))
    # sum/G of G equal floats need not round back to their value: detect constant groups
    # exactly and give them 0 instead of the amplified rounding residual (or 0/0).
    constant = jnp.max(r, axis=-1, keepdims=True) == jnp.min(r, axis=-1, keepdims=True)
    # Work in units of the group's largest |r|: the variance of [1e20, -1e20, 0, 0] is
    # 6.7e39, past float32's range (it gave 0 advantages), and the sum of values near the
    # dtype's maximum overflows. Scaled, every value is in [-1, 1]; (r - mean) / (std + eps)
    # is the same number as (r' - mean') / (std' + eps / scale).
    magnitude = jnp.max(jnp.abs(r), axis=-1, keepdims=True)
    # First an exact power-of-two step towards 1: XLA divides by a broadcast value as a
    # multiplication by its reciprocal, and 1 / 3e38 is subnormal, flushed to 0 on CPU.
    big, small = 2.0**64, 2.0**-64
    pre = jnp.where(magnitude > big, small, jnp.where(magnitude < small, big, 1.0)).astype(r.dtype)
    scale = jnp.where(constant, 1, magnitude * pre)  # non-constant groups have scale > 0
    scaled = (r * pre) / scale
    centered = jnp.where(constant, 0, scaled - scaled.mean(axis=-1, keepdims=True))
    if not normalize_std:
        return centered * scale / pre
    # Double-where: a constant group's variance 0 never reaches the sqrt, whose derivative
    # there is infinite (a NaN gradient with respect to the rewards otherwise).
    variance = scaled.var(axis=-1, ddof=1, keepdims=True)
    std = jnp.sqrt(jnp.where(constant, 1, variance))
    return jnp.where(constant, 0, centered / (std + (eps * pre) / scale))


class SurrogateOutput(NamedTuple):
    """Per-token PPO clipped surrogate loss and where the clip was active."""

    loss: Array
    ratio: Array
    clipped: Array


def clipped_surrogate(
    logprobs: ArrayLike,
    old_logprobs: ArrayLike,
    advantages: ArrayLike,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    log_ratio_clip: float | None = DEFAULT_LOG_RATIO_CLIP,
) -> SurrogateOutput:
    r"""The PPO clipped surrogate per token (to minimise).

    .. math:: \ell_t = -\min\big(\rho_t A_t,\ \mathrm{clip}(\rho_t, 1 - \epsilon_l,
              1 + \epsilon_h) A_t\big), \quad \rho_t = e^{\log\pi - \log\pi_{old}}.

    Args:
      logprobs: ``log pi(y_t)`` ``[..., T]``.
      old_logprobs: ``log pi_old(y_t)`` of the sampling policy, same shape.
      advantages: per-token ``[..., T]`` or per-sequence ``[...]`` advantages.
      clip_eps: lower clip ``epsilon_l`` (and upper, unless ``clip_eps_high``).
      clip_eps_high: upper clip ``epsilon_h`` (DAPO's clip-higher uses 0.28).
      log_ratio_clip: bound on ``log rho`` before ``exp`` (verl uses 20), or ``None``.

    Returns:
      :class:`SurrogateOutput` with the per-token ``loss``, the ``ratio`` and the bool
      ``clipped`` (the clipped branch is the active one, so the token has no gradient).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> out = rl.clipped_surrogate(jnp.log(jnp.array([1.5, 1.0])), jnp.zeros(2),
      ...                            jnp.array([1.0, -1.0]))
      >>> out.loss, out.clipped
      (Array([-1.2,  1. ], dtype=float32), Array([ True, False], dtype=bool))
    """
    logprobs = check_float_array(logprobs, "logprobs")
    old_logprobs = check_float_array(old_logprobs, "old_logprobs")
    check_same_shape([("logprobs", logprobs), ("old_logprobs", old_logprobs)])
    advantages = _check_advantages(advantages, logprobs.shape)
    low, high = _check_clip_range(clip_eps, clip_eps_high)
    log_ratio_clip = check_clip(log_ratio_clip, "log_ratio_clip")
    dtype = compute_dtype(logprobs, old_logprobs)
    return _clipped_surrogate(
        logprobs.astype(dtype), old_logprobs.astype(dtype), advantages.astype(dtype),
        low, high, log_ratio_clip,
    )


def _check_clip_range(clip_eps, clip_eps_high) -> tuple[float, float]:
    low = check_clip(clip_eps, "clip_eps")
    high = low if clip_eps_high is None else check_clip(clip_eps_high, "clip_eps_high")
    return low, high


def _clipped_surrogate(
    logp: Array, old: Array, adv: Array, low: float, high: float,
    log_ratio_clip: float | None,
) -> SurrogateOutput:
    """:func:`clipped_surrogate` on checked inputs of one shape and compute dtype."""
    chex.assert_equal_shape([logp, old, adv])
    chex.assert_type([logp, old, adv], logp.dtype)
    log_ratio = logp - old
    if log_ratio_clip is not None:
        log_ratio = jnp.clip(log_ratio, -log_ratio_clip, log_ratio_clip)
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1 - low, 1 + high) * adv
    return SurrogateOutput(-jnp.minimum(unclipped, clipped), ratio, clipped < unclipped)


def _check_advantages(advantages, token_shape) -> Array:
    """Per-token advantages ``token_shape`` from per-token or per-sequence ones."""
    advantages = check_float_array(advantages, "advantages")
    if advantages.shape == tuple(token_shape):
        return advantages
    if advantages.shape == tuple(token_shape[:-1]):
        return jnp.broadcast_to(advantages[..., None], token_shape)
    raise ValueError(
        f"`advantages` has shape {advantages.shape}; expected per-token {tuple(token_shape)} "
        f"or per-sequence {tuple(token_shape[:-1])}."
    )


class GRPOMetrics(NamedTuple):
    """Diagnostics of one :func:`grpo_loss` call: token means over the mask, no gradient.

    Attributes:
      policy_loss: the mean clipped surrogate.
      kl: the mean KL value (0 when the KL term is dropped).
      clip_fraction: the fraction of tokens whose clipped branch is active.
      ratio_mean: the mean ratio ``pi / pi_old``.
      ratio_max: the largest ratio over valid tokens (0 when none is valid).
    """

    policy_loss: Array
    kl: Array
    clip_fraction: Array
    ratio_mean: Array
    ratio_max: Array


# The default KL options of grpo_loss (k3, natural gradient, the default clamps).
_DEFAULT_KL = KLConfig()


def grpo_loss(
    logprobs: ArrayLike,
    old_logprobs: ArrayLike,
    advantages: ArrayLike,
    mask: ArrayLike,
    *,
    ref_logprobs: ArrayLike | None = None,
    kl_coef: ArrayLike = 0.0,
    kl: KLConfig = _DEFAULT_KL,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    aggregation: str = "token-mean",
    normalizer: ArrayLike | None = None,
) -> tuple[Array, GRPOMetrics]:
    r"""The GRPO loss (to minimise) and its metrics.

    .. math:: L = \mathrm{agg}_{mask}\big[\ell^{clip}_t + \beta\, k(l_t)\big]

    with :func:`clipped_surrogate` for ``ell^clip`` and :func:`jaxkl.rl.token_kl` for the
    KL term (any estimator and gradient option; ``gradient="importance_weighted"`` uses
    ``old_logprobs`` as the sampling policy). Masked tokens may hold ``-inf``/NaN
    log-probabilities: they reach neither the loss nor its gradient.

    Every argument is checked once, here; the computation then runs on the checked
    arrays, and the mask is counted once for the loss and all the metrics.

    Args:
      logprobs: ``log pi_theta(y_t)`` ``[..., T]`` (differentiate with respect to this).
      old_logprobs: ``log pi_old(y_t)`` of the policy that sampled the tokens.
      advantages: per-sequence ``[...]`` (e.g. :func:`group_advantages`) or per-token.
      mask: bool/0-1 ``[..., T]`` of valid response tokens.
      ref_logprobs: ``log pi_ref(y_t)``; required when ``kl_coef`` is not 0.
      kl_coef: ``beta``, a number or a (possibly traced) 0-d array (see
        :func:`adaptive_kl_controller`); a concrete 0 drops the KL term.
      kl: the KL penalty's options, a :class:`jaxkl.rl.KLConfig` (``estimator``,
        ``gradient``, ``log_ratio_clip``, ``value_clip`` as in :func:`jaxkl.rl.token_kl`;
        ``placement`` must be ``"loss"``). Default ``KLConfig()``: k3, natural gradient,
        log-ratio clamp 20, no value clamp.
      clip_eps, clip_eps_high: the PPO clip range.
      aggregation, normalizer: passed to :func:`jaxkl.rl.aggregate` as ``mode``,
        ``normalizer``.

    Returns:
      ``(loss, metrics)``, ready for ``jax.value_and_grad(..., has_aux=True)``; metrics
      is a :class:`GRPOMetrics` (token means over the mask, no gradient):
      ``policy_loss``, ``kl`` (the mean KL value), ``clip_fraction``, ``ratio_mean``,
      ``ratio_max``.

    Raises:
      TypeError, ValueError: an argument of the wrong type, shape or value, named in
        the message (``kl.estimator`` etc. for the fields of ``kl``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxkl import rl
      >>> logp = jnp.log(jnp.array([[0.5, 0.4], [0.3, 0.2]]))
      >>> adv = rl.group_advantages(jnp.array([1.0, 0.0]))
      >>> loss, metrics = rl.grpo_loss(logp, logp, adv, jnp.ones((2, 2), bool),
      ...                              ref_logprobs=logp - 0.1, kl_coef=0.04)
      >>> round(float(loss), 6), round(float(metrics.kl), 6)
      (0.000193, 0.004837)
      >>> _, metrics = rl.grpo_loss(logp, logp, adv, jnp.ones((2, 2), bool),
      ...                           ref_logprobs=logp - 0.1, kl_coef=0.04,
      ...                           kl=rl.KLConfig("k2", gradient="straight_through"))
      >>> round(float(metrics.kl), 6)  # k2: 0.1**2 / 2
      0.005
    """
    # Checks, once per argument.
    logprobs = check_float_array(logprobs, "logprobs")
    old_logprobs = check_float_array(old_logprobs, "old_logprobs")
    check_same_shape([("logprobs", logprobs), ("old_logprobs", old_logprobs)])
    valid = check_mask(mask, logprobs.shape)
    kl = check_kl_config(kl, "kl")
    if kl.placement != "loss":
        raise ValueError(
            f"`kl.placement` must be 'loss' in grpo_loss (the KL term is in the loss), got "
            f"{kl.placement!r}; for the reward placement use kl_penalized_rewards."
        )
    advantages = _check_advantages(advantages, logprobs.shape)
    low, high = _check_clip_range(clip_eps, clip_eps_high)
    if logprobs.ndim < 1:
        raise ValueError("`logprobs` must have a token axis (rank >= 1), got a scalar.")
    # Named `mode`, as aggregate (which it is passed to) names it; tests match that name.
    check_choice(aggregation, "mode", MODES)
    normalizer = check_normalizer(normalizer, aggregation, logprobs.shape[-1])
    check_scalar(kl_coef, "kl_coef")
    # A concrete zero (a number, a NumPy or a 0-d JAX array) drops the KL term, and with
    # it the need for ref_logprobs; a traced coefficient keeps it (its value is unknown).
    coef_value = concrete_value(kl_coef)
    use_kl = coef_value is None or coef_value != 0
    inputs = [logprobs, old_logprobs]
    if use_kl:
        if ref_logprobs is None:
            raise ValueError("`ref_logprobs` is required when `kl_coef` is not 0.")
        ref_logprobs = check_float_array(ref_logprobs, "ref_logprobs")
        check_same_shape([("logprobs", logprobs), ("ref_logprobs", ref_logprobs)])
        inputs.append(ref_logprobs)
    dtype = compute_dtype(*inputs)

    # The computation, on checked arrays. Double-where: masked entries are zeroed
    # *before* any arithmetic, so a -inf or NaN there cannot turn the zero cotangent of
    # the final select into a NaN gradient.
    logp, old, adv = (
        jnp.where(valid, x.astype(dtype), jnp.zeros((), dtype))
        for x in (logprobs, old_logprobs, advantages)
    )
    surrogate = _clipped_surrogate(logp, old, adv, low, high, DEFAULT_LOG_RATIO_CLIP)
    count = count_mask(valid, dtype, per_row=needs_row_counts(aggregation))
    per_token = surrogate.loss
    kl_mean = jnp.zeros((), dtype)
    if use_kl:
        values = token_kl_values(
            kl, logp, ref_logprobs.astype(dtype),
            old if kl.gradient == "importance_weighted" else None, valid,
        )
        per_token = jnp.where(valid, per_token, 0) + jnp.asarray(kl_coef, dtype) * values
        kl_mean = masked_mean(jax.lax.stop_gradient(values), valid, count)
    loss = aggregate_values(per_token, valid, aggregation, normalizer, count)

    frozen = jax.lax.stop_gradient(surrogate)
    metrics = GRPOMetrics(
        policy_loss=masked_mean(frozen.loss, valid, count),
        kl=kl_mean,
        clip_fraction=masked_mean(frozen.clipped.astype(dtype), valid, count),
        ratio_mean=masked_mean(frozen.ratio, valid, count),
        ratio_max=jnp.max(jnp.where(valid, frozen.ratio, -jnp.inf), initial=0.0),
    )
    return loss, metrics


class KLControllerState(NamedTuple):
    """The current KL coefficient ``beta`` (a scalar array)."""

    coef: Array


class KLController(NamedTuple):
    """A pure controller in optax style: ``state = init()``, ``state = update(state, kl)``.

    ``update(state, current_kl, n_steps=1)`` returns the next state; use ``state.coef``
    as ``kl_coef`` in :func:`grpo_loss`.
    """

    init: Callable[[], KLControllerState]
    update: Callable[..., KLControllerState]


def adaptive_kl_controller(
    init_coef: float, *, target: float, horizon: float, max_error: float = 0.2
) -> KLController:
    r"""The adaptive KL coefficient of Ziegler et al. (2019), compounded so it stays positive.

    .. math:: e_t = \mathrm{clip}(KL_t / KL_{target} - 1, -e_{max}, e_{max}), \qquad
              \beta_{t+1} = \beta_t \exp(e_t\, n_{steps} / \mathrm{horizon}).

    The coefficient grows while the measured KL is above the target and shrinks while it
    is below; the clipped proportional error bounds each step's change. Ziegler et al. and
    verl's ``AdaptiveKLController`` multiply by ``1 + e_t n / H``, the first-order form of
    the same update: the two agree to about ``(e_t n / H)^2 / 2`` relative (2e-4 at
    ``e_t n / H = 0.02``), but the linear factor reaches 0 or goes negative
    once ``e_t n / H <= -1`` (``beta = 0.1``, ``H = 10``, KL 0 and ``n = 1000`` gave -1.9;
    ``n = 50`` gave exactly 0, which no later step can undo). The exponential never
    crosses 0, and the result is clamped to the dtype's positive normal range (an
    underflow to 0 or an overflow to inf would be just as final), so a KL above the
    target always raises the coefficient again. A NaN KL carries no information and
    leaves the coefficient unchanged.

    Reference: D. Ziegler et al., "Fine-Tuning Language Models from Human Preferences",
    2019, arXiv:1909.08593, Sec. 2.2.

    Args:
      init_coef: the initial ``beta > 0``.
      target: the target KL (> 0).
      horizon: steps over which a full ``max_error`` correction is applied (> 0).
      max_error: the clip ``e_max`` on the proportional error (0.2 in the paper).

    Returns:
      A :class:`KLController`; ``update(state, current_kl, n_steps=1)`` takes a scalar KL
      and a scalar ``n_steps >= 0`` (numbers or traced 0-d arrays), is jittable and works
      under ``lax.scan``; the coefficient keeps the state's dtype (float32).

    Example:
      >>> from jaxkl import rl
      >>> ctrl = rl.adaptive_kl_controller(0.1, target=6.0, horizon=10_000)
      >>> state = ctrl.update(ctrl.init(), 12.0, n_steps=256)
      >>> round(float(state.coef), 6)  # error clipped to 0.2: 0.1 * exp(0.2 * 0.0256)
      0.100513
      >>> float(ctrl.update(ctrl.init(), 0.0, n_steps=10**9).coef) > 0
      True
    """
    for name, value in (("init_coef", init_coef), ("target", target), ("horizon", horizon)):
        check_clip(value, name)
    check_clip(max_error, "max_error")

    def init() -> KLControllerState:
        return KLControllerState(jnp.asarray(init_coef, jnp.float32))

    def update(state: KLControllerState, current_kl, n_steps=1) -> KLControllerState:
        check_scalar(current_kl, "current_kl")
        check_scalar(n_steps, "n_steps")
        steps = concrete_value(n_steps)
        if steps is not None and not steps >= 0:
            raise ValueError(f"`n_steps` must be >= 0, got {steps}.")
        # In the state's dtype: a float64 KL (under x64) must not change the carry's type
        # inside lax.scan.
        dtype = jnp.result_type(state.coef)
        kl = jnp.asarray(current_kl, dtype)
        error = jnp.clip(kl / target - 1, -max_error, max_error)
        coef = state.coef * jnp.exp(error * jnp.asarray(n_steps, dtype) / horizon)
        finfo = jnp.finfo(dtype)
        coef = jnp.clip(coef, finfo.tiny, finfo.max)
        return KLControllerState(jnp.where(jnp.isnan(coef), state.coef, coef).astype(dtype))

    return KLController(init, update)


def fixed_kl_controller(coef: float) -> KLController:
    """A controller whose coefficient never changes (same interface as the adaptive one).

    Example:
      >>> from jaxkl import rl
      >>> ctrl = rl.fixed_kl_controller(0.04)
      >>> float(ctrl.update(ctrl.init(), 123.0).coef)
      0.04...
    """
    coef = check_non_negative_number(coef, "coef")

    def init() -> KLControllerState:
        return KLControllerState(jnp.asarray(coef, jnp.float32))

    def update(state: KLControllerState, current_kl=None, n_steps=1) -> KLControllerState:
        del current_kl, n_steps
        return state

    return KLController(init, update)
