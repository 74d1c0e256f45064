r"""Gaussian mixtures as distrax distributions: the targets p that have no closed-form KL.

.. math:: p(x) = \sum_{k=1}^K w_k\, \mathcal N(x; \mu_k, \Sigma_k), \quad
          w_k \ge 0,\ \sum_k w_k = 1.

Constructors return :class:`GaussianMixture`, a ``distrax.MixtureSameFamily`` (1-D:
``distrax.Normal`` components; N-D: ``MultivariateNormalDiag`` or
``MultivariateNormalTri``), so they work with :func:`jaxkl.estimate`, ``jit`` and ``vmap``
like any distrax distribution. Leading batch dimensions are allowed (one mixture per batch element).

Values are validated eagerly when the inputs are concrete (weights non-negative and summing
to one, positive scales, symmetric positive-definite covariances); under ``jit``/``vmap``
only shapes are checked, because traced values cannot be inspected.

:func:`mixture_params` reads any Gaussian or Gaussian mixture back as arrays
``(log_weights, means, covariances)`` and :func:`mixture_moments` gives its mean and
covariance in closed form (the forward-KL optimum over Gaussians, i.e. moment matching).
"""

from jaxkl._src.distributions.mixtures import (
    GaussianMixture,
    MixtureMoments,
    MixtureParams,
    MultivariateNormalTri,
    gaussian_mixture_1d,
    gaussian_mixture_diag,
    gaussian_mixture_full,
    is_gaussian_mixture,
    mixture_moments,
    mixture_params,
)

__all__ = [
    "gaussian_mixture_1d",
    "gaussian_mixture_diag",
    "gaussian_mixture_full",
    "GaussianMixture",
    "is_gaussian_mixture",
    "mixture_moments",
    "mixture_params",
    "MixtureMoments",
    "MixtureParams",
    "MultivariateNormalTri",
]
