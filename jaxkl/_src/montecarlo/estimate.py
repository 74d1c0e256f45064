"""The single-device front-end of the Monte Carlo engine: :func:`jaxkl.estimate`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import distrax
import jax
from jax.sharding import Mesh

from jaxkl._src import stats
from jaxkl._src.montecarlo import engine, sharded
from jaxkl._src.validation import check_key


def estimate(
    q: distrax.DistributionLike,
    p: distrax.DistributionLike,
    *,
    key: jax.Array,
    num_samples: int,
    estimators: Sequence[str | Callable] | Mapping[str, Callable] = ("k1", "k2", "k3"),
    chunk_size: int = engine.DEFAULT_CHUNK_SIZE,
    mesh: Mesh | None = None,
    alpha: float | None = None,
    t: float | None = None,
) -> dict[str, stats.Stats]:
    r"""Monte Carlo estimates of KL(q||p) (and friends) from ``num_samples`` samples of q.

    For ``x_i ~ q`` and ``l_i = log p(x_i) - log q(x_i)``, each estimator ``k`` returns
    the sample mean of ``k(l_i)`` with its std and standard error:

    .. math:: \widehat{KL} = \frac1n \sum_i k(l_i), \quad
              \mathrm{stderr} = \frac{\mathrm{std}}{\sqrt n}.

    Names: ``k1``, ``k2``, ``k3`` (KL(q||p), see :mod:`jaxkl.estimators`), ``cv*`` (the
    control variate ``-l + lam*(r - 1)`` with ``lam*`` estimated from the same samples;
    its O(1/n) bias is discussed at :func:`jaxkl.optimal_cv_lambda`), and every
    divergence name of :func:`jaxkl.csiszar` (:data:`jaxkl.DIVERGENCE_NAMES`, the names
    :func:`jaxkl.fit` uses too): ``reverse_kl`` (the same per-sample values as ``k3``),
    ``forward_kl`` (KL(p||q)), ``jensen_shannon``, ``squared_hellinger``,
    ``total_variation``, ``pearson_chi2``, ``chi_square``, ``triangular``,
    ``log1p_abs``, ``jeffreys``, ``arithmetic_geometric``, ``modified_gan``, and
    ``amari_alpha`` / ``t_power`` with ``alpha`` / ``t``. ``"forward"`` is accepted as an
    alias of ``"forward_kl"`` (its name before the common vocabulary; the result keeps
    the name passed). Callables of the log-ratio are accepted too (named by
    ``__name__``, or pass a mapping name -> callable).

    Reference: J. Schulman, "Approximating KL Divergence", 2020.

    Args:
      q: the sampling distribution (distrax, or with distrax's ``sample(seed=,
        sample_shape=)`` and ``log_prob``); scalar batch shape.
      p: the other distribution (needs ``log_prob``).
      key: a PRNG key. Its implementation is the caller's choice and sets the samples:
        the default ``threefry2x32`` gives the values documented here; a key of
        ``jax.random.key(seed, impl="rbg")`` or ``"unsafe_rbg"`` works too and is
        reproducible for the same key, with other sample values (and, for
        ``unsafe_rbg``, weaker guarantees for split keys). Whether it is faster depends
        on the backend: on CPU it was not consistently (BENCHMARKS.md).
      num_samples: total number of samples: a positive Python int (an integral float
        such as ``1e6`` is accepted), not a traced value; ``1e9`` is fine, and without
        ``jax_enable_x64`` at most ``2**31 - 1 - chunk_size`` (the sample index is
        int32; more raises ``ValueError`` saying to enable x64).
      estimators: which estimators to compute, all from the same samples.
      chunk_size: samples per chunk (memory is proportional to it).
      mesh: opt-in sharding: a ``jax.sharding.Mesh`` (see :mod:`jaxkl.sharding`) whose
        devices share the chunks; the result equals the single-device one for the same
        key up to floating-point reduction order.
      alpha: the Amari alpha of ``"amari_alpha"`` (a finite Python number).
      t: the exponent of ``"t_power"`` (a finite Python number).

    Returns:
      Mapping from estimator name to :class:`jaxkl.Stats` (mean, std, stderr, count), in
      the order of ``estimators``; ``std`` and ``stderr`` are NaN with one sample (two
      for ``cv*``).

    Raises:
      TypeError: ``q``/``p`` lack the distrax methods, ``key`` is not a PRNG key, or
        ``num_samples`` is not an integer (or is traced).
      ValueError: unknown or duplicate estimator names, a missing or stray
        ``alpha``/``t``, a non-positive count, batched distributions, event shapes that
        differ, or invalid concrete parameters (a non-positive scale, a non-finite
        location, as :func:`jaxkl.reference_kl` checks them).

    ``estimate`` is not differentiable (``jax.grad`` raises a ``TypeError`` that says so);
    for gradients use :func:`jaxkl.fitting.make_loss`.

    Example:
      >>> import distrax, jax, jaxkl
      >>> q, p = distrax.Normal(0.0, 1.0), distrax.Normal(0.1, 1.0)
      >>> res = jaxkl.estimate(q, p, key=jax.random.key(0), num_samples=1_000_000)
      >>> round(float(res["k3"].mean), 4), float(q.kl_divergence(p))
      (0.005, 0.005)
    """
    if mesh is not None:
        return sharded.estimate_sharded(q, p, key=key, num_samples=num_samples,
                                        estimators=estimators, chunk_size=chunk_size,
                                        mesh=mesh, alpha=alpha, t=t)
    key = check_key(key)
    plan = engine.make_plan(q, p, num_samples=num_samples, estimators=estimators,
                            chunk_size=chunk_size, alpha=alpha, t=t)
    return engine.summarize(engine.stream(q, p, key, plan), plan)


def sample_log_ratios(q: distrax.DistributionLike, p: distrax.DistributionLike, *,
                      key: jax.Array, num_samples: int) -> jax.Array:
    r"""The log-ratios ``l_i = log p(x_i) - log q(x_i)`` at ``num_samples`` samples ``x_i ~ q``.

    The per-sample input of every estimator (:func:`jaxkl.k1`, :func:`jaxkl.k3`,
    :func:`jaxkl.csiszar`, ...), for analyses that need the samples themselves (tail
    indices, histograms, custom statistics). Unlike :func:`jaxkl.estimate`, which
    streams, this holds all ``num_samples`` values in memory.

    Args:
      q: the sampling distribution (distrax, or with distrax's ``sample(seed=,
        sample_shape=)`` and ``log_prob``); scalar batch shape.
      p: the other distribution (needs ``log_prob``).
      key: a PRNG key.
      num_samples: how many samples (a positive int).

    Returns:
      ``[num_samples]`` in float32 at least (the promoted dtype of the two log-densities).

    Raises:
      TypeError: ``q``/``p`` lack the distrax methods, ``key`` is not a key.
      ValueError: ``num_samples`` is not positive, or the distributions are batched.

    Example:
      >>> import distrax, jax, jaxkl
      >>> from jaxkl.montecarlo import sample_log_ratios
      >>> l = sample_log_ratios(distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 1.0),
      ...                       key=jax.random.key(0), num_samples=100_000)
      >>> l.shape, round(float(jaxkl.k1(l).mean()), 2)  # KL = 0.5
      ((100000,), 0.5)
    """
    key = check_key(key)
    plan = engine.make_plan(q, p, num_samples=num_samples, estimators=("k1",),
                            chunk_size=engine.DEFAULT_CHUNK_SIZE)
    return engine.sample_log_ratio(q, p, key, plan.num_samples)
