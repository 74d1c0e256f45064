"""The objectives of :mod:`jaxkl.fitting`: targets and reparameterised draws, one loss per
divergence (:func:`make_loss`) and its many-sample estimate (:func:`evaluate`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxkl._src import numerics
from jaxkl._src.distributions.checks import check_parameters, check_single
from jaxkl._src.distributions.families import Family, Params
from jaxkl._src.estimators import divergences
from jaxkl._src.estimators.kl import KL_KERNELS
from jaxkl._src.validation import (
    check_choice,
    check_key,
    check_positive_int,
    compute_dtype,
    concrete_value,
    third_party_promotion,
)

Array = jax.Array
LossFn = Callable[[Params, Array], tuple[Array, Array]]
# A target: a distribution, or (for the objectives that allow it) a log density x -> log p(x).
Target = distrax.DistributionLike | Callable[[Array], Array]

DIVERGENCES = (
    "reverse_kl",
    "reverse_kl_stl",
    "reverse_kl_score_k1",
    "reverse_kl_score_k3",
    "forward_kl",
    "forward_kl_snis",
    "renyi",
    # Every other divergence name of jaxkl.csiszar (one vocabulary with csiszar and
    # estimate): mean f(r) - f(1) - f'(1)(r - 1) over reparameterised samples of q.
    *(name for name in divergences.DIVERGENCE_NAMES if name not in ("reverse_kl", "forward_kl")),
)
_CSISZAR_OBJECTIVES = tuple(
    name for name in divergences.DIVERGENCE_NAMES if name not in ("reverse_kl", "forward_kl")
)
_NEEDS_ALPHA = ("renyi", "amari_alpha")
_NEEDS_T = ("t_power",)
# Their estimators use E_q[p/q] = 1 or log p itself, so a log density known only up to a
# constant would give a different objective (and a different minimiser).
_NEEDS_NORMALISED = ("reverse_kl_score_k3", "forward_kl", *_CSISZAR_OBJECTIVES)
# make_loss and fit draw all of a step's samples at once (estimate streams; they cannot):
# a draw must fit XLA's 32-bit array indexing, and 2**31 float32 values are already 8 GiB.
# (num_samples=2**40 attempted a 30 TB allocation; 2**63 failed inside MLIR.)
MAX_DRAW_ELEMENTS = 2**31 - 1


# ----------------------------------------------------------------------------------------
# Targets and samples
# ----------------------------------------------------------------------------------------


def at_least_float32(x: Array) -> Array:
    """float32 at least: log-densities in bf16 lose the differences the losses need."""
    return x.astype(compute_dtype(x))


def _sample(d, key: Array, n: int) -> Array:
    # distrax broadcasts (n, d) samples against (d,) parameters internally, which a
    # strict jax_numpy_rank_promotion="raise" setting would reject; the shapes it combines
    # are its own, so that promotion is allowed here and nowhere else.
    with third_party_promotion():
        return d.sample(seed=key, sample_shape=(n,))


def _log_prob(d, x: Array) -> Array:
    with third_party_promotion():
        return d.log_prob(x)


def _log_density(p) -> Callable[[Array], Array]:
    if hasattr(p, "log_prob"):
        return lambda x: _log_prob(p, x)
    if callable(p):
        return p
    raise TypeError(
        "`p` must be a distrax distribution (anything with `log_prob`) or a callable "
        f"log density, got {type(p).__name__}."
    )


def _check_target(p, family: Family, divergence: str) -> None:
    """Trace-time checks that p and the family describe the same space."""
    log_density = _log_density(p)
    if divergence in _NEEDS_NORMALISED and not hasattr(p, "log_prob"):
        raise ValueError(
            f"divergence={divergence!r} needs a normalised target `p` (a distribution with "
            "`log_prob`), got a bare log-density callable; use 'reverse_kl', "
            "'reverse_kl_score_k1', 'forward_kl_snis' or 'renyi' for unnormalised targets."
        )
    if divergence == "forward_kl" and not hasattr(p, "sample"):
        raise ValueError("divergence='forward_kl' fits by maximum likelihood on samples of p, "
                         "so `p` needs a `sample` method; use 'forward_kl_snis' otherwise.")
    if hasattr(p, "event_shape"):
        if tuple(p.event_shape) != tuple(family.event_shape):
            raise ValueError(
                f"`p` has event shape {tuple(p.event_shape)} but `family` {family.name} has "
                f"event shape {tuple(family.event_shape)}; they must be equal."
            )
        check_single(p, "p", "to fit a batch of targets, jax.vmap over them")
        # A negative scale or a NaN location would make every step non-finite (all
        # skipped): checked like reference_kl's, when the parameters are concrete.
        check_parameters(p, "p")
        return
    probe = jax.ShapeDtypeStruct((2, *family.event_shape), jnp.float32)
    out = jax.eval_shape(log_density, probe)
    if tuple(out.shape) != (2,):
        raise ValueError(
            f"The log density `p` must map samples of shape (n, *{tuple(family.event_shape)}) "
            f"to shape (n,); it maps (2, ...) to {tuple(out.shape)}."
        )


def _reparameterised_draw(q: distrax.Distribution, key: Array, n: int) -> tuple[Array, Array]:
    """Samples with pathwise gradients, and their log-weights (summing to 1 in exp).

    A mixture is sampled per component (``n`` each), weighted by the component's
    probability: E_q[f] = sum_k w_k E_{q_k}[f] then has pathwise gradients for the
    weights too, which sampling the component index would not give.
    """
    if isinstance(q, distrax.MixtureSameFamily):
        components = q.components_distribution
        x = _sample(components, key, n)  # (n, K, *event)
        num_components = x.shape[1]
        log_w = jax.nn.log_softmax(at_least_float32(q.mixture_distribution.logits), axis=-1)
        log_w = jnp.broadcast_to(log_w - math.log(n), (n, num_components))
        x = x.reshape((n * num_components, *x.shape[2:]))
        return x, log_w.reshape(n * num_components)
    x = _sample(q, key, n)
    return x, jnp.full((n,), -math.log(n), at_least_float32(x).dtype)


def _reparameterised_draw_and_log_q(q: distrax.Distribution, key: Array,
                                    n: int) -> tuple[Array, Array, Array]:
    """:func:`_reparameterised_draw` and ``log q`` at the samples, float32 at least.

    A single distribution gives both through distrax's ``sample_and_log_prob``: for a
    Normal (and the affine maps of one that the Gaussian families are) the log density
    follows from the standard normal draw ``eps`` as ``-eps**2/2 - log scale - log(2 pi)/2``
    with no standardisation ``(x - loc) / scale`` (and for a full covariance, no
    triangular solve). The samples are the same (the same draw of the same key); the value
    and its gradient equal those of ``log_prob(x)`` up to rounding, since ``x = loc + scale
    eps`` makes them the same function of the parameters. A mixture is drawn per
    component and its log density evaluated at every draw, as before.
    """
    if isinstance(q, distrax.MixtureSameFamily) or not hasattr(q, "sample_and_log_prob"):
        # (a hand-built family may return a TFP distribution, which has no such method)
        x, log_w = _reparameterised_draw(q, key, n)
        return x, log_w, at_least_float32(_log_prob(q, x))
    with third_party_promotion():
        x, log_q = q.sample_and_log_prob(seed=key, sample_shape=(n,))
    log_q = at_least_float32(log_q)
    return x, jnp.full((n,), -math.log(n), log_q.dtype), log_q


def _weighted_mean(values: Array, log_w: Array) -> Array:
    return jnp.sum(jnp.exp(log_w) * values)


def _gradient_of(value: Array, surrogate: Array) -> Array:
    """Equals ``value``, differentiates like ``surrogate``."""
    return jax.lax.stop_gradient(value) + surrogate - jax.lax.stop_gradient(surrogate)


# ----------------------------------------------------------------------------------------
# Objectives: each maps (params, key) to (surrogate, estimate); the gradient of the
# surrogate is the estimator named, and the estimate is what the loss history records.
# ----------------------------------------------------------------------------------------


def _reverse_kl(log_p, family, n, *, stick_the_landing: bool) -> LossFn:
    def loss(params, key):
        q = family.distribution(params)
        if stick_the_landing:
            # STL (Roeder et al. 2017): the score term E_q[grad_theta log q] is zero in
            # expectation but not per sample; dropping it removes its variance.
            x, log_w = _reparameterised_draw(q, key, n)
            q_stopped = family.distribution(jax.lax.stop_gradient(params))
            log_q = at_least_float32(_log_prob(q_stopped, x))
        else:
            x, log_w, log_q = _reparameterised_draw_and_log_q(q, key, n)
        log_ratio = at_least_float32(log_p(x)) - log_q
        value = _weighted_mean(-log_ratio, log_w)
        return value, value

    return loss


def _reverse_kl_score(log_p, family, n, *, per_sample: Callable[[Array], Array]) -> LossFn:
    if n < 2:
        raise ValueError("Score-function objectives need `num_samples` >= 2 (their "
                         "leave-one-out baseline uses the other samples).")

    def loss(params, key):
        q = family.distribution(params)
        x = jax.lax.stop_gradient(_sample(q, key, n))
        log_q = at_least_float32(_log_prob(q, x))
        values = per_sample(at_least_float32(log_p(x)) - log_q)
        # d/dtheta E_q[k(l_theta)] = E_q[k * grad log q] + E_q[grad_theta k]: the first
        # term with a leave-one-out baseline (Kool et al. 2019), the second because k3
        # depends on theta through log q (for k1 it has mean zero).
        held = jax.lax.stop_gradient(values)
        baseline = (jnp.sum(held) - held) / (n - 1)
        surrogate = jnp.mean(jax.lax.stop_gradient(held - baseline) * log_q + values)
        value = jnp.mean(held)
        return _gradient_of(value, surrogate), value

    return loss


def _forward_kl_ml(p, family, n) -> LossFn:
    def loss(params, key):
        q = family.distribution(params)
        x = jax.lax.stop_gradient(_sample(p, key, n))
        # log p(x) has no gradient; it turns the cross-entropy into a KL estimate.
        value = jnp.mean(at_least_float32(_log_prob(p, x)) - at_least_float32(_log_prob(q, x)))
        return value, value

    return loss


def _forward_kl_snis(log_p, family, n) -> LossFn:
    if n < 2:
        raise ValueError("divergence='forward_kl_snis' needs `num_samples` >= 2 (one "
                         "self-normalised weight is always 1: the estimate would be 0).")

    def loss(params, key):
        q = family.distribution(params)
        x = jax.lax.stop_gradient(_sample(q, key, n))
        log_q = at_least_float32(_log_prob(q, x))
        log_ratio = jax.lax.stop_gradient(at_least_float32(log_p(x)) - log_q)
        weights = jax.nn.softmax(log_ratio)
        # KL(p||q) = E_p[log p~ - log q] - log Z with E_p by SNIS and log Z by the log
        # mean ratio: the unknown normaliser of p cancels.
        log_normaliser = jax.nn.logsumexp(log_ratio) - math.log(n)
        value = jnp.sum(weights * log_ratio) - log_normaliser
        surrogate = -jnp.sum(weights * log_q)
        return _gradient_of(value, surrogate), value

    return loss


# Below this largest centred exponent, log E[e^t] is computed as log1p(E[e^t - 1 - t]).
_RENYI_SERIES_BOUND = 50.0


def _renyi_value(log_ratio: Array, log_w: Array, alpha: Array) -> Array:
    """``log E_q[r^a] / (a (a - 1))``, with its limits at a = 0 and a = 1.

    At ``a = 0``: ``E_q[-l]`` (reverse KL). At ``a = 1`` the plain estimate would divide
    the noise of ``log mean r`` (whose expectation is ~0) by zero, so the self-normalised
    forward-KL estimate ``sum w l - log mean r`` (:func:`make_loss`'s ``forward_kl_snis``)
    is used there instead.

    In between, ``log E[r^a] = a m + log E[e^t]`` with ``m = E[l]`` and ``t = a (l - m)``.
    Since ``E[t] = 0``, ``log E[e^t] = log1p(E[e^t - 1 - t])``, a sum of non-negative terms
    of order ``t**2``: this keeps full relative accuracy as ``a -> 0``, where
    ``logsumexp(a l + log w)`` would cancel to ``O(eps log n)`` absolute and then be
    divided by ``a``. Where some ``t`` is large, ``logsumexp`` is accurate and is used.
    """
    mean_log_ratio = _weighted_mean(log_ratio, log_w)
    reverse_limit = -mean_log_ratio
    log_mean_ratio = jax.nn.logsumexp(log_ratio + log_w)
    forward_weights = jax.nn.softmax(log_ratio + log_w)
    forward_limit = jnp.sum(forward_weights * log_ratio) - log_mean_ratio
    at_limit = (alpha == 0) | (alpha == 1)
    safe_alpha = jnp.where(at_limit, 0.5, alpha)
    t = safe_alpha * (log_ratio - mean_log_ratio)
    use_series = jnp.max(t) < _RENYI_SERIES_BOUND
    t_series = jnp.where(use_series, t, jnp.zeros_like(t))  # no overflow in either branch
    log_mean_exp_t = jnp.where(
        use_series,
        jnp.log1p(_weighted_mean(numerics.expm1mx(t_series), log_w)),
        jax.nn.logsumexp(t + log_w),
    )
    general = mean_log_ratio / (safe_alpha - 1) + log_mean_exp_t / (safe_alpha * (safe_alpha - 1))
    return jnp.where(alpha == 0, reverse_limit, jnp.where(alpha == 1, forward_limit, general))


def _renyi(log_p, family, n, alpha) -> LossFn:
    def loss(params, key):
        q = family.distribution(params)
        x, log_w, log_q = _reparameterised_draw_and_log_q(q, key, n)
        log_ratio = at_least_float32(log_p(x)) - log_q
        value = _renyi_value(log_ratio, log_w, jnp.asarray(alpha, log_ratio.dtype))
        return value, value

    return loss


def _csiszar_objective(log_p, family, n, kernel) -> LossFn:

    def loss(params, key):
        q = family.distribution(params)
        x, log_w, log_q = _reparameterised_draw_and_log_q(q, key, n)
        log_ratio = at_least_float32(log_p(x)) - log_q
        value = _weighted_mean(kernel(log_ratio), log_w)
        return value, value

    return loss


def _check_alpha(divergence: str, alpha) -> Any:
    if divergence not in _NEEDS_ALPHA:
        if alpha is not None:
            raise ValueError(f"`alpha` is only used with divergence in {list(_NEEDS_ALPHA)}, "
                             f"not {divergence!r}.")
        return None
    if alpha is None:
        raise ValueError(f"divergence={divergence!r} needs `alpha` (0: KL(q||p), 1: KL(p||q)).")
    if isinstance(alpha, (str, bytes)):
        raise TypeError(f"`alpha` must be a real number, got {type(alpha).__name__}.")
    if jnp.ndim(alpha) != 0:
        raise ValueError(f"`alpha` must be a scalar, got shape {jnp.shape(alpha)}.")
    if divergence == "amari_alpha":
        try:
            return divergences.check_parameter(alpha, "alpha")
        except TypeError:  # traced or not a number
            raise TypeError("`alpha` must be a Python float for divergence='amari_alpha' "
                            "(use 'renyi' to vmap over alpha).") from None
    value = concrete_value(alpha)
    if value is not None and not np.isfinite(value):
        raise ValueError(f"`alpha` must be finite, got {value}.")
    return alpha


def _check_t(divergence: str, t) -> float | None:
    if divergence not in _NEEDS_T:
        if t is not None:
            raise ValueError(f"`t` is only used with divergence in {list(_NEEDS_T)}, "
                             f"not {divergence!r}.")
        return None
    if t is None:
        raise ValueError(f"divergence={divergence!r} needs `t` (a finite number).")
    return divergences.check_parameter(t, "t")


@functools.lru_cache(maxsize=256)
def _values_per_draw(family: Family) -> int:
    """Values one reparameterised draw of ``family`` holds (traced once per family: an
    ``eval_shape`` costs ~10 ms of Python, more than a whole 2000-step fit of a 1-D q)."""
    def draw(key):
        return _reparameterised_draw(family.distribution(family.init(key)), key, 1)[0]

    return math.prod(jax.eval_shape(draw, jax.random.key(0)).shape)


def _check_draw_size(n: int, family: Family) -> None:
    """Raises ``ValueError`` naming ``num_samples`` when a step's draw would not fit."""
    # before tracing anything with a shape of that size
    per_sample = 1 if n > MAX_DRAW_ELEMENTS else _values_per_draw(family)
    if n * per_sample > MAX_DRAW_ELEMENTS:
        raise ValueError(
            f"`num_samples` = {n} would draw {n * per_sample} values per step for "
            f"{family.name}; make_loss and fit hold a step's samples in memory at once, "
            f"at most {MAX_DRAW_ELEMENTS} values. For a precise evaluation, stream with "
            "jaxkl.estimate."
        )


def make_loss(
    p: Target,
    family: Family,
    *,
    divergence: str,
    num_samples: int,
    alpha: ArrayLike | None = None,
    t: float | None = None,
) -> LossFn:
    r"""The stochastic objective that :func:`fit` minimises, for custom training loops.

    Returns ``loss(params, key) -> (surrogate, estimate)``. ``estimate`` is an unbiased
    or consistent estimate of the divergence at ``params``; ``jax.grad`` of
    ``surrogate`` (which has the same value) is the gradient estimator named in the
    module table:

    - ``reverse_kl``: ``mean(log q(x) - log p(x))``, ``x = T_theta(eps)``
      (reparameterisation; Kingma & Welling 2014, Rezende et al. 2014);
    - ``reverse_kl_stl``: the same with ``theta`` stopped inside ``log q`` (Roeder, Wu &
      Duvenaud, "Sticking the Landing", NeurIPS 2017): zero variance when ``q = p``;
    - ``reverse_kl_score_k1`` / ``_k3``: ``x ~ q`` without gradient, per-sample
      ``k = k1(l)`` or ``k3(l)``, surrogate ``mean(sg(k - b) log q(x) + k)`` with a
      leave-one-out baseline ``b`` (Williams 1992; Kool et al. 2019);
    - ``forward_kl``: ``mean(log p(x) - log q(x))``, ``x ~ p`` (maximum likelihood);
    - ``forward_kl_snis``: ``x ~ q``, ``w = softmax(l)``: estimate ``sum w l - log mean
      e^l``, gradient ``-sum w grad log q(x)`` (reweighted wake-sleep's q-update;
      Bornschein & Bengio, ICLR 2015);
    - ``renyi``: ``log mean(r^a) / (a (a - 1))`` with ``r = p/q``, an estimate of the
      Renyi divergence ``D_a(p||q) / a`` (Renyi 1961); minimising it is Li & Turner's VR
      bound (NeurIPS 2016) with their ``alpha = 1 - a``, rescaled by ``1/(1 - a)`` so
      that ``a -> 1`` tends to KL(p||q). For an unnormalised p the value is offset by
      ``log Z / (a - 1)``, a constant in q, so the minimiser is unchanged. At ``a = 0``
      the estimate is ``mean(-l)`` (KL(q||p)); at ``a = 1``, the ``forward_kl_snis``
      estimate (the plain one would divide noise by zero). ``alpha`` may be traced; near
      1 the gradient noise grows like ``1/(1 - a)``. Like every objective sampled from q,
      it only sees the modes that q's samples reach. For ``a > 1`` this is a trap:
      ``mean(r^a)`` is large where q is small and p is not, which q's own samples rarely
      visit, so the estimate is biased low and a fit with few samples can collapse q to
      a point with a negative "divergence" (with 8 samples and ``a = 2``, N(0, 2) as
      the target: q's scale falls below 1e-3 and the final losses are negative;
      ``tests/test_fitting.py``). ``finite`` cannot flag it: check that the losses stay
      non-negative, use ``a <= 1``, or many samples.
    - ``amari_alpha``: ``mean f_a(r)`` with Amari's ``f_a(u) = (u^a - 1 - a(u-1)) /
      (a(a-1))`` (:func:`jaxkl.csiszar`); ``alpha`` a Python float.
    - every other divergence name of :func:`jaxkl.csiszar` (``jensen_shannon``,
      ``squared_hellinger``, ``total_variation``, ``pearson_chi2``, ``chi_square``,
      ``triangular``, ``log1p_abs``, ``jeffreys``, ``arithmetic_geometric``,
      ``modified_gan``, ``t_power`` with ``t``): ``mean(f(r) - f(1) - f'(1)(r - 1))``
      over reparameterised samples of q, an unbiased estimate of ``D_f(p||q)``.

    For mixture families, reparameterised objectives draw ``num_samples`` per component
    (stratified; see :func:`jaxkl.families.gaussian_mixture`).

    Args:
      p: the target: a distrax distribution with batch shape ``()``, or a callable log
        density ``x -> log p(x)`` (for the objectives that allow unnormalised p).
      family: the :class:`~jaxkl.families.Family` of q.
      divergence: one of :data:`DIVERGENCES`.
      num_samples: Monte Carlo samples per evaluation.
      alpha: for ``"renyi"`` and ``"amari_alpha"`` only.
      t: for ``"t_power"`` only (a finite Python number).

    Returns:
      ``loss(params, key) -> (surrogate, estimate)``, both float32 at least.

    Raises:
      ValueError: unknown divergence, event-shape mismatch, missing/extra ``alpha``, a
        target that the divergence cannot use, or ``num_samples`` whose draw per step
        exceeds :data:`MAX_DRAW_ELEMENTS` values.

    Example:
      >>> import jax, distrax, jaxkl.families as F
      >>> from jaxkl.fitting import make_loss
      >>> family = F.gaussian()
      >>> loss = make_loss(distrax.Normal(1.0, 1.0), family, divergence="reverse_kl",
      ...                  num_samples=10_000)
      >>> _, estimate = loss(family.encode(loc=0.0, scale=1.0), jax.random.key(0))
      >>> round(float(estimate), 1)  # KL(N(0,1) || N(1,1)) = 0.5
      0.5
    """
    n, alpha, t = check_objective(p, family, divergence=divergence, num_samples=num_samples,
                                  alpha=alpha, t=t)
    return objective(divergence, p, family, n, alpha=alpha, t=t)


def check_objective(p: Target, family: Family, *, divergence: str, num_samples: int,
                    alpha: ArrayLike | None, t: float | None) -> tuple[int, object, object]:
    """:func:`make_loss`'s argument checks; returns the checked ``(num_samples, alpha, t)``."""
    check_choice(divergence, "divergence", DIVERGENCES)
    if not isinstance(family, Family):
        raise TypeError(f"`family` must be a jaxkl.families.Family, got {type(family).__name__}.")
    n = check_positive_int(num_samples, "num_samples")
    _check_draw_size(n, family)
    alpha = _check_alpha(divergence, alpha)
    t = _check_t(divergence, t)
    _check_target(p, family, divergence)
    return n, alpha, t


def objective(divergence: str, p: Target, family: Family, n: int, *, alpha, t) -> LossFn:
    """The loss of ``divergence``, its arguments already checked (:func:`check_objective`)."""
    log_p = _log_density(p)
    if divergence in ("reverse_kl", "reverse_kl_stl"):
        return _reverse_kl(log_p, family, n, stick_the_landing=divergence == "reverse_kl_stl")
    if divergence in ("reverse_kl_score_k1", "reverse_kl_score_k3"):
        per_sample = KL_KERNELS["k1"] if divergence.endswith("k1") else KL_KERNELS["k3"]
        return _reverse_kl_score(log_p, family, n, per_sample=per_sample)
    if divergence == "forward_kl":
        return _forward_kl_ml(p, family, n)
    if divergence == "forward_kl_snis":
        return _forward_kl_snis(log_p, family, n)
    if divergence == "renyi":
        return _renyi(log_p, family, n, alpha)
    kernel = divergences.f_divergence_fn(divergence, alpha=alpha, t=t)
    return _csiszar_objective(log_p, family, n, kernel)


@functools.lru_cache(maxsize=256)
def _param_leaves(family: Family, key_shape: tuple[int, ...], key_dtype):
    """``family.init``'s output structure and leaf shapes, traced once per family and key
    type (an ``eval_shape`` per call cost fit ~3 ms of Python, as much as a 2000-step 1-D
    fit)."""
    expected = jax.eval_shape(family.init, jax.ShapeDtypeStruct(key_shape, key_dtype))
    leaves, treedef = jax.tree.flatten(expected)
    return treedef, tuple(leaf.shape for leaf in leaves)


def check_params(params, family: Family, key: jax.Array, name: str) -> Params:
    """``params`` (the argument ``name``) checked against ``family`` (structure, shapes,
    finite floats), in float32 at least; ``key`` is a checked key (:func:`check_key`).

    Runs on every plain ``fit``/``evaluate`` call, so it reads dtypes from the arrays and
    builds the leaves' paths only for an error message (~15 us of Python, was ~75 us).
    """
    treedef, shapes = _param_leaves(family, key.shape, key.dtype)
    leaves, given = jax.tree.flatten(params)
    if given != treedef:
        raise ValueError(
            f"`{name}` must have the structure of {family.name}'s parameters "
            f"{treedef}, got {given}."
        )

    def leaf_name(i):
        path, _ = jax.tree_util.tree_flatten_with_path(params)[0][i]
        return f"{name}{jax.tree_util.keystr(path)}"

    for i, (x, want) in enumerate(zip(leaves, shapes, strict=True)):
        if jnp.shape(x) != want:
            raise ValueError(f"`{leaf_name(i)}` has shape {jnp.shape(x)}; {family.name} "
                             f"expects {want}.")
        dtype = x.dtype if isinstance(x, jax.Array) else jnp.result_type(x)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"`{leaf_name(i)}` must be floating.")
        # A non-finite start would make every step non-finite, so every step would be
        # skipped and the "fitted" parameters would be the non-finite start (and evaluate
        # would return NaN). Traced values (under vmap/jit) cannot be inspected.
        value = concrete_value(x)
        if value is not None and not np.isfinite(value).all():
            raise ValueError(f"`{leaf_name(i)}` must be finite, got {value}.")
    return jax.tree.unflatten(treedef, [_as_compute_array(x) for x in leaves])


