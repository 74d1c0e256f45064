"""The optimisation loop of :mod:`jaxkl.fitting`: :func:`fit` (one ``lax.scan`` of optax
updates that skips non-finite steps), its result and its options."""

from __future__ import annotations

import functools
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxkl._src.distributions.families import Family, Params
from jaxkl._src.fitting.objectives import (
    Target,
    at_least_float32,
    check_objective,
    check_params,
    objective,
)
from jaxkl._src.montecarlo.engine import is_pytree
from jaxkl._src.validation import (
    check_key,
    check_positive_int,
    concrete_value,
    third_party_promotion,
)

Array = jax.Array

# lax.scan over steps and the loss history index steps with 32-bit integers.
MAX_STEPS = 2**31 - 1


class FitResult(NamedTuple):
    """The outcome of :func:`fit` (a pytree: batched by ``vmap`` like any other).

    Attributes:
      params: the fitted unconstrained parameters (those of the last finite step).
      losses: ``(num_steps,)`` history of the objective's estimate at each step's
        parameters (before the update); NaN/inf where that estimate was not finite (a
        step can also be skipped with a finite loss, when its gradient or update was not).
      num_nonfinite_steps: how many steps had a non-finite loss, gradient or update; those
        steps were skipped (parameters and optimiser state kept), so ``params`` stay
        finite (``fit`` rejects non-finite concrete ``init_params``), but a non-zero count
        means the fit needs attention.
      family: the :class:`~jaxkl.families.Family` (static; no array leaves).
    """

    params: Params
    losses: Array
    num_nonfinite_steps: Array
    family: Family

    @property
    def q(self) -> distrax.Distribution:
        """The fitted distribution ``family.distribution(params)``."""
        return self.family.distribution(self.params)

    @property
    def finite(self) -> Array:
        """True when every step was finite (a boolean array, batched under ``vmap``)."""
        return self.num_nonfinite_steps == 0


class FitOptions(NamedTuple):
    """What to minimise and how: the options of :func:`fit` other than the target, the
    family, the key and the starting parameters, under the same names as :func:`fit`'s
    keyword arguments (``fit(p, family, key=key, **options._asdict())`` is a fit with
    them). :func:`jaxkl.fitting.fit_multistart` takes one for all of its starts.

    Attributes:
      divergence: one of :data:`DIVERGENCES`.
      num_steps: optimiser steps.
      num_samples: Monte Carlo samples per step.
      optimizer: an ``optax.GradientTransformation``; default :func:`default_optimizer`.
      alpha: for ``"renyi"`` and ``"amari_alpha"`` only.
      t: for ``"t_power"`` only.

    Example:
      >>> from jaxkl.fitting import FitOptions
      >>> options = FitOptions(divergence="reverse_kl", num_steps=300, num_samples=16)
      >>> options.optimizer is None
      True
    """

    divergence: str
    num_steps: int
    num_samples: int
    optimizer: optax.GradientTransformation | None = None
    alpha: ArrayLike | None = None
    t: float | None = None


def default_optimizer(num_steps: int, learning_rate: float = 0.05) -> optax.GradientTransformation:
    """Adam with a cosine decay to 1% of ``learning_rate`` over ``num_steps``.

    The decay averages out the gradient noise at the end of a stochastic fit, where a
    constant step size would leave the parameters fluctuating around the optimum.

    Example:
      >>> from jaxkl.fitting import default_optimizer
      >>> optimizer = default_optimizer(100)
    """
    num_steps = _check_num_steps(num_steps)
    if isinstance(learning_rate, (str, bytes, bool)) or jnp.ndim(learning_rate) != 0:
        raise TypeError(f"`learning_rate` must be a scalar, got {learning_rate!r}.")
    value = concrete_value(learning_rate)  # None when traced (e.g. vmapped over learning rates)
    if value is not None and not (value > 0 and np.isfinite(value)):
        raise ValueError(f"`learning_rate` must be positive and finite, got {value}.")
    schedule = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01)
    return optax.adam(schedule)


def check_init_params(init_params, family: Family, key: jax.Array) -> Params:
    """``init_params`` checked against ``family`` (:func:`check_params`)."""
    return check_params(init_params, family, key, "init_params")


