"""Implementation of :mod:`jaxkl.mixtures` (its module docstring has the overview)."""

from __future__ import annotations

import math
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxkl._src import linalg
from jaxkl._src.validation import (
    check_float_array,
    check_positive_values,
    check_same_shape,
    check_weight_values,
    compute_dtype,
    concrete_value,
    third_party_promotion,
)

Array = jax.Array


class MixtureParams(NamedTuple):
    """A Gaussian mixture as arrays (every Gaussian is a 1-component mixture).

    Attributes:
      log_weights: ``[..., K]`` log mixture weights (normalised).
      means: ``[..., K, d]`` component means (``d = 1`` for univariate mixtures).
      covariances: ``[..., K, d, d]`` component covariances.
    """

    log_weights: Array
    means: Array
    covariances: Array


class MixtureMoments(NamedTuple):
    """Mean and covariance of a distribution.

    Attributes:
      mean: ``[...]`` for univariate distributions, ``[..., d]`` otherwise.
      covariance: the variance ``[...]`` for univariate distributions, ``[..., d, d]``
        otherwise.
    """

    mean: Array
    covariance: Array


class GaussianMixture(distrax.MixtureSameFamily):
    """``distrax.MixtureSameFamily`` whose ``log_prob`` accepts sample batches in strict mode.

    distrax broadcasts a batch of points ``[n, ...]`` against the ``[..., K]`` components by
    implicit rank promotion, which raises under ``jax_numpy_rank_promotion="raise"`` (the
    setting this project tests under). The promotion is intended there, so it is allowed
    for that call only; everything else is distrax's.
    """

    def log_prob(self, value) -> Array:
        with third_party_promotion():
            return super().log_prob(value)


class MultivariateNormalTri(distrax.MultivariateNormalTri):
    r"""``distrax.MultivariateNormalTri`` (lower scale) whose ``log_prob`` makes no LAPACK call.

    .. math:: \log p(x) = -\tfrac12 \lVert L^{-1}(x - \mu)\rVert^2 - \sum_i \log |L_{ii}|
              - \tfrac d2 \log 2\pi.

    distrax solves ``L z = x - mu`` with ``jax.scipy.linalg.solve_triangular``, a jaxlib
    LAPACK kernel on CPU that can deadlock XLA:CPU's thread pool when two run at once
    (see ``jaxkl/_src/linalg.py``); here the solve is a forward substitution in plain JAX
    operations. Sampling and every other method are distrax's.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl.mixtures import MultivariateNormalTri
      >>> d = MultivariateNormalTri(jnp.zeros(2), jnp.array([[1.0, 0.0], [0.5, 2.0]]))
      >>> round(float(d.log_prob(jnp.array([1.0, 1.0]))), 5)
      -3.06227
    """

    def __init__(self, loc, scale_tri):
        super().__init__(loc, scale_tri, is_lower=True)

    def log_prob(self, value) -> Array:
        value = jnp.asarray(value, self.dtype)
        shape = jnp.broadcast_shapes(value.shape, self.loc.shape)
        centred = jnp.broadcast_to(value, shape) - jnp.broadcast_to(self.loc, shape)
        z = linalg.solve_lower_triangular(self._scale_tri, centred)
        log_det = jnp.broadcast_to(linalg.log_abs_det_triangular(self._scale_tri),
                                    z.shape[:-1])
        return -0.5 * jnp.sum(z * z, axis=-1) - log_det - 0.5 * z.shape[-1] * math.log(2 * math.pi)

    def __getitem__(self, index) -> MultivariateNormalTri:
        # distrax's own __getitem__ would return its class, with the LAPACK log_prob.
        sliced = super().__getitem__(index)
        return MultivariateNormalTri(sliced.loc, sliced.scale_tri)


