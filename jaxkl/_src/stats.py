"""Implementation of :mod:`jaxkl.stats` (its module docstring has the overview)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.typing import ArrayLike

from jaxkl._src.validation import check_float_array

Array = jax.Array


def _count_dtype():
    return jnp.int64 if jax.config.jax_enable_x64 else jnp.int32


class Moments(NamedTuple):
    """Count, mean and co-moment matrix of ``k`` features (a pytree; merge with :func:`merge`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import stats
      >>> int(stats.from_samples(jnp.ones((5, 2))).count)
      5

    Attributes:
      count: scalar integer, the number of samples.
      mean: ``[k]`` sample mean.
      comoment: ``[k, k]`` sum of outer products of centred samples.
    """

    count: Array
    mean: Array
    comoment: Array


class Stats(NamedTuple):
    """Summary of one estimator's samples: mean, std (ddof=1), standard error, count.

    With too few samples the spread is undefined, and ``std``, ``stderr`` and the
    :meth:`interval` are NaN, never 0: one sample (two for the control variate ``cv*`` of
    :func:`jaxkl.estimate`, whose coefficient is fitted to the same samples) says nothing
    about the variance. With no sample, ``mean`` is NaN too.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> s = jaxkl.describe(jnp.array([1.0, 2.0, 3.0, 4.0]))
      >>> float(s.mean), round(float(s.std), 4), round(float(s.stderr), 4), int(s.count)
      (2.5, 1.291, 0.6455, 4)
    """

    mean: Array
    std: Array
    stderr: Array
    count: Array

    def interval(self, level: float = 0.95) -> tuple[Array, Array]:
        """Normal-approximation confidence interval ``mean -+ z * stderr`` at ``level``
        (NaN where ``stderr`` is: too few samples)."""
        z = _z(level)
        return self.mean - z * self.stderr, self.mean + z * self.stderr


class Interval(NamedTuple):
    """A point value with a confidence interval ``[low, high]`` at a stated level."""

    value: Array
    low: Array
    high: Array


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1), got {level}.")
    return float(scipy.special.ndtri(0.5 + level / 2))


def empty(num_features: int, dtype: jnp.dtype = jnp.float32) -> Moments:
    """Moments of an empty stream (the identity of :func:`merge`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import stats
      >>> m = stats.from_samples(jnp.array([[1.0], [3.0]]))
      >>> float(stats.merge(stats.empty(1), m).mean[0])
      2.0
    """
    return Moments(
        count=jnp.zeros((), _count_dtype()),
        mean=jnp.zeros((num_features,), dtype),
        comoment=jnp.zeros((num_features, num_features), dtype),
    )


def from_features(features: Sequence[ArrayLike], valid: ArrayLike | None = None,
                  shift: ArrayLike | None = None) -> Moments:
    """Moments of ``k`` features given as a list of ``[n]`` arrays, in one fused pass.

    The sums are taken of shifted values ``y = x - shift``:
    ``mean = shift + sum(y)/n`` and ``C = sum(y y^T) - sum(y) sum(y)^T / n`` (the
    "shifted data" algorithm; Chan, Golub & LeVeque, 1983). With the shift near the mean
    (the running mean of earlier chunks, or else the block's first sample) this is as
    accurate as two passes, and XLA fuses every feature and product into one loop over
    the samples instead of materialising an ``[n, k]`` array.

    Args:
      features: sequence of ``k`` arrays of shape ``[n]`` and one float dtype.
      valid: optional ``[n]`` bool mask; invalid samples contribute nothing (even inf/NaN).
      shift: optional ``[k]`` shift; non-finite entries (or None) fall back to the first
        sample of each feature.

    Returns:
      :class:`Moments`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import stats
      >>> x = jnp.array([1e4 + 1.0, 1e4 + 2.0, 1e4 + 3.0])
      >>> m = stats.from_features([x, 2 * x])
      >>> float(m.mean[0]), float(m.comoment[0, 0]), float(m.comoment[0, 1])
      (10002.0, 2.0, 4.0)
    """
    if features is None or isinstance(features, (str, bytes)) or not hasattr(features,
                                                                              "__iter__"):
        raise TypeError(f"`features` must be a sequence of [n] float arrays, got {features!r}.")
    features = [check_float_array(f, f"features[{i}]") for i, f in enumerate(features)]
    if not features:
        raise ValueError("`features` must hold at least one [n] array.")
    if valid is None:
        valid = jnp.ones(features[0].shape, bool)
    first = jnp.stack([f[0] for f in features])
    shift = first if shift is None else jnp.where(jnp.isfinite(shift), shift, first)
    shift = jnp.where(jnp.isfinite(shift), shift, 0)
    y = [jnp.where(valid, f - shift[i], 0) for i, f in enumerate(features)]
    count = valid.sum(dtype=_count_dtype())
    n = jnp.maximum(count, 1).astype(shift.dtype)
    s1 = jnp.stack([v.sum() for v in y])
    k = len(y)
    upper = {(i, j): (y[i] * y[j]).sum() for i in range(k) for j in range(i, k)}
    s2 = jnp.stack([jnp.stack([upper[min(i, j), max(i, j)] for j in range(k)]) for i in range(k)])
    return Moments(count, shift + s1 / n, s2 - jnp.outer(s1, s1) / n)


def from_samples(x: ArrayLike, valid: ArrayLike | None = None) -> Moments:
    """Moments of the rows of ``x`` (``[n, k]``), optionally only where ``valid`` (``[n]``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import stats
      >>> m = stats.from_samples(jnp.array([[1.0], [3.0], [99.0]]), jnp.array([True, True, False]))
      >>> int(m.count), float(m.mean[0]), float(m.comoment[0, 0])
      (2, 2.0, 2.0)
    """
    x = check_float_array(x, "x")
    if x.ndim != 2:
        raise ValueError(f"`x` must have shape [n, k], got {x.shape}.")
    return from_features([x[:, i] for i in range(x.shape[1])], valid)


def merge(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two disjoint sample sets (Chan et al. 1979).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import stats
      >>> x = jnp.arange(6.0).reshape(6, 1)
      >>> whole = stats.from_samples(x)
      >>> parts = stats.merge(stats.from_samples(x[:2]), stats.from_samples(x[2:]))
      >>> bool(jnp.allclose(whole.comoment, parts.comoment))
      True
    """
    # Both sides describe the same features in the same dtype (an internal contract: the
    # engine and the sharded reduction only merge moments they built from one plan).
    chex.assert_equal_shape([a.mean, b.mean])
    chex.assert_equal_shape([a.comoment, b.comoment])
    chex.assert_type([a.mean, b.mean, a.comoment, b.comoment], a.mean.dtype)
    count = a.count + b.count
    n = jnp.maximum(count, 1).astype(a.mean.dtype)
    na = a.count.astype(a.mean.dtype)
    nb = b.count.astype(a.mean.dtype)
    delta = b.mean - a.mean
    mean = a.mean + delta * (nb / n)
    comoment = a.comoment + b.comoment + jnp.outer(delta, delta) * (na * nb / n)
    return Moments(count, mean, comoment)


def _spread(mean: Array, variance: Array, count: Array, ddof: int) -> Stats:
    """Stats from a variance with ``ddof`` degrees of freedom used: NaN std/stderr when
    ``count <= ddof`` (the sample says nothing about the spread), NaN mean when empty."""
    n = count.astype(mean.dtype)
    enough = count > ddof
    std = jnp.where(enough, jnp.sqrt(jnp.maximum(variance, 0)), jnp.nan)
    stderr = std / jnp.sqrt(jnp.maximum(n, 1))
    return Stats(mean=jnp.where(count > 0, mean, jnp.nan), std=std, stderr=stderr, count=count)


def summarize(m: Moments, index: int) -> Stats:
    r"""The :class:`Stats` of feature ``index`` (sample std with ddof = 1).

    .. math:: s = \sqrt{C_{ii} / (n - 1)}, \quad \mathrm{stderr} = s / \sqrt n.

    ``std`` and ``stderr`` are NaN for ``n < 2``; ``mean`` is NaN for ``n = 0``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import stats
      >>> s = stats.summarize(stats.from_samples(jnp.array([[0.0], [2.0]])), 0)
      >>> float(s.mean), float(s.std), float(s.stderr)
      (1.0, 1.4142135381698608, 1.0)
      >>> float(stats.summarize(stats.from_samples(jnp.array([[3.0]])), 0).std)
      nan
    """
    n = m.count.astype(m.mean.dtype)
    variance = m.comoment[index, index] / jnp.maximum(n - 1, 1)
    return _spread(m.mean[index], variance, m.count, ddof=1)


def summarize_linear(m: Moments, weights: ArrayLike, *, ddof: int = 1) -> Stats:
    r"""The :class:`Stats` of the linear combination ``weights @ x`` of the features.

    .. math:: \bar y = w^T \bar x, \quad s^2 = w^T C w / (n - \mathrm{ddof}).

    ``ddof = 1`` for fixed weights; ``ddof = 2`` when the weights were fitted to the same
    samples (a regression coefficient and the mean use two degrees of freedom: with two
    samples the fitted combination is constant and its spread tells nothing). ``std`` and
    ``stderr`` are NaN for ``n <= ddof``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import stats
      >>> m = stats.from_samples(jnp.array([[0.0, 1.0], [2.0, 1.0]]))
      >>> float(stats.summarize_linear(m, jnp.array([1.0, -1.0])).mean)
      0.0
    """
    n = m.count.astype(m.mean.dtype)
    variance = weights @ m.comoment @ weights / jnp.maximum(n - ddof, 1)
    return _spread(weights @ m.mean, variance, m.count, ddof=ddof)


def describe(x: ArrayLike, *, axis: int = 0) -> Stats:
    r"""Mean, std (ddof=1), standard error and count of ``x`` along ``axis`` (in one pass).

    .. math:: \bar x = \frac1n \sum_i x_i, \quad s^2 = \frac{1}{n-1} \sum_i (x_i - \bar x)^2,
              \quad \mathrm{stderr} = s / \sqrt n.

    With one value the std is undefined: ``std`` and ``stderr`` are NaN (never 0); with
    none, ``mean`` is NaN too.

    Args:
      x: float array of rank >= 1.
      axis: the sample axis (an int in ``[-x.ndim, x.ndim)``).

    Returns:
      :class:`Stats` with the other axes kept; ``count`` is an integer array.

    Raises:
      TypeError: ``x`` is not a float array, or ``axis`` is not an int.
      ValueError: ``x`` is a scalar, or ``axis`` is out of range.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> float(jaxkl.describe(jnp.array([0.0, 2.0])).stderr)
      1.0
      >>> float(jaxkl.describe(jnp.array([2.0])).std)
      nan
    """
    x = check_float_array(x, "x")
    if x.ndim == 0:
        raise ValueError("`x` must have a sample axis (rank >= 1), got a scalar.")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"`axis` must be an int, got {axis!r}.")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"`axis` = {axis} is out of range for `x` of shape {x.shape}.")
    n = x.shape[axis]
    if n == 0:
        mean = jnp.full(x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:], jnp.nan, x.dtype)
    else:
        mean = x.mean(axis=axis)
    std = x.std(axis=axis, ddof=1) if n > 1 else jnp.full_like(mean, jnp.nan)
    count = jnp.full(mean.shape, n, _count_dtype())
    # A Python float is weakly typed: the stderr keeps the dtype of x under strict promotion.
    return Stats(mean=mean, std=std, stderr=std / math.sqrt(max(n, 1)), count=count)


def relative_error(stats: Stats, true_value: ArrayLike, *, level: float = 0.95) -> Interval:
    r"""Relative bias ``(mean - true) / true`` of an estimate, with a confidence interval.

    .. math:: \frac{\bar k - \mathrm{KL}}{\mathrm{KL}} \pm z_{(1+\text{level})/2}
              \frac{\mathrm{stderr}}{|\mathrm{KL}|}

    Args:
      stats: the estimate (see :func:`jaxkl.estimate`).
      true_value: the exact value (non-zero), e.g. from :func:`jaxkl.exact_kl`.
      level: confidence level of the normal-approximation interval.

    Returns:
      :class:`Interval` of the relative bias.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> s = jaxkl.Stats(mean=jnp.array(1.1), std=jnp.array(1.0), stderr=jnp.array(0.05),
      ...                 count=jnp.array(400))
      >>> [round(float(v), 3) for v in jaxkl.relative_error(s, 1.0)]
      [0.1, 0.002, 0.198]
    """
    if not isinstance(stats, Stats):
        raise TypeError(f"`stats` must be a jaxkl.Stats, got {type(stats).__name__}.")
    if true_value is None or isinstance(true_value, (str, bytes, bool)):
        raise TypeError(f"`true_value` must be a number, got {true_value!r}.")
    try:
        true_value = jnp.asarray(true_value, stats.mean.dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`true_value` must be a number, got {type(true_value).__name__}.") from e
    z = _z(level)
    value = (stats.mean - true_value) / true_value
    half = z * stats.stderr / jnp.abs(true_value)
    return Interval(value=value, low=value - half, high=value + half)