def _check_num_steps(num_steps) -> int:
    num_steps = check_positive_int(num_steps, "num_steps")
    if num_steps > MAX_STEPS:
        raise ValueError(
            f"`num_steps` = {num_steps} exceeds {MAX_STEPS}: the compiled loop and its "
            "loss history index steps with 32-bit integers."
        )
    return num_steps


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


@functools.lru_cache(maxsize=64)
def _cached_default_optimizer(num_steps: int) -> optax.GradientTransformation:
    # One object per step count, so that fit's compiled loop (keyed on the optimiser, a
    # static argument) is reused by every call that leaves `optimizer` at its default.
    return default_optimizer(num_steps)


def _check_optimizer(optimizer, num_steps: int) -> optax.GradientTransformation:
    if optimizer is None:
        return _cached_default_optimizer(num_steps)
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError("`optimizer` must be an optax.GradientTransformation, got "
                        f"{type(optimizer).__name__}.")
    return optimizer


def _finite_step(loss, optimizer: optax.GradientTransformation):
    """One optimiser step for ``lax.scan``: ``(params, opt_state, num_bad), key ->
    (carry, loss estimate)``, keeping the old parameters and state (and counting the step
    in ``num_bad``) when the loss, gradient or update is not finite."""
    value_and_grad = jax.value_and_grad(loss, has_aux=True)

    def step(carry, step_key):
        params, opt_state, num_bad = carry
        (surrogate, value), grads = value_and_grad(params, step_key)
        # optax's transformations mix int32 step counts and float32 state (implicit
        # promotion, which jaxkl's strict settings would reject inside them).
        with third_party_promotion():
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(value) & jnp.isfinite(surrogate) & _all_finite(grads)
        ok = ok & _all_finite(new_params)
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(ok, new, old), (new_params, new_opt_state),
            (params, opt_state),
        )
        return (params, opt_state, num_bad + jnp.where(ok, 0, 1)), value

    return step


def fit(
    p: Target,
    family: Family,
    *,
    divergence: str,
    key: jax.Array,
    num_steps: int,
    num_samples: int,
    optimizer: optax.GradientTransformation | None = None,
    init_params: Params | None = None,
    alpha: ArrayLike | None = None,
    t: float | None = None,
) -> FitResult:
    r"""Fits ``q = family.distribution(params)`` to ``p`` by stochastic optimisation.

    .. math:: \theta^* = \arg\min_\theta D(q_\theta, p),

    with ``D`` and its gradient estimator chosen by ``divergence`` (see
    :func:`make_loss`), fresh samples at every step, and the whole loop of ``num_steps``
    optimiser updates compiled as one ``lax.scan``. A step whose loss, gradient or
    update is not finite is skipped and counted in ``num_nonfinite_steps`` (never a
    silent NaN fit). ``fit`` is pure: ``jax.vmap`` it over ``key``, ``init_params``, or
    the target ``p`` (a distrax distribution is a pytree), and ``jax.jit`` it with the
    non-array arguments closed over.

    Forward KL to a Gaussian family is moment matching (the fit converges to p's mean and
    covariance); reverse KL is mode-seeking and has one local optimum per well separated
    mode (Bishop, *Pattern Recognition and Machine Learning*, 2006, Sec. 10.1.2).

    Args:
      p: the target; a distrax distribution with batch shape ``()``, or a callable log
        density for the objectives that allow it (see :func:`make_loss`).
      family: the :class:`~jaxkl.families.Family` of q; its event shape must equal p's.
      divergence: one of :data:`DIVERGENCES`.
      key: a JAX PRNG key; split for the initialisation and for every step.
      num_steps: optimiser steps.
      num_samples: Monte Carlo samples per step (per component for mixture q with
        reparameterised objectives).
      optimizer: any ``optax.GradientTransformation`` (schedules included); default
        :func:`default_optimizer` (Adam, learning rate 0.05 with cosine decay).
      init_params: starting parameters (the structure of ``family.init``'s output);
        default ``family.init`` with a key split from ``key``. Cast to float32 at least.
      alpha: for ``"renyi"`` (may be traced, so ``vmap`` over it) and ``"amari_alpha"``.
      t: for ``"t_power"`` (a finite Python number).

    Returns:
      A :class:`FitResult`: the fields ``params`` (the fitted unconstrained
      parameters), ``losses`` (the ``(num_steps,)`` objective estimates),
      ``num_nonfinite_steps`` (the steps skipped for a non-finite loss, gradient or
      update) and ``family``, and the properties ``.q`` (the fitted distribution
      ``family.distribution(params)``) and ``.finite`` (True when no step was skipped:
      ``num_nonfinite_steps == 0``).

    Raises:
      ValueError, TypeError: bad divergence name, shapes, key, optimizer or parameters;
        ``num_steps`` above :data:`MAX_STEPS` or ``num_samples`` whose draw per step
        exceeds :data:`MAX_DRAW_ELEMENTS` values.

    Example:
      >>> import jax, distrax
      >>> from jaxkl import families
      >>> from jaxkl.fitting import fit
      >>> p = distrax.Normal(2.0, 0.5)
      >>> result = fit(p, families.gaussian(), divergence="reverse_kl",
      ...              key=jax.random.key(0), num_steps=500, num_samples=32)
      >>> round(float(result.q.mean()), 1), round(float(result.q.stddev()), 1)
      (2.0, 0.5)
    """
    static, traced_alpha = check_fit_arguments(
        p, family, divergence=divergence, num_steps=num_steps, num_samples=num_samples,
        optimizer=optimizer, alpha=alpha, t=t)
    key = check_key(key)
    if init_params is not None:
        init_params = check_init_params(init_params, family, key)
    return run_compiled(fit_loop, p, key, init_params, traced_alpha, **static)