def _mixing(weights, logits, batch_components: tuple[int, ...], dtype) -> distrax.Categorical:
    """The Categorical over components, from exactly one of weights/logits (else uniform)."""
    if weights is not None and logits is not None:
        raise ValueError("Pass either `weights` or `logits`, not both.")
    name = "weights" if weights is not None else "logits"
    given = weights if weights is not None else logits
    if given is None:
        return distrax.Categorical(logits=jnp.zeros(batch_components, dtype))
    given = check_float_array(given, name)
    if given.shape != batch_components:
        raise ValueError(
            f"`{name}` has shape {given.shape}; expected {batch_components} (batch shape "
            "followed by the number of components, as given by the means)."
        )
    values = concrete_value(given)
    if values is not None:
        if not np.all(np.isfinite(values) | ((values == -np.inf) & (name == "logits"))):
            raise ValueError(f"`{name}` must be finite, got {values}.")
        if name == "weights":
            check_weight_values(values, given.dtype, "weights")
        elif np.any(np.all(values == -np.inf, axis=-1)):
            raise ValueError("`logits` must not be -inf for every component.")
    given = given.astype(dtype)
    return distrax.Categorical(probs=given) if name == "weights" else distrax.Categorical(
        logits=given
    )


def _check_means(means, name: str, min_rank: int) -> Array:
    means = check_float_array(means, name)
    if means.ndim < min_rank:
        expected = "[..., K]" if min_rank == 1 else "[..., K, d]"
        raise ValueError(f"`{name}` must have shape {expected}, got shape {means.shape}.")
    if 0 in means.shape[-min_rank:]:
        what = "one component" if min_rank == 1 else "one component of dimension >= 1"
        raise ValueError(f"`{name}` must hold at least {what}, got shape {means.shape}.")
    values = concrete_value(means)
    if values is not None and not np.all(np.isfinite(values)):
        raise ValueError(f"`{name}` must be finite, got {values}.")
    return means


def gaussian_mixture_1d(
    means: ArrayLike,
    scales: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    logits: ArrayLike | None = None,
) -> distrax.MixtureSameFamily:
    r"""A univariate Gaussian mixture ``sum_k w_k N(mu_k, sigma_k^2)``.

    Args:
      means: ``[..., K]`` component means.
      scales: ``[..., K]`` component standard deviations (> 0).
      weights: ``[..., K]`` non-negative weights summing to 1; or
      logits: ``[..., K]`` unnormalised log-weights (give at most one; neither means
        equal weights).

    Returns:
      ``distrax.MixtureSameFamily`` of ``distrax.Normal`` with batch shape ``[...]`` and
      scalar events, in float32 or wider.

    Raises:
      ValueError: on mismatched shapes, negative or unnormalised weights, non-positive
        scales, non-finite values.

    Reference: G. McLachlan and D. Peel, "Finite Mixture Models", Wiley, 2000.

    Example:
      >>> from jaxkl import mixtures
      >>> p = mixtures.gaussian_mixture_1d([-2.0, 2.0], [0.5, 0.5], weights=[0.3, 0.7])
      >>> round(float(mixtures.mixture_moments(p).mean), 4)
      0.8
    """
    means = _check_means(means, "means", 1)
    scales = check_float_array(scales, "scales")
    check_same_shape([("means", means), ("scales", scales)])
    check_positive_values(scales, "scales")
    dtype = compute_dtype(means, scales)
    mixing = _mixing(weights, logits, means.shape, dtype)
    return GaussianMixture(
        mixing, distrax.Normal(means.astype(dtype), scales.astype(dtype))
    )


def gaussian_mixture_diag(
    means: ArrayLike,
    scales: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    logits: ArrayLike | None = None,
) -> distrax.MixtureSameFamily:
    r"""A d-dimensional Gaussian mixture with diagonal covariances ``diag(scales_k**2)``.

    Args:
      means: ``[..., K, d]`` component means.
      scales: ``[..., K, d]`` per-dimension standard deviations (> 0).
      weights: ``[..., K]`` non-negative weights summing to 1; or
      logits: ``[..., K]`` unnormalised log-weights (at most one; neither: equal weights).

    Returns:
      ``distrax.MixtureSameFamily`` of ``distrax.MultivariateNormalDiag``, events ``[d]``.

    Raises:
      ValueError: on mismatched shapes, invalid weights, non-positive scales.

    Reference: G. McLachlan and D. Peel, "Finite Mixture Models", Wiley, 2000.

    Example:
      >>> from jaxkl import mixtures
      >>> p = mixtures.gaussian_mixture_diag([[0.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
      >>> p.event_shape, mixtures.mixture_moments(p).mean.tolist()
      ((2,), [1.0, 0.0])
    """
    means = _check_means(means, "means", 2)
    scales = check_float_array(scales, "scales")
    check_same_shape([("means", means), ("scales", scales)])
    check_positive_values(scales, "scales")
    dtype = compute_dtype(means, scales)
    mixing = _mixing(weights, logits, means.shape[:-1], dtype)
    return GaussianMixture(
        mixing, distrax.MultivariateNormalDiag(means.astype(dtype), scales.astype(dtype))
    )