def _as_compute_array(x) -> Array:
    """``at_least_float32(jnp.asarray(x))``; an array that already is one is returned as is
    (the two tree maps cost ~0.2 ms of Python per fit call)."""
    if isinstance(x, jax.Array) and not x.weak_type and x.dtype in (jnp.float32, jnp.float64):
        return x
    return at_least_float32(jnp.asarray(x))


def evaluate(
    p: Target,
    family: Family,
    params: Params,
    *,
    divergence: str,
    key: jax.Array,
    num_samples: int,
    alpha: ArrayLike | None = None,
    t: float | None = None,
) -> jax.Array:
    """A many-sample estimate of the objective at ``params`` (no gradient needed).

    With a fixed ``key``, different ``params`` are compared with common random numbers
    (the same base noise), which cancels much of the Monte Carlo error in the
    comparison. For the reverse-KL objectives the estimate is the mean of k1 (or k3 for
    ``"reverse_kl_score_k3"``).

    Args:
      p, family, divergence, alpha, t: as in :func:`make_loss`.
      params: parameters of ``family``.
      key: a JAX PRNG key.
      num_samples: samples for the estimate (its standard error falls as
        ``1/sqrt(num_samples)``).

    Returns:
      A scalar, float32 at least.

    Example:
      >>> import jax, distrax, jaxkl.families as F
      >>> from jaxkl.fitting import evaluate
      >>> family = F.gaussian()
      >>> kl = evaluate(distrax.Normal(1.0, 1.0), family, family.encode(loc=0.0, scale=1.0),
      ...               divergence="forward_kl", key=jax.random.key(0), num_samples=100_000)
      >>> round(float(kl), 1)
      0.5
    """
    loss = make_loss(p, family, divergence=divergence, num_samples=num_samples, alpha=alpha,
                     t=t)
    key = check_key(key)
    params = check_params(params, family, key, "params")
    return loss(jax.lax.stop_gradient(params), key)[1]