def check_fit_arguments(p: Target, family: Family, *, divergence: str, num_steps: int,
                        num_samples: int, optimizer: optax.GradientTransformation | None,
                        alpha: ArrayLike | None, t: float | None) -> tuple[dict, object]:
    """fit's checks of everything but the key and the start: returns the static keyword
    arguments of :func:`fit_loop` and the traced ``alpha`` (Renyi's may be traced, so
    that fits vmap over it; the other divergences' parameters shape the compiled kernel
    and are static)."""
    num_steps = _check_num_steps(num_steps)
    num_samples, alpha, t = check_objective(p, family, divergence=divergence,
                                            num_samples=num_samples, alpha=alpha, t=t)
    optimizer = _check_optimizer(optimizer, num_steps)
    traced_alpha, static_alpha = (alpha, None) if divergence == "renyi" else (None, alpha)
    static = dict(family=family, divergence=divergence, num_steps=num_steps,
                  num_samples=num_samples, optimizer=optimizer, alpha=static_alpha, t=t)
    return static, traced_alpha


def fit_loop(p, key, init_params, traced_alpha, *, family, divergence, num_steps,
              num_samples, optimizer, alpha, t) -> FitResult:
    """fit's loop, its arguments checked: one ``lax.scan`` of optimiser steps."""
    loss = objective(divergence, p, family, num_samples,
                     alpha=traced_alpha if divergence == "renyi" else alpha, t=t)
    init_key, loop_key = jax.random.split(key)
    if init_params is None:
        params = jax.tree.map(at_least_float32, family.init(init_key))
    else:
        params = init_params
    with third_party_promotion():
        opt_state = optimizer.init(params)
    carry = (params, opt_state, jnp.zeros((), jnp.int32))
    (params, _, num_bad), losses = jax.lax.scan(
        _finite_step(loss, optimizer), carry, jax.random.split(loop_key, num_steps)
    )
    return FitResult(params, losses, num_bad, family)


@functools.cache
def _jitted(fn, static_names: tuple[str, ...]):
    return jax.jit(fn, static_argnames=static_names)


@functools.cache
def _target_as_keyword(fn):
    def call(*args, target, **static):
        return fn(target, *args, **static)

    return call


def run_compiled(fn, p, *args, **static):
    """``fn(p, *args, **static)`` compiled once per static configuration and shapes.

    A repeated plain call then reuses the compiled program (``jax.jit``'s cache), as
    :func:`jaxkl.estimate` does. The target ``p`` is a traced argument when it is a pytree
    (distrax distributions are, so new parameters of the same shapes reuse the program),
    else a static argument hashed by identity (a log-density function); an object that is
    neither is closed over and compiled for this call only.
    """
    names = tuple(static)
    if is_pytree(p):
        return _jitted(fn, names)(p, *args, **static)
    try:
        hash(p)
    except TypeError:
        return jax.jit(functools.partial(fn, p, **static))(*args)
    return _jitted(_target_as_keyword(fn), ("target", *names))(*args, target=p, **static)