def _check_covariances(covariances: Array) -> None:
    values = concrete_value(covariances)
    if values is None:
        return
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("`covariances` must be finite.")
    asymmetry = np.abs(values - np.swapaxes(values, -1, -2)).max(initial=0.0)
    scale = np.abs(values).max(initial=0.0)
    if asymmetry > 1e-5 * scale:
        raise ValueError(
            f"`covariances` must be symmetric; largest |C - C^T| is {asymmetry:.3g}."
        )
    flat = values.reshape((-1,) + values.shape[-2:])
    try:
        np.linalg.cholesky(flat)  # one batched call; the loop below only names the culprit
        return
    except np.linalg.LinAlgError:
        pass
    for index, matrix in enumerate(flat):
        try:
            np.linalg.cholesky(matrix)
        except np.linalg.LinAlgError:
            where = [int(i) for i in np.unravel_index(index, values.shape[:-2])]
            raise ValueError(
                f"`covariances`{where} is not positive definite (Cholesky failed); "
                f"eigenvalues {np.linalg.eigvalsh(matrix)}."
            ) from None


def gaussian_mixture_full(
    means: ArrayLike,
    covariances: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    logits: ArrayLike | None = None,
) -> distrax.MixtureSameFamily:
    r"""A d-dimensional Gaussian mixture with full covariances ``Sigma_k``.

    The covariances are factorised once (Cholesky) and the components are
    :class:`MultivariateNormalTri` (distrax's, with a log-density that makes no LAPACK
    call).

    Args:
      means: ``[..., K, d]`` component means.
      covariances: ``[..., K, d, d]`` symmetric positive-definite covariances.
      weights: ``[..., K]`` non-negative weights summing to 1; or
      logits: ``[..., K]`` unnormalised log-weights (at most one; neither: equal weights).

    Returns:
      ``distrax.MixtureSameFamily`` of :class:`MultivariateNormalTri` (a
      ``distrax.MultivariateNormalTri``), events ``[d]``.

    Raises:
      ValueError: on mismatched shapes, invalid weights, covariances that are not
        symmetric positive definite.

    Reference: G. McLachlan and D. Peel, "Finite Mixture Models", Wiley, 2000.

    Example:
      >>> from jaxkl import mixtures
      >>> p = mixtures.gaussian_mixture_full([[0.0, 0.0]], [[[2.0, 0.5], [0.5, 1.0]]])
      >>> mixtures.mixture_moments(p).covariance.tolist()
      [[2.0, 0.5], [0.5, 1.0]]
    """
    means = _check_means(means, "means", 2)
    covariances = check_float_array(covariances, "covariances")
    expected = means.shape + means.shape[-1:]
    if covariances.shape != expected:
        raise ValueError(
            f"`covariances` has shape {covariances.shape}; expected {expected} "
            "(one d x d matrix per component of `means`)."
        )
    _check_covariances(covariances)
    dtype = compute_dtype(means, covariances)
    mixing = _mixing(weights, logits, means.shape[:-1], dtype)
    scale_tril = linalg.cholesky(covariances.astype(dtype))
    return GaussianMixture(mixing, MultivariateNormalTri(means.astype(dtype), scale_tril))


def _gaussian_params(d, name: str) -> tuple[Array, Array, bool]:
    """(means [..., d], covariances [..., d, d], univariate?) of a Gaussian distribution."""
    if isinstance(d, distrax.Normal):
        loc, scale = jnp.broadcast_arrays(d.loc, d.scale)
        return loc[..., None], (scale * scale)[..., None, None], True
    if isinstance(d, distrax.MultivariateNormalFromBijector):
        loc = jnp.broadcast_to(d.loc, d.batch_shape + d.event_shape)
        return loc, d.covariance(), False
    raise TypeError(
        f"`{name}` must be a Gaussian (distrax.Normal or a distrax multivariate normal) or a "
        f"distrax.MixtureSameFamily of them, got {type(d).__name__}."
    )


