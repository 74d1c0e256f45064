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
    aggregate_values,
    check_global_count,
    check_normalizer,
    count_mask,
    masked_mean,
    needs_row_counts,
    resolve_mode,
)
from jaxkl._src.rl.full_kl import full_kl_values
from jaxkl._src.rl.logits import entropy_values
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
    check_logits,
    check_mask,
    check_non_negative_number,
    check_positive_int,
    check_same_shape,
    check_scalar,
    compute_dtype,
    concrete_value,
)
from jaxkl._src.vocabulary import FULL_KL

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def group_advantages(
    rewards: ArrayLike,
    *,
    group_size: int | None = None,
    scale_rewards: str = "group",
    eps: float = 1e-6,
) -> Array:
    r"""Group-relative advantages: each reward minus its group's mean, over a std.

    .. math:: \hat A_{gi} = (r_{gi} - \bar r_g) / (s + \epsilon)

    with ``s`` chosen by ``scale_rewards`` (TRL's option, by name): ``"group"`` the
    group's sample standard deviation (GRPO; ``ddof=1``, as ``torch.std`` in verl, TRL
    and tunix), ``"batch"`` the standard deviation of all rewards of the batch (TRL's
    ``"batch"``), ``"none"`` no division (Dr. GRPO; verl's
    ``norm_adv_by_std_in_grpo=False``). A group whose rewards are all equal gets advantage
    exactly 0 (also with ``eps=0``): rounding in the float mean would otherwise leave
    ``O(ulp)`` residuals, which the division by the ``O(ulp)`` std blows up to ``O(1)``
    advantages. The computation runs in units of the group's largest ``|r|``, so rewards of
    any magnitude the dtype holds give the right advantages (``[1e20, -1e20, 0, 0]`` in
    float32 gives ``+-sqrt(3/2)``, not the zeros of an overflowing variance).

    Layouts: ``[..., G]`` with the group on the last axis, or, with ``group_size=G``, the
    flat ``[num_groups * G]`` that verl, TRL and tunix pass (consecutive ``G`` rewards form
    a group); the result has the shape of ``rewards``. A flat array without
    ``group_size`` is one group.

    Args:
      rewards: ``[..., G]`` (``G >= 2``), or flat ``[num_groups * G]`` with ``group_size``.
      group_size: ``G`` for flat rewards (a positive int >= 2 dividing their length).
      scale_rewards: ``"group"`` (default), ``"batch"`` or ``"none"``.
      eps: added to the std (a non-negative number; verl and tunix use 1e-6, TRL 1e-4).

    Returns:
      Advantages of the shape of ``rewards``, float32 at least.

    Raises:
      TypeError: non-float ``rewards``.
      ValueError: a group axis of size < 2, a ``group_size`` that does not divide a flat
        ``rewards``, an unknown ``scale_rewards``, a negative ``eps``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> rl.group_advantages(jnp.array([[1.0, 0.0, 0.0, 1.0]]), eps=0.0)
      Array([[ 0.8660254, -0.8660254, -0.8660254,  0.8660254]], dtype=float32)
      >>> rl.group_advantages(jnp.array([1.0, 1.0, 0.0, 1.0]), group_size=2, eps=0.0)
      Array([ 0.        ,  0.        , -0.70710677,  0.70710677], dtype=float32)
    """
    rewards = check_float_array(rewards, "rewards")
    check_choice(scale_rewards, "scale_rewards", SCALE_REWARDS)
    shape = rewards.shape
    if group_size is not None:
        group_size = check_positive_int(group_size, "group_size")
        if rewards.ndim != 1 or group_size < 2 or shape[0] % group_size:
            raise ValueError(
                f"`group_size` = {group_size} must be >= 2 and divide the length of flat "
                f"`rewards` (shape {shape}); pass [..., G] rewards without it."
            )
        rewards = rewards.reshape(shape[0] // group_size, group_size)
    if rewards.ndim < 1 or rewards.shape[-1] < 2:
        raise ValueError(
            f"`rewards` must have a group axis (last) of size >= 2, got shape {rewards.shape}."
        )
    eps = check_non_negative_number(eps, "eps")
    advantages = _group_advantages(rewards, scale_rewards, eps)
    return advantages.reshape(shape)


SCALE_REWARDS = ("group", "batch", "none")


def _group_advantages(rewards: Array, scale_rewards: str, eps: float) -> Array:
    """:func:`group_advantages` on checked ``[..., G]`` rewards."""
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
    if scale_rewards == "none":
        return centered * scale / pre
    if scale_rewards == "batch":
        # One std over every reward of the batch (TRL's "batch"), in the rewards' units;
        # a constant batch has no spread: its advantages are the (zero) centred ones.
        spread = r.std(ddof=1)
        deviation = centered * scale / pre
        safe = jnp.where(spread > 0, spread, 1)  # double-where: no 0/0 in the other branch
        return jnp.where(spread > 0, deviation / (safe + eps), deviation)
    # Double-where: a constant group's variance 0 never reaches the sqrt, whose derivative
    # there is infinite (a NaN gradient with respect to the rewards otherwise).
    variance = scaled.var(axis=-1, ddof=1, keepdims=True)
    std = jnp.sqrt(jnp.where(constant, 1, variance))
    return jnp.where(constant, 0, centered / (std + (eps * pre) / scale))


class SurrogateOutput(NamedTuple):
    """Per-token PPO clipped surrogate loss and where the clips were active.

    Attributes:
      loss: the per-token loss.
      ratio: ``pi / pi_old``.
      clipped: bool, the clipped branch is active (ratio outside the clip range on the
        side where it would improve the objective): the token has no gradient.
      dual_clipped: bool, the dual clip is active (negative advantage, ratio above
        ``clip_ratio_c``): the loss is ``-clip_ratio_c * A``, without gradient. All
        False when the dual clip is off.
    """

    loss: Array
    ratio: Array
    clipped: Array
    dual_clipped: Array


def clipped_surrogate(
    logprobs: ArrayLike,
    old_logprobs: ArrayLike,
    advantages: ArrayLike,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    clip_ratio_c: float | None = None,
    log_ratio_clip: float | None = DEFAULT_LOG_RATIO_CLIP,
) -> SurrogateOutput:
    r"""The PPO clipped surrogate per token (to minimise), with the optional dual clip.

    .. math:: \ell_t = -\min\big(\rho_t A_t,\ \mathrm{clip}(\rho_t, 1 - \epsilon_l,
              1 + \epsilon_h) A_t\big), \quad \rho_t = e^{\log\pi - \log\pi_{old}},

    and with the dual clip (Ye et al., "Mastering Complex Control in MOBA Games with Deep
    Reinforcement Learning", AAAI 2020; verl's ``clip_ratio_c``) ``ell_t = min(ell_t,
    -c A_t)`` where ``A_t < 0``: a very large ratio on a token with negative advantage
    no longer gives an unbounded loss and gradient (ratio 5, advantage -1, ``c = 3``:
    loss 3, gradient 0; without it loss 5, gradient 5).

    Args:
      logprobs: ``log pi(y_t)`` ``[..., T]``.
      old_logprobs: ``log pi_old(y_t)`` of the sampling policy, same shape.
      advantages: per-token ``[..., T]`` or per-sequence ``[...]`` advantages.
      clip_eps: lower clip ``epsilon_l`` (and upper, unless ``clip_eps_high``).
      clip_eps_high: upper clip ``epsilon_h`` (DAPO's clip-higher uses 0.28).
      clip_ratio_c: the dual clip's ``c`` (> 1; verl's default 3.0), or ``None`` (off,
        the default, as in TRL and tunix).
      log_ratio_clip: bound on ``log rho`` before ``exp`` (verl uses 20), or ``None``.

    Returns:
      :class:`SurrogateOutput` with the per-token ``loss``, the ``ratio`` and the bool
      ``clipped`` and ``dual_clipped`` (where a clip is active the token has no gradient).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> out = rl.clipped_surrogate(jnp.log(jnp.array([1.5, 1.0])), jnp.zeros(2),
      ...                            jnp.array([1.0, -1.0]))
      >>> out.loss, out.clipped
      (Array([-1.2,  1. ], dtype=float32), Array([ True, False], dtype=bool))
      >>> rl.clipped_surrogate(jnp.log(jnp.array([5.0])), jnp.zeros(1), jnp.array([-1.0]),
      ...                      clip_ratio_c=3.0).loss
      Array([3.], dtype=float32)
    """
    logprobs = check_float_array(logprobs, "logprobs")
    old_logprobs = check_float_array(old_logprobs, "old_logprobs")
    check_same_shape([("logprobs", logprobs), ("old_logprobs", old_logprobs)])
    advantages = _check_advantages(advantages, logprobs.shape)
    clips = _check_clips(clip_eps, clip_eps_high, clip_ratio_c, log_ratio_clip)
    dtype = compute_dtype(logprobs, old_logprobs)
    return _clipped_surrogate(
        logprobs.astype(dtype), old_logprobs.astype(dtype), advantages.astype(dtype), clips
    )


class _Clips(NamedTuple):
    low: float
    high: float
    dual: float | None
    log_ratio: float | None


def _check_clips(clip_eps, clip_eps_high, clip_ratio_c, log_ratio_clip) -> _Clips:
    low = check_clip(clip_eps, "clip_eps")
    high = low if clip_eps_high is None else check_clip(clip_eps_high, "clip_eps_high")
    dual = check_clip(clip_ratio_c, "clip_ratio_c")
    if dual is not None and not dual > 1:
        raise ValueError(f"`clip_ratio_c` must be greater than 1 (verl's default is 3.0), "
                         f"got {dual}.")
    return _Clips(low, high, dual, check_clip(log_ratio_clip, "log_ratio_clip"))


def _clipped_surrogate(logp: Array, old: Array, adv: Array, clips: _Clips) -> SurrogateOutput:
    """:func:`clipped_surrogate` on checked inputs of one shape and compute dtype."""
    chex.assert_equal_shape([logp, old, adv])
    chex.assert_type([logp, old, adv], logp.dtype)
    log_ratio = logp - old
    if clips.log_ratio is not None:
        log_ratio = jnp.clip(log_ratio, -clips.log_ratio, clips.log_ratio)
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, 1 - clips.low, 1 + clips.high) * adv
    loss = -jnp.minimum(unclipped, clipped)
    if clips.dual is None:
        dual_clipped = jnp.zeros(loss.shape, bool)
    else:
        bound = -clips.dual * adv
        dual_clipped = (adv < 0) & (loss > bound)
        loss = jnp.where(dual_clipped, bound, loss)
    return SurrogateOutput(loss, ratio, clipped < unclipped, dual_clipped)


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
      kl: the mean per-token KL against the reference with the ``kl`` options (the
        estimate from ``ref_logprobs``; with ``KLConfig("full")`` the exact KL from
        ``logits`` and ``ref_logits``), computed whenever the reference is given, also
        when ``kl_coef`` is 0 (what is logged need not be what is optimised); 0 when it
        is not given.
      clip_fraction: the fraction of tokens whose clipped branch is active.
      ratio_mean: the mean ratio ``pi / pi_old``.
      ratio_max: the largest ratio over valid tokens (0 when none is valid).
      ratio_min: the smallest ratio over valid tokens (0 when none is valid).
      clip_fraction_low: tokens clipped at ``1 - clip_eps`` (negative advantage).
      clip_fraction_high: tokens clipped at ``1 + clip_eps_high`` (positive advantage).
      dual_clip_fraction: tokens where the dual clip is active (verl's
        ``pg_clipfrac_lower``).
      ppo_kl: the mean of ``log pi_old - log pi`` over the sampled tokens, a k1 estimate of
        KL(pi_old || pi) (verl's ``ppo_kl``; TRL and tunix log the same quantity).
      entropy: the mean per-token entropy of ``pi_theta`` in nats: exact from ``logits``
        when they are given (verl's ``actor/entropy``), else the sampled estimate
        ``-log pi_theta(y_t)``, unbiased when the tokens were sampled from ``pi_theta``
        (on-policy; off-policy it is the cross-entropy of ``pi_old`` to ``pi_theta``).
    """

    policy_loss: Array
    kl: Array
    clip_fraction: Array
    ratio_mean: Array
    ratio_max: Array
    ratio_min: Array
    clip_fraction_low: Array
    clip_fraction_high: Array
    dual_clip_fraction: Array
    ppo_kl: Array
    entropy: Array


# The default KL options of grpo_loss (k3, natural gradient, the default clamps).
_DEFAULT_KL = KLConfig()


def grpo_loss(
    logprobs: ArrayLike,
    old_logprobs: ArrayLike | None,
    advantages: ArrayLike,
    mask: ArrayLike,
    *,
    ref_logprobs: ArrayLike | None = None,
    logits: ArrayLike | None = None,
    ref_logits: ArrayLike | None = None,
    kl_coef: ArrayLike = 0.0,
    kl: KLConfig = _DEFAULT_KL,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    clip_ratio_c: float | None = None,
    log_ratio_clip: float | None = DEFAULT_LOG_RATIO_CLIP,
    aggregation: str = "token-mean",
    normalizer: ArrayLike | None = None,
    global_count: ArrayLike | None = None,
    importance_sampling_level: str = "token",
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
      old_logprobs: ``log pi_old(y_t)`` of the policy that sampled the tokens, or
        ``None`` on-policy: then ``stop_gradient(logprobs)`` (ratio 1 with the policy
        gradient's value), as TRL and tunix do with one update per batch.
      advantages: per-sequence ``[...]`` (e.g. :func:`group_advantages`) or per-token.
      mask: bool/0-1 ``[..., T]`` of valid response tokens (a concrete mask with other
        values, e.g. fractional weights, raises ValueError; under jit nonzero is valid).
      ref_logprobs: ``log pi_ref(y_t)``; required when ``kl_coef`` is not 0 (except with
        the estimator ``"full"``, which does not use it).
      logits: the policy's logits ``[..., T, V]`` (already divided by the sampling
        temperature), any float dtype: the source of the exact ``entropy`` metric, and
        of the KL term with ``kl=KLConfig("full")``, whose gradient flows through them.
      ref_logits: the reference's logits, the shape of ``logits``; used (and then
        required, with ``logits``, when ``kl_coef`` is not 0) only by the estimator
        ``"full"``.
      kl_coef: ``beta``, a number or a (possibly traced) 0-d array (see
        :func:`adaptive_kl_controller`); a concrete 0 drops the KL term.
      kl: the KL penalty's options, a :class:`jaxkl.rl.KLConfig` (``estimator``,
        ``gradient``, ``log_ratio_clip``, ``value_clip`` as in :func:`jaxkl.rl.token_kl`;
        ``placement`` must be ``"loss"``). Default ``KLConfig()``: k3, natural gradient,
        log-ratio clamp 20, no value clamp. ``KLConfig("full")`` (verl's name) makes the
        KL term the exact ``KL(pi_theta(.|prefix) || pi_ref(.|prefix))`` over the whole
        vocabulary at every token (:func:`jaxkl.rl.full_kl`), from ``logits`` and
        ``ref_logits``: no sampling noise, one gradient, no clamps.
      clip_eps, clip_eps_high, clip_ratio_c, log_ratio_clip: the surrogate's clips, as in
        :func:`clipped_surrogate` (``clip_ratio_c``, the dual clip, off by default).
      aggregation, normalizer, global_count: passed to :func:`jaxkl.rl.aggregate` as
        ``mode``, ``normalizer``, ``global_count`` (the whole batch's count, so that
        micro-batch losses add up to the full batch's).
      importance_sampling_level: ``"token"`` (PPO/GRPO: one ratio per token) or
        ``"sequence"`` (GSPO, Zheng et al. 2025, arXiv:2507.18071; TRL's option of this
        name): one ratio per sequence, ``exp`` of the mean token log-ratio over its valid
        tokens, clipped and applied to every token of the sequence.

    Returns:
      ``(loss, metrics)``, ready for ``jax.value_and_grad(..., has_aux=True)``; metrics
      is a :class:`GRPOMetrics` (token means over the mask, no gradient):
      ``policy_loss``, ``kl`` (the mean KL value), the clip fractions, the ratio's
      mean, maximum and minimum, ``ppo_kl`` and ``entropy``.

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
    if old_logprobs is None:
        old_logprobs = jax.lax.stop_gradient(logprobs)
    old_logprobs = check_float_array(old_logprobs, "old_logprobs")
    check_same_shape([("logprobs", logprobs), ("old_logprobs", old_logprobs)])
    valid = check_mask(mask, logprobs.shape)
    kl = check_kl_config(kl, "kl", allow_full=True)
    if kl.placement != "loss":
        raise ValueError(
            f"`kl.placement` must be 'loss' in grpo_loss (the KL term is in the loss), got "
            f"{kl.placement!r}; for the reward placement use kl_penalized_rewards."
        )
    advantages = _check_advantages(advantages, logprobs.shape)
    clips = _check_clips(clip_eps, clip_eps_high, clip_ratio_c, log_ratio_clip)
    if logprobs.ndim < 1:
        raise ValueError("`logprobs` must have a token axis (rank >= 1), got a scalar.")
    # Named `mode`, as aggregate (which it is passed to) names it; tests match that name.
    aggregation = resolve_mode(aggregation)
    check_choice(importance_sampling_level, "importance_sampling_level", ("token", "sequence"))
    normalizer = check_normalizer(normalizer, aggregation, logprobs.shape[-1])
    global_count = check_global_count(global_count, aggregation)
    check_scalar(kl_coef, "kl_coef")
    # A concrete zero (a number, a NumPy or a 0-d JAX array) drops the KL term, and with
    # it the need for ref_logprobs; a traced coefficient keeps it (its value is unknown).
    coef_value = concrete_value(kl_coef)
    use_kl = coef_value is None or coef_value != 0
    inputs = [logprobs, old_logprobs]
    full = kl.estimator == FULL_KL
    logits, ref_logits = _check_logits(logits, ref_logits, logprobs.shape, full, use_kl)
    if full and ref_logprobs is not None:
        raise ValueError(
            "`ref_logprobs` is not used by the estimator 'full' (the exact KL comes from "
            "`logits` and `ref_logits`): drop it, or pick a per-token estimator."
        )
    if use_kl and not full and ref_logprobs is None:
        why = "." if coef_value is not None else (
            " (a traced `kl_coef`, e.g. an adaptive controller's beta under jit, may be "
            "nonzero: pass `ref_logprobs`, or kl_coef=0 as a Python number to switch the "
            "penalty off).")
        raise ValueError("`ref_logprobs` is required when `kl_coef` is not 0" + why)
    if ref_logprobs is not None:
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
    sequence_level = importance_sampling_level == "sequence"
    count = count_mask(valid, dtype, per_row=sequence_level or needs_row_counts(aggregation))
    if sequence_level:
        # GSPO: one ratio per sequence, exp of the mean token log-ratio over its valid
        # tokens (the gradient flows through the mean: 1/n_i per token).
        row_log_ratio = (logp - old).sum(-1) / jnp.maximum(count.rows, 1).reshape(
            logp.shape[:-1])
        surrogate = _clipped_surrogate(
            jnp.where(valid, old + row_log_ratio[..., None], 0), old, adv, clips)
    else:
        surrogate = _clipped_surrogate(logp, old, adv, clips)
    per_token = surrogate.loss
    kl_mean = jnp.zeros((), dtype)
    values = None
    if full and ref_logits is not None:
        # Masked tokens give 0 with zero gradient whatever their logits hold.
        values = full_kl_values(logits, ref_logits, valid, None).astype(dtype)
    elif not full and ref_logprobs is not None:
        values = token_kl_values(
            kl, logp, ref_logprobs.astype(dtype),
            old if kl.gradient == "importance_weighted" else None, valid,
        )
    if values is not None:
        kl_mean = masked_mean(jax.lax.stop_gradient(values), valid, count)
        if use_kl:
            per_token = jnp.where(valid, per_token, 0) + jnp.asarray(kl_coef, dtype) * values
    loss = aggregate_values(per_token, valid, aggregation, normalizer, count, global_count)
    if logits is None:
        token_entropy = -logp
    else:
        token_entropy = entropy_values(jax.lax.stop_gradient(logits)).astype(dtype)
    return loss, _metrics(jax.lax.stop_gradient(surrogate), logp, old, adv, valid, count,
                          kl_mean, token_entropy)


def _check_logits(logits, ref_logits, token_shape, full: bool, use_kl: bool):
    """The checked ``(logits, ref_logits)`` of :func:`grpo_loss` (each may be None)."""
    if ref_logits is not None and not full:
        raise ValueError(
            "`ref_logits` is used only by the estimator 'full' (kl=KLConfig('full')); the "
            "per-token estimators take `ref_logprobs`."
        )
    if full and use_kl:
        for name, value in (("logits", logits), ("ref_logits", ref_logits)):
            if value is None:
                raise ValueError(
                    f"`{name}` is required by the estimator 'full' when `kl_coef` is not 0: "
                    "the exact KL is computed from the logits of both policies."
                )
    if logits is not None:
        logits = check_logits(logits, "logits")
        if logits.shape[:-1] != tuple(token_shape):
            raise ValueError(
                f"`logits` has shape {logits.shape}; expected {tuple(token_shape)} + (V,), "
                "the shape of `logprobs` with a vocabulary axis."
            )
    if ref_logits is not None:
        ref_logits = check_float_array(ref_logits, "ref_logits")
        if logits is None:
            raise ValueError("`ref_logits` needs `logits` (the estimator 'full').")
        check_same_shape([("logits", logits), ("ref_logits", ref_logits)])
    return logits, ref_logits


def _metrics(surrogate: SurrogateOutput, logp: Array, old: Array, adv: Array, valid: Array,
             count, kl_mean: Array, token_entropy: Array) -> GRPOMetrics:
    """GRPOMetrics from the (frozen) surrogate, on the checked arrays and one mask count."""
    dtype = logp.dtype

    def mean(x):
        return masked_mean(x.astype(dtype), valid, count)

    ratio = surrogate.ratio
    low = surrogate.clipped & (adv < 0)
    return GRPOMetrics(
        policy_loss=mean(surrogate.loss),
        kl=kl_mean,
        clip_fraction=mean(surrogate.clipped),
        ratio_mean=mean(ratio),
        ratio_max=jnp.max(jnp.where(valid, ratio, -jnp.inf), initial=0.0),
        ratio_min=jnp.where(valid.any(), jnp.min(jnp.where(valid, ratio, jnp.inf)), 0.0),
        clip_fraction_low=mean(low),
        clip_fraction_high=mean(surrogate.clipped & ~low),
        dual_clip_fraction=mean(surrogate.dual_clipped),
        ppo_kl=mean(jax.lax.stop_gradient(old - logp)),
        entropy=mean(jax.lax.stop_gradient(token_entropy)),
    )


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
