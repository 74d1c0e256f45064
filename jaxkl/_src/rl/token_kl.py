r"""Per-token KL(pi || pi_ref) penalties on sampled tokens, and their gradients.

A policy ``pi`` samples tokens; at each sampled token we know ``logprobs = log pi(y_t)``
and ``ref_logprobs = log pi_ref(y_t)``. With the log-ratio ``l = ref_logprobs - logprobs``
(``log p - log q`` in the notation of :mod:`jaxkl.estimators`, with ``q = pi``,
``p = pi_ref``), every estimator below averages to (an approximation of) the reverse KL
``KL(pi || pi_ref)`` over tokens sampled from ``pi``:

=============  ==========================  =========  ======================================
``estimator``  per-token value             unbiased?  natural gradient (on-policy mean)
=============  ==========================  =========  ======================================
``"k1"``       ``-l``                      yes        0 (``E_pi[grad log pi] = 0``)
``"k2"``       ``l**2 / 2``                no         ``grad KL(pi || pi_ref)``
``"k3"``       ``exp(l) - 1 - l``          yes        ``grad KL(pi_ref || pi)`` (forward KL)
``"abs"``      ``|l|``                     no         ``E_pi[sign(-l) grad log pi]``
=============  ==========================  =========  ======================================

The value of an estimator and the gradient one gets by differentiating it are two
different things: used as a *loss*, only k2 follows the reverse-KL gradient on-policy
(Schulman 2020; Tang & Munos 2025). The ``gradient`` argument of :func:`token_kl` picks
what the backward pass does:

- ``"natural"`` (default): differentiate the value, as verl, TRL, OpenRLHF and tunix do.
- ``"straight_through"``: keep the estimator's value, but back-propagate k2's gradient
  ``grad (l**2 / 2)``, the reverse-KL gradient on-policy (verl's ``"k3+"``).
- ``"importance_weighted"``: the value ``w * k(l)`` with ``w = pi / pi_old``; its
  gradient adds the score-function term, so for an unbiased estimator (k1, k3) its
  expected gradient is ``grad KL(pi || pi_ref)`` on- and off-policy. Without
  ``old_logprobs`` the weight is ``pi / stop_gradient(pi)`` (value 1, on-policy).

References:
  J. Schulman, "Approximating KL Divergence", 2020, http://joschu.net/blog/kl-approx.html.
  Y. Tang and R. Munos, "On a few pitfalls in KL divergence gradient estimation for RL",
  2025, arXiv:2506.09477.
  Z. Shao et al., "DeepSeekMath" (GRPO), 2024, arXiv:2402.03300.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxkl._src import numerics, vocabulary
from jaxkl._src.estimators.kl import KL_KERNELS
from jaxkl._src.validation import (
    check_choice,
    check_clip,
    check_float_array,
    check_mask,
    check_same_shape,
    check_scalar,
    compute_dtype,
)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# exp(20) ~ 4.9e8: finite in float32 and bf16 with room to sum ~1e29 such terms, and the
# bound verl uses before its exp (verl/trainer/ppo/core_algos.py, kl_penalty_forward).
DEFAULT_LOG_RATIO_CLIP = 20.0

# The per-token penalties by name (jaxkl._src.vocabulary.TOKEN_ESTIMATORS), unchecked.
KERNELS: dict[str, Callable[[Array], Array]] = {**KL_KERNELS, "abs": jnp.abs}
ESTIMATORS = vocabulary.TOKEN_ESTIMATORS
assert tuple(KERNELS) == ESTIMATORS
GRADIENTS = ("natural", "straight_through", "importance_weighted")
# Estimators whose value contains exp(l), so that a large log-ratio overflows.
EXPONENTIATING = ("k3",)
# Where a KL penalty enters training (the audit compares both; grpo_loss takes "loss").
PLACEMENTS = ("loss", "reward")


class KLConfig(NamedTuple):
    """The options of one KL penalty: estimator, placement, gradient option and clamps.

    ``estimator``, ``gradient``, ``log_ratio_clip`` and ``value_clip`` are those of
    :func:`jaxkl.rl.token_kl`; ``placement`` is ``"loss"`` (the per-token value is
    differentiated, as :func:`jaxkl.rl.grpo_loss` does) or ``"reward"`` (the penalty
    enters the reward; see :mod:`jaxkl.rl.audit`). :func:`jaxkl.rl.grpo_loss` also takes
    the estimator ``"full"`` (verl's name): the exact KL over the vocabulary from the
    logits, with the natural gradient and no clamps. Hashable, so it can be a static
    argument of ``jax.jit``.
    """

    estimator: str = "k3"
    placement: str = "loss"
    gradient: str = "natural"
    log_ratio_clip: float | None = DEFAULT_LOG_RATIO_CLIP
    value_clip: float | None = None

    @property
    def name(self) -> str:
        """A short label, e.g. ``"k3 loss natural"``."""
        return f"{self.estimator} {self.placement} {self.gradient}"


def resolve_estimator(estimator, gradient: str, name: str = "estimator",
                      gradient_name: str = "gradient") -> tuple[str, str]:
    """``(estimator, gradient)`` with the peers' names resolved (vocabulary), checked.

    A trailing ``+`` (verl) asks for k2's gradient: ``straight_through``.
    """
    if isinstance(estimator, str) and estimator in vocabulary.TOKEN_ESTIMATOR_REFUSED:
        raise ValueError(f"`{name}` {estimator!r}: "
                         f"{vocabulary.TOKEN_ESTIMATOR_REFUSED[estimator]}")
    if isinstance(estimator, str) and estimator.endswith("+") and len(estimator) > 1:
        if gradient not in ("natural", "straight_through"):
            raise ValueError(
                f"`{name}` {estimator!r} (verl's straight-through form) sets the gradient to "
                f"'straight_through'; it conflicts with `{gradient_name}` = {gradient!r}."
            )
        estimator, gradient = estimator[:-1], "straight_through"
    if isinstance(estimator, str):
        estimator = vocabulary.TOKEN_ESTIMATOR_ALIASES.get(estimator, estimator)
    check_choice(estimator, name, ESTIMATORS + tuple(vocabulary.TOKEN_ESTIMATOR_ALIASES))
    check_choice(gradient, gradient_name, GRADIENTS)
    return estimator, gradient


def check_kl_config(config, name: str = "kl", *, allow_full: bool = False) -> KLConfig:
    """A :class:`KLConfig` with validated fields, errors naming ``name.field``.

    Tuples ``(estimator[, placement[, gradient[, log_ratio_clip[, value_clip]]]])`` are
    accepted; the clamps come back as floats (or ``None``). ``allow_full`` admits the
    estimator ``"full"`` (the exact KL over the vocabulary, from logits), which has one
    gradient and no sampled log-ratio to clamp: it comes back with both clamps ``None``.
    """
    if isinstance(config, str) or not isinstance(config, tuple) or not 1 <= len(config) <= 5:
        raise TypeError(
            f"`{name}` must be a KLConfig(estimator, placement, gradient, log_ratio_clip, "
            f"value_clip), got {config!r}."
        )
    config = KLConfig(*config)
    if allow_full and config.estimator == vocabulary.FULL_KL:
        return _check_full_kl_config(config, name)
    estimator, gradient = resolve_estimator(config.estimator, config.gradient,
                                            f"{name}.estimator", f"{name}.gradient")
    check_choice(config.placement, f"{name}.placement", PLACEMENTS)
    return config._replace(
        estimator=estimator,
        gradient=gradient,
        log_ratio_clip=check_clip(config.log_ratio_clip, f"{name}.log_ratio_clip"),
        value_clip=check_clip(config.value_clip, f"{name}.value_clip"),
    )


def _check_full_kl_config(config: KLConfig, name: str) -> KLConfig:
    check_choice(config.placement, f"{name}.placement", ("loss",))
    if config.gradient != "natural":
        raise ValueError(
            f"`{name}.gradient` must be 'natural' with the estimator 'full': the exact KL "
            f"has one gradient, got {config.gradient!r}."
        )
    log_ratio_clip = check_clip(config.log_ratio_clip, f"{name}.log_ratio_clip")
    if log_ratio_clip not in (None, DEFAULT_LOG_RATIO_CLIP):
        raise ValueError(
            f"`{name}.log_ratio_clip` must be None (or the default) with the estimator "
            f"'full': the exact KL has no sampled log-ratio to clamp, got {log_ratio_clip}."
        )
    if config.value_clip is not None:
        raise ValueError(
            f"`{name}.value_clip` must be None with the estimator 'full': the exact KL is "
            f"not a per-sample value to clamp, got {config.value_clip!r}."
        )
    return config._replace(log_ratio_clip=None)


def clip_symmetric(x: Array, bound: float | None) -> Array:
    """``x`` clamped to ``[-bound, bound]`` (unchanged when ``bound`` is None)."""
    return x if bound is None else jnp.clip(x, -bound, bound)


def _beyond(x: Array, bound: float | None) -> Array:
    """Where a symmetric clamp of ``x`` at ``bound`` is active (all False when off)."""
    if bound is None:
        return jnp.zeros(x.shape, bool)
    return jnp.abs(x) > bound


def _sanitize(x: Array, valid: Array | None) -> Array:
    # First half of the double-where trick: masked entries may be -inf/NaN, and a NaN
    # anywhere upstream of a select still poisons the gradient unless it is replaced here.
    return x if valid is None else jnp.where(valid, x, jnp.zeros_like(x))


# d k / d l of each estimator, exact (k3's shares the value's series near 0).
def _derivative(estimator: str, l: Array) -> Array:
    if estimator == "k1":
        return jnp.full_like(l, -1)
    if estimator == "k2":
        return l
    if estimator == "k3":
        return numerics.expm1mx_and_derivative(l)[1]
    return jnp.sign(l)


# k(l) - k'(l): the derivative of w * k(l) with respect to logprobs, divided by w, in a
# form without cancellation (for k3 the two terms e^l - 1 - l and e^l - 1 are equal to
# within l, so their float difference loses every digit once e^l >> |l|).
def _value_minus_derivative(estimator: str, l: Array) -> Array:
    if estimator == "k1":
        return 1 - l
    if estimator == "k2":
        return l * (l / 2 - 1)
    if estimator == "k3":
        return -l
    return jnp.abs(l) - jnp.sign(l)


def importance_weight(logp: Array, old: Array, log_ratio_clip: float | None):
    """``w = exp(clip(logp - old))`` and where that clamp is active (shared with the audit)."""
    log_weight = logp - old
    weight = jnp.exp(clip_symmetric(log_weight, log_ratio_clip))
    return weight, _beyond(log_weight, log_ratio_clip)


def _clamped_value(options: KLConfig, logp: Array, ref: Array, old: Array):
    """The estimator's clamped value, and where each clamp is active."""
    log_ratio = ref - logp
    value = KERNELS[options.estimator](clip_symmetric(log_ratio, options.log_ratio_clip))
    log_ratio_clamped = _beyond(log_ratio, options.log_ratio_clip)
    value_clamped = _beyond(value, options.value_clip)
    value = clip_symmetric(value, options.value_clip)
    weight = ratio_clamped = None
    if options.gradient == "importance_weighted":
        weight, ratio_clamped = importance_weight(logp, old, options.log_ratio_clip)
        value = weight * value
    return log_ratio, value, log_ratio_clamped, value_clamped, weight, ratio_clamped


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _token_values(options: KLConfig, logp: Array, ref: Array, old: Array) -> Array:
    """Per-token values of token_kl (inputs already cast and masked); see _token_jvp."""
    return _clamped_value(options, logp, ref, old)[1]


def _token_jvp(options: KLConfig, primals, tangents):
    """The tangent of every gradient option as ``a * dlogp + b * dref + c * dold``.

    The coefficients are computed directly, never as a difference of large terms, and
    are exactly 0 (finite) at the tokens that carry no gradient:

    - a token with a clamp active (``|l| > log_ratio_clip``, ``|k| > value_clip`` except
      for straight-through, whose backward pass ignores the value, or an importance
      log-ratio beyond ``log_ratio_clip``): a clamp replaces the token by a constant;
    - a token that cannot be a sample: ``logprobs`` (or ``old_logprobs``) not finite,
      ``ref_logprobs`` NaN or ``+inf``. Its value is NaN or infinite (visible in the
      loss); its zero gradient lets a mask applied later (e.g. by ``aggregate``) remove
      it from the backward pass too (a NaN coefficient times the mask's zero cotangent
      would be NaN).

    Zero tangents arrive as symbolic zeros and are skipped: an infinite coefficient (an
    exact gradient at ``ref_logprobs = -inf`` without a clamp) must not meet the zero
    tangent of an argument that is not differentiated.
    """
    logp, ref, old = primals
    value = _clamped_value(options, logp, ref, old)[1]
    if options.value_clip is not None and options.gradient != "straight_through":
        # The coefficients need the value (its clamp), but recompute it from the inputs
        # behind an optimisation barrier: sharing the value's exp with them made XLA:CPU
        # write that exp out as a [tokens] float32 array between the forward pass and
        # the gradient pass (value+grad 1.25x the plain JAX formula; see BENCHMARKS.md).
        logp, ref, old = jax.lax.optimization_barrier((logp, ref, old))
    log_ratio, coef_value, log_ratio_clamped, value_clamped, weight, ratio_clamped = (
        _clamped_value(options, logp, ref, old)
    )
    sample = jnp.isfinite(logp) & ~jnp.isnan(ref) & (ref < jnp.inf)
    zero = jnp.zeros_like(value)
    if options.gradient == "straight_through":
        # k2's gradient l dl at the log-ratio: as verl's "k3+", whatever the value clamp.
        carries = sample & ~log_ratio_clamped
        coef = jnp.where(carries, log_ratio, zero)
        a, b, c = -coef, coef, None
    elif options.gradient == "natural":
        carries = sample & ~log_ratio_clamped & ~value_clamped
        coef = jnp.where(carries, _derivative(options.estimator, log_ratio), zero)
        a, b, c = -coef, coef, None
    else:
        carries = sample & jnp.isfinite(old) & ~log_ratio_clamped & ~value_clamped
        carries = carries & ~ratio_clamped
        # d(w k(l)) = w (k - k') dlogp + w k' dref - w k dold, with l = ref - logp and
        # w = exp(logp - old): for k3, w (k - k') = -w l exactly.
        a = jnp.where(carries, weight * _value_minus_derivative(options.estimator, log_ratio),
                      zero)
        b = jnp.where(carries, weight * _derivative(options.estimator, log_ratio), zero)
        c = jnp.where(carries, -coef_value, zero)
    terms = [
        coef * t
        for coef, t in zip((a, b, c), tangents, strict=True)
        if coef is not None and not isinstance(t, SymbolicZero)
    ]
    tangent = functools.reduce(jnp.add, terms) if terms else zero
    return value, tangent


_token_values.defjvp(_token_jvp, symbolic_zeros=True)


def token_kl(
    logprobs: ArrayLike,
    ref_logprobs: ArrayLike,
    *,
    estimator: str = "k3",
    gradient: str = "natural",
    old_logprobs: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    log_ratio_clip: float | None = DEFAULT_LOG_RATIO_CLIP,
    value_clip: float | None = None,
) -> Array:
    r"""Per-token estimate of KL(pi || pi_ref) at tokens sampled from pi.

    .. math::
        l = \log\pi_{ref}(y) - \log\pi(y), \qquad
        v = \mathrm{clip}_{c_v}\big(k(\mathrm{clip}_{c_l}(l))\big),

    with ``k`` one of k1 ``-l``, k2 ``l**2/2``, k3 ``exp(l) - 1 - l`` (evaluated with a
    series near 0, so it is accurate to a few ulps for tiny ``l``), abs ``|l|``. See the
    module docstring for what each ``gradient`` option back-propagates.

    Clamping. ``log_ratio_clip`` (default 20, as verl) bounds ``l`` and the importance
    log-ratio before any ``exp``, so the value and the gradient stay finite for every
    finite input (k3 is at most ``exp(20) ~ 4.9e8``). ``value_clip`` (default off)
    bounds the result to ``[-c, c]`` as verl's ``low_var_kl`` (``c = 10``) and OpenRLHF
    (``c = 10``) do: it caps a single token's weight at the price of bias.
    ``log_ratio_clip=None`` gives the exact formula, which overflows to ``inf`` for
    ``l > ~88`` in k3.

    Gradients (with respect to ``logprobs``; a custom JVP computes each in a form
    without cancellation, and forward mode and second derivatives work):

    - ``"natural"``: ``-k'(l)``;
    - ``"straight_through"``: ``-l``, k2's gradient, whatever the value clamp (as verl's
      ``"k3+"``);
    - ``"importance_weighted"``: ``w (k(l) - k'(l))``, ``w = pi / pi_old``; for k3 that
      is ``-w l``, computed as such (the difference of ``w k3`` and ``w expm1(l)``, two
      numbers of size ``w e^l``, would lose it in float32).

    **A clamped token contributes no gradient, under every option**: a clamp replaces
    the token by a constant. Clamped means ``|l| > log_ratio_clip``, or
    ``|k| > value_clip`` (not for straight-through), or, for importance weighting,
    ``|log pi - log pi_old| > log_ratio_clip``. (The derivative of the clamped
    expression would be the score of a constant, ``w k(c)``: sign-flipped and ``e^c``
    large.) A token that cannot be a sample (``logprobs`` or ``old_logprobs`` not
    finite, ``ref_logprobs`` NaN or ``+inf``) also gets 0 gradient, its value being
    whatever the formula gives (NaN, inf), so that a mask applied later (as
    :func:`jaxkl.rl.aggregate` does) keeps NaN out of the backward pass too. A
    ``ref_logprobs`` of ``-inf`` (a token the reference cannot produce) is a clamped
    token unless ``log_ratio_clip=None``, where the exact values and gradients are
    infinite.

    Args:
      logprobs: ``log pi(y_t)`` at the sampled tokens; any shape, float dtype (bf16 ok).
      ref_logprobs: ``log pi_ref(y_t)``, same shape.
      estimator: ``"k1"``, ``"k2"``, ``"k3"`` or ``"abs"``, or a peer's name for one
        (verl's, tunix's): ``"kl"`` is k1,
        ``"mse"`` (verl) and ``"mse_kl"`` (tunix) are k2, ``"low_var_kl"`` is k3 (the
        value clamp verl applies to it is not implied: pass ``value_clip=10``). Any of
        these names followed by ``+`` (verl's ``"k3+"``, ``"low_var_kl+"``) is that
        estimator with ``gradient="straight_through"`` (k2's gradient, the estimator's
        value); combined with ``gradient="importance_weighted"`` it raises
        ``ValueError``. ``"full"`` (verl's exact KL over the vocabulary) raises
        ``ValueError`` pointing to :func:`jaxkl.rl.full_kl`, which needs the logits.
      gradient: ``"natural"``, ``"straight_through"`` or ``"importance_weighted"``.
      old_logprobs: ``log pi_old(y_t)`` of the policy that sampled the tokens, same
        shape; only with ``gradient="importance_weighted"`` (default: on-policy).
      mask: optional array of the same shape, bool, or numeric holding only 0 and 1 (a
        concrete mask with other values, e.g. fractional weights, raises ValueError;
        under jit nonzero counts as valid); masked tokens give 0 with zero gradient even
        when their log-probabilities are ``-inf`` or NaN.
      log_ratio_clip: symmetric bound on log-ratios before ``exp``, or ``None``.
      value_clip: symmetric bound on the returned value, or ``None``.

    Returns:
      The per-token values, shape of ``logprobs``, in float32 (float64 for f64 inputs).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxkl import rl
      >>> logp, ref = jnp.array([-1.0, -2.0]), jnp.array([-1.5, -1.0])
      >>> rl.token_kl(logp, ref)
      Array([0.1065, 0.7183], dtype=float32)
      >>> g = jax.grad(lambda x: rl.token_kl(x, ref, gradient="straight_through").sum())
      >>> g(logp)  # k2's gradient, logp - ref
      Array([ 0.5, -1. ], dtype=float32)
      >>> iw = jax.grad(lambda x: rl.token_kl(x, jnp.array([-11.0, -35.0]),
      ...                                     gradient="importance_weighted").sum())
      >>> iw(jnp.array([-30.0, -5.0]))  # -w l = -19 at w = 1; l = -30 is clamped: 0
      Array([-19.,   0.], dtype=float32)
    """
    logprobs = check_float_array(logprobs, "logprobs")
    ref_logprobs = check_float_array(ref_logprobs, "ref_logprobs")
    check_same_shape([("logprobs", logprobs), ("ref_logprobs", ref_logprobs)])
    estimator, gradient = resolve_estimator(estimator, gradient)
    log_ratio_clip = check_clip(log_ratio_clip, "log_ratio_clip")
    value_clip = check_clip(value_clip, "value_clip")
    inputs = [logprobs, ref_logprobs]
    if old_logprobs is not None:
        if gradient != "importance_weighted":
            raise ValueError(
                "`old_logprobs` is only used with gradient='importance_weighted', "
                f"got gradient={gradient!r}."
            )
        old_logprobs = check_float_array(old_logprobs, "old_logprobs")
        check_same_shape([("logprobs", logprobs), ("old_logprobs", old_logprobs)])
        inputs.append(old_logprobs)
    valid = None if mask is None else check_mask(mask, logprobs.shape)

    dtype = compute_dtype(*inputs)
    options = KLConfig(estimator, "loss", gradient, log_ratio_clip, value_clip)
    return token_kl_values(
        options,
        logprobs.astype(dtype),
        ref_logprobs.astype(dtype),
        None if old_logprobs is None else old_logprobs.astype(dtype),
        valid,
    )


def token_kl_values(
    options: KLConfig, logp: Array, ref: Array, old: Array | None, valid: Array | None
) -> Array:
    """:func:`token_kl` on checked inputs: ``options`` validated (placement ignored),
    ``logp``, ``ref`` (and ``old`` unless None) of one float compute dtype and one shape,
    ``valid`` a bool mask of that shape or None. ``old`` is used only with the
    importance-weighted gradient; None there means on-policy."""
    chex.assert_equal_shape([logp, ref] + [x for x in (old, valid) if x is not None])
    chex.assert_type([logp, ref] + ([] if old is None else [old]), logp.dtype)
    if valid is not None:
        chex.assert_type(valid, bool)
    logp = _sanitize(logp, valid)
    ref = _sanitize(ref, valid)
    if options.gradient == "importance_weighted" and old is not None:
        old = _sanitize(old, valid)
    else:
        # On-policy: w = pi / stop_gradient(pi), value 1 (unused by the other options).
        old = jax.lax.stop_gradient(logp)
    return _sanitize(_token_values(options, logp, ref, old), valid)


def kl_penalized_rewards(
    scores: ArrayLike,
    logprobs: ArrayLike,
    ref_logprobs: ArrayLike,
    mask: ArrayLike,
    *,
    kl_coef: ArrayLike,
    estimator: str = "k1",
    log_ratio_clip: float | str | None = "auto",
    value_clip: float | None = None,
) -> Array:
    r"""Token-level rewards with the KL penalty in the reward (PPO/RLHF placement).

    .. math:: R_t = s\,[t = T_{last}] - \beta\, \mathrm{sg}(k(l_t)), \quad l_t = \log
        \pi_{ref}(y_t) - \log \pi(y_t)

    The sequence score ``s`` lands on the last valid token; every valid token pays
    ``beta`` times the (stop-gradient) per-token estimate. With k1 the penalty summed over
    a sequence is ``log pi(y) - log pi_ref(y)``, and the score-function (REINFORCE/PPO)
    gradient of the expected return is ``grad E[s] - beta grad KL(pi || pi_ref)``: the
    reverse-KL gradient, unbiased, which no estimator placed in the loss gives with its
    natural gradient except k2 (Ziegler et al. 2019; Tang & Munos 2025).

    Reference: D. Ziegler et al., "Fine-Tuning Language Models from Human Preferences",
    2019, arXiv:1909.08593.

    Args:
      scores: sequence-level rewards, shape ``mask.shape[:-1]``.
      logprobs: ``log pi(y_t)`` of the sampling policy, shape ``[..., T]``.
      ref_logprobs: ``log pi_ref(y_t)``, same shape.
      mask: ``[..., T]``, the valid tokens: bool, or numeric holding only 0 and 1 (a
        concrete mask with other values, e.g. fractional weights, raises ValueError;
        under jit nonzero counts as valid).
      kl_coef: the KL coefficient ``beta`` (a scalar, may be traced).
      estimator: per-token estimator, k1 (default, the unbiased reverse-KL gradient);
        any name :func:`token_kl` accepts (``"kl"``, ``"mse"``, ``"low_var_kl"``, ...)
        except the ``+`` forms, which name a gradient option and raise ``ValueError``
        (rewards carry no gradient).
      log_ratio_clip: bound on ``l``, ``None`` (off) or ``"auto"`` (the default): off for
        the estimators that never exponentiate (k1, k2, abs), so that k1's penalty sums
        to ``log pi(y) - log pi_ref(y)`` exactly, and :data:`DEFAULT_LOG_RATIO_CLIP` for
        k3, whose ``exp(l)`` would otherwise give ``-inf`` rewards for ``l > ~88``.
      value_clip: optional bound on each token's penalty (OpenRLHF uses 10).

    Returns:
      Float32 (at least) rewards ``[..., T]``, 0 at masked tokens, no gradient. A sequence
      with no valid token (all masked, or ``T = 0``) gets no reward: its score has no token
      to land on.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> rl.kl_penalized_rewards(jnp.array([1.0]), jnp.array([[-1.0, -2.0, 0.0]]),
      ...                         jnp.array([[-1.5, -1.0, 0.0]]),
      ...                         jnp.array([[True, True, False]]), kl_coef=0.1)
      Array([[-0.05,  1.1 ,  0.  ]], dtype=float32)
    """
    logprobs = check_float_array(logprobs, "logprobs")
    scores = check_float_array(scores, "scores")
    check_scalar(kl_coef, "kl_coef")
    valid = check_mask(mask, logprobs.shape)
    if logprobs.ndim < 1:
        raise ValueError("`logprobs` must have a token axis (rank >= 1).")
    if scores.shape != logprobs.shape[:-1]:
        raise ValueError(
            f"`scores` has shape {scores.shape} but must have shape {logprobs.shape[:-1]} "
            "(one score per sequence)."
        )
    ref_logprobs = check_float_array(ref_logprobs, "ref_logprobs")
    check_same_shape([("logprobs", logprobs), ("ref_logprobs", ref_logprobs)])
    if isinstance(estimator, str) and estimator.endswith("+"):
        raise ValueError(f"`estimator` {estimator!r} names a gradient option, and rewards "
                         "carry no gradient; use the estimator without '+'.")
    estimator, _ = resolve_estimator(estimator, "natural")
    if isinstance(log_ratio_clip, str):
        if log_ratio_clip != "auto":
            raise ValueError(
                f'`log_ratio_clip` must be a positive number, None or "auto", got '
                f"{log_ratio_clip!r}."
            )
        log_ratio_clip = DEFAULT_LOG_RATIO_CLIP if estimator in EXPONENTIATING else None
    options = KLConfig(estimator, "reward", "natural", check_clip(log_ratio_clip, "log_ratio_clip"),
                       check_clip(value_clip, "value_clip"))
    dtype = compute_dtype(logprobs, ref_logprobs)
    penalty = token_kl_values(
        options, logprobs.astype(dtype), ref_logprobs.astype(dtype), None, valid
    )
    # The last valid token of each row: the largest index whose mask is set (-1 for a row
    # with none, including T = 0, whose score then has no token to land on).
    positions = jax.lax.broadcasted_iota(jnp.int32, valid.shape, valid.ndim - 1)
    last = jnp.max(jnp.where(valid, positions, -1), axis=-1, keepdims=True, initial=-1)
    at_last = (positions == last) & valid
    rewards = jnp.where(at_last, scores.astype(dtype)[..., None], 0) - jnp.asarray(
        kl_coef, dtype
    ) * penalty
    return jax.lax.stop_gradient(jnp.where(valid, rewards, 0))


def kl_penalty_to_go(
    logprobs: ArrayLike,
    ref_logprobs: ArrayLike,
    mask: ArrayLike,
    *,
    kl_coef: ArrayLike,
    estimator: str = "k1",
    log_ratio_clip: float | str | None = "auto",
    value_clip: float | None = None,
) -> Array:
    r"""The KL penalty's returns-to-go: ``-beta sum_{s >= t} k(l_s)`` per token, no gradient.

    .. math:: P_t = -\beta \sum_{s \ge t} m_s\, \mathrm{sg}(k(l_s)), \quad
              l_s = \log \pi_{ref}(y_s) - \log \pi(y_s)

    The per-token rewards of :func:`kl_penalized_rewards` without the score, summed from
    each token to the end of its sequence (undiscounted, as GRPO's outcome reward is).
    Added to group-normalised advantages, ``advantages[..., None] + kl_penalty_to_go(...)``
    puts "k1 in the reward" into a GRPO loss in one call: the score-function gradient of
    the penalty is then the sequence-level reverse-KL gradient ``-beta grad KL(pi ||
    pi_ref)``, which no per-token KL loss gives (Tang & Munos 2025, Sec. 4).

    Args:
      logprobs: ``log pi(y_t)`` of the sampling policy, ``[..., T]`` (rank >= 1).
      ref_logprobs: ``log pi_ref(y_t)``, same shape.
      mask: ``[..., T]``, the valid tokens: bool, or numeric holding only 0 and 1 (a
        concrete mask with other values, e.g. fractional weights, raises ValueError;
        under jit nonzero counts as valid).
      kl_coef: ``beta`` (a scalar, may be traced).
      estimator, log_ratio_clip, value_clip: as in :func:`kl_penalized_rewards`.

    Returns:
      Float32 (at least) ``[..., T]``, 0 at masked tokens, no gradient.

    Raises:
      TypeError, ValueError: as :func:`kl_penalized_rewards`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> rl.kl_penalty_to_go(jnp.array([[-1.0, -2.0, 0.0]]), jnp.array([[-1.5, -1.0, 0.0]]),
      ...                     jnp.array([[True, True, False]]), kl_coef=0.1)
      Array([[0.05, 0.1 , 0.  ]], dtype=float32)
    """
    logprobs = check_float_array(logprobs, "logprobs")
    if logprobs.ndim < 1:
        raise ValueError("`logprobs` must have a token axis (rank >= 1).")
    scores = jnp.zeros(logprobs.shape[:-1], compute_dtype(logprobs))
    rewards = kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=kl_coef,
                                   estimator=estimator, log_ratio_clip=log_ratio_clip,
                                   value_clip=value_clip)
    to_go = jnp.flip(jnp.cumsum(jnp.flip(rewards, -1), axis=-1), -1)
    return jnp.where(check_mask(mask, logprobs.shape), to_go, 0)
