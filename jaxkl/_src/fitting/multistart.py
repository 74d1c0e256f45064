""":func:`fit_multistart`: :func:`fit` from several starts (vmapped), keeping the one
that scores best on a common many-sample evaluation."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxkl._src.distributions.families import Family, Params
from jaxkl._src.fitting.loop import (
    FitOptions,
    FitResult,
    check_fit_arguments,
    check_init_params,
    fit_loop,
    run_compiled,
)
from jaxkl._src.fitting.objectives import Target, objective
from jaxkl._src.validation import check_key, check_positive_int

Array = jax.Array


class MultiStartResult(NamedTuple):
    """The outcome of :func:`fit_multistart`.

    Attributes:
      best: the :class:`FitResult` of the start with the lowest score.
      starts: every start's :class:`FitResult`, stacked along a leading axis.
      scores: ``(num_starts,)`` many-sample estimates of the objective at each start's
        fitted parameters (``inf`` for starts that were not finite).
      best_index: the index of ``best`` in ``starts``.
    """

    best: FitResult
    starts: FitResult
    scores: Array
    best_index: Array


def fit_multistart(
    p: Target,
    family: Family,
    *,
    key: jax.Array,
    num_starts: int,
    options: FitOptions,
    init_params: Params | None = None,
    eval_num_samples: int = 4096,
    eval_key: jax.Array | None = None,
) -> MultiStartResult:
    """Runs :func:`fit` from ``num_starts`` starts (vmapped) and keeps the best.

    Non-convex objectives (reverse KL to a multimodal p) have several local optima; the
    starts are judged by :func:`evaluate` with ``eval_num_samples`` samples and one
    ``eval_key`` shared by all starts (common random numbers), so two starts that found
    the same optimum score almost the same and a better optimum wins reliably. Starts
    that were not finite score ``inf``.

    Args:
      p, family: as in :func:`fit`.
      key: a PRNG key, split into one key per start.
      num_starts: how many starts.
      options: a :class:`FitOptions` (divergence, steps, samples, optimizer, alpha, t),
        the same for every start.
      init_params: optional starting parameters stacked along a leading axis of size
        ``num_starts``; default ``family.init`` with each start's key.
      eval_num_samples: samples for each start's score.
      eval_key: the key for the scores; default derived from ``key``.

    Returns:
      A :class:`MultiStartResult` (``best``, ``starts``, ``scores``, ``best_index``).

    Raises:
      TypeError: ``options`` is not a :class:`FitOptions`; and whatever :func:`fit` raises.

    Example:
      >>> import jax, distrax
      >>> from jaxkl import families
      >>> from jaxkl.fitting import FitOptions, fit_multistart
      >>> p = distrax.Normal(1.0, 2.0)
      >>> options = FitOptions(divergence="reverse_kl", num_steps=300, num_samples=16)
      >>> out = fit_multistart(p, families.gaussian(), key=jax.random.key(0), num_starts=4,
      ...                      options=options)
      >>> out.scores.shape, round(float(out.best.q.mean()), 1)
      ((4,), 1.0)
    """
    if not isinstance(options, FitOptions):
        raise TypeError(f"`options` must be a jaxkl.fitting.FitOptions, got "
                        f"{type(options).__name__}.")
    num_starts = check_positive_int(num_starts, "num_starts")
    eval_num_samples = check_positive_int(eval_num_samples, "eval_num_samples")
    static, traced_alpha = check_fit_arguments(p, family, **options._asdict())
    key = check_key(key)
    if eval_key is None:
        key, eval_key = jax.random.split(key)
    eval_key = check_key(eval_key)
    start_keys = jax.random.split(key, num_starts)
    _check_stacked(init_params, num_starts)
    if init_params is not None:
        init_params = jax.vmap(lambda x: check_init_params(x, family, start_keys[0]))(
            init_params)
    starts, scores = run_compiled(_fit_starts, p, start_keys, init_params, eval_key,
                                  traced_alpha, eval_num_samples=eval_num_samples, **static)
    scores = jnp.where(starts.finite & jnp.isfinite(scores), scores, jnp.inf)
    best_index = jnp.argmin(scores)
    best = jax.tree.map(lambda x: x[best_index], starts)
    return MultiStartResult(best, starts, scores, best_index)


def _fit_starts(p, start_keys, init_params, eval_key, traced_alpha, *, eval_num_samples,
                **static) -> tuple[FitResult, Array]:
    """Every start's fit (vmapped) and its score on ``eval_key``'s common samples."""
    starts = jax.vmap(lambda k, params: fit_loop(p, k, params, traced_alpha, **static))(
        start_keys, init_params)
    alpha = traced_alpha if static["divergence"] == "renyi" else static["alpha"]
    loss = objective(static["divergence"], p, static["family"], eval_num_samples,
                     alpha=alpha, t=static["t"])
    scores = jax.vmap(lambda params: loss(jax.lax.stop_gradient(params), eval_key)[1])(
        starts.params)
    return starts, scores


def _check_stacked(init_params: Params | None, num_starts: int) -> None:
    """Raises unless every leaf of ``init_params`` has a leading axis of ``num_starts``."""
    if init_params is None:
        return
    for x in jax.tree.leaves(init_params):
        if jnp.ndim(x) == 0 or jnp.shape(x)[0] != num_starts:
            raise ValueError(f"`init_params` leaves need a leading axis of size num_starts="
                             f"{num_starts}, got shape {jnp.shape(x)}.")