def is_gaussian_mixture(d: distrax.DistributionLike) -> bool:
    """True for distrax Gaussians and ``MixtureSameFamily`` of Gaussians.

    Example:
      >>> import distrax, jaxkl
      >>> from jaxkl.mixtures import is_gaussian_mixture
      >>> is_gaussian_mixture(jaxkl.gaussian_mixture_1d([0.0, 2.0], [1.0, 1.0]))
      True
      >>> is_gaussian_mixture(distrax.Laplace(0.0, 1.0))
      False
    """
    if isinstance(d, distrax.MixtureSameFamily):
        d = d.components_distribution
    return isinstance(d, (distrax.Normal, distrax.MultivariateNormalFromBijector))


def mixture_params(d: distrax.DistributionLike) -> tuple[MixtureParams, bool]:
    """Reads a Gaussian or Gaussian mixture as arrays.

    Args:
      d: ``distrax.Normal``, a distrax multivariate normal, or a
        ``distrax.MixtureSameFamily`` of either.

    Returns:
      ``(MixtureParams(log_weights [..., K], means [..., K, d], covariances
      [..., K, d, d]), univariate)``; a single Gaussian is a mixture with ``K = 1`` and
      univariate distributions have ``d = 1``.

    Raises:
      TypeError: for any other distribution.

    Example:
      >>> import distrax
      >>> from jaxkl import mixtures
      >>> params, univariate = mixtures.mixture_params(distrax.Normal(0.0, 2.0))
      >>> params.covariances.tolist(), univariate
      ([[[4.0]]], True)
    """
    return named_mixture_params(d, "d")


def named_mixture_params(d: distrax.DistributionLike, name: str) -> tuple[MixtureParams, bool]:
    """:func:`mixture_params` whose ``TypeError`` names the caller's argument ``name``."""
    if isinstance(d, distrax.MixtureSameFamily):
        means, covariances, univariate = _gaussian_params(d.components_distribution, name)
        log_weights = jax.nn.log_softmax(d.mixture_distribution.logits, axis=-1)
        log_weights = jnp.broadcast_to(log_weights, means.shape[:-1])
    else:
        means, covariances, univariate = _gaussian_params(d, name)
        means, covariances = means[..., None, :], covariances[..., None, :, :]
        log_weights = jnp.zeros(means.shape[:-1], means.dtype)
    return MixtureParams(log_weights, means, covariances), univariate


def mixture_moments(d: distrax.DistributionLike) -> MixtureMoments:
    r"""Mean and covariance of a Gaussian mixture in closed form.

    .. math:: m = \sum_k w_k \mu_k, \quad
              C = \sum_k w_k \left(\Sigma_k + (\mu_k - m)(\mu_k - m)^\top\right).

    These are the parameters of the Gaussian minimising the forward KL(p||q) (moment
    matching).

    Args:
      d: a Gaussian mixture (or a Gaussian), see :func:`mixture_params`.

    Returns:
      :class:`MixtureMoments`; univariate distributions give the scalar mean and variance.

    Reference: C. M. Bishop, "Pattern Recognition and Machine Learning", 2006, Sec. 10.7
    (moment matching minimises KL(p||q) within the exponential family).

    Example:
      >>> from jaxkl import mixtures
      >>> p = mixtures.gaussian_mixture_1d([-1.0, 1.0], [1.0, 1.0])
      >>> float(mixtures.mixture_moments(p).covariance)
      2.0
    """
    params, univariate = named_mixture_params(d, "d")
    weights = jnp.exp(params.log_weights)
    mean = jnp.einsum("...k,...ki->...i", weights, params.means)
    centred = params.means - mean[..., None, :]
    spread = params.covariances + centred[..., :, None] * centred[..., None, :]
    covariance = jnp.einsum("...k,...kij->...ij", weights, spread)
    if univariate:
        return MixtureMoments(mean[..., 0], covariance[..., 0, 0])
    return MixtureMoments(mean, covariance)
