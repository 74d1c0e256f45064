"""Closed-form KLs: :func:`exact_kl` (the distrax registry, pure JAX) and the float64
analytic reference of :func:`jaxkl.reference.reference_kl`."""

from __future__ import annotations

import distrax
import jax
import numpy as np

from jaxkl._src.distributions.mixtures import is_gaussian_mixture
from jaxkl._src.reference.inputs import float64_gaussians, to_float64
from jaxkl._src.reference.result import ReferenceKL


def exact_kl(q: distrax.DistributionLike, p: distrax.DistributionLike) -> jax.Array:
    """KL(q||p) from the closed form registered in distrax (pure JAX, jittable).

    Args:
      q, p: distrax distributions.

    Returns:
      ``q.kl_divergence(p)`` in the distributions' dtype.

    Raises:
      ValueError: when distrax has no closed form for this pair of types; use
        :func:`reference_kl` for quadrature, mixture bounds or Monte Carlo.

    Reference: S. Kullback and R. A. Leibler, "On information and sufficiency", Ann. Math.
    Statist. 22, 1951.

    Example:
      >>> import distrax
      >>> from jaxkl.reference import exact_kl
      >>> float(exact_kl(distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 1.0)))
      0.5
    """
    if not hasattr(q, "kl_divergence"):
        raise ValueError(
            f"`q` of type {type(q).__name__} is not a distrax distribution: no closed-form "
            "KL; use jaxkl.reference_kl (quadrature, bounds or Monte Carlo)."
        )
    try:
        return q.kl_divergence(p)
    except NotImplementedError:
        raise ValueError(
            f"No closed-form KL(q||p) is registered for q of type {type(q).__name__} and p "
            f"of type {type(p).__name__}; use jaxkl.reference_kl (quadrature, Gaussian-"
            "mixture bounds or Monte Carlo)."
        ) from None


def _gaussian_kl(q, p) -> tuple[float, float]:
    """KL between two Gaussians in NumPy float64 (distrax keeps some float32 internals),
    and a bound on its rounding error.

    The terms ``tr(P^-1 Q)``, ``delta' P^-1 delta`` and ``log det`` go through Cholesky
    factors, which are exact for a covariance perturbed by ~``d eps`` relatively; the
    terms then move by up to the condition number times that (a near-singular
    covariance, correlation 0.999999, lost 5e-12 where ``64 eps (1 + |KL|)`` said 1e-13).
    """
    gq, gp = float64_gaussians(q), float64_gaussians(p)
    mean_q, cov_q, mean_p, cov_p = gq.means[0], gq.covariances[0], gp.means[0], gp.covariances[0]
    chol_p = np.linalg.cholesky(cov_p)
    whitened = np.linalg.solve(chol_p, np.linalg.cholesky(cov_q))
    delta = np.linalg.solve(chol_p, mean_p - mean_q)
    logdet_ratio = np.linalg.slogdet(cov_p)[1] - np.linalg.slogdet(cov_q)[1]
    trace, mahalanobis = float(np.sum(whitened**2)), float(delta @ delta)
    value = 0.5 * (trace + mahalanobis - len(delta) + logdet_ratio)
    d, eps = len(delta), float(np.finfo(np.float64).eps)
    conditioning = np.linalg.cond(cov_p) + np.linalg.cond(cov_q)
    scale = 1 + abs(value) + trace + mahalanobis + abs(logdet_ratio)
    return value, eps * scale * (64 + 8 * d * d * conditioning)


def _is_gaussian(d) -> bool:
    """A Gaussian, or a Gaussian mixture of one component (jaxkl's mixture constructors
    make those), whose KL has the closed form of a single Gaussian."""
    if not is_gaussian_mixture(d):
        return False
    return (not isinstance(d, distrax.MixtureSameFamily)
            or d.mixture_distribution.num_categories == 1)


def analytic_reference(
    q: distrax.DistributionLike, p: distrax.DistributionLike
) -> ReferenceKL:
    """The closed-form KL in float64, with a rounding bound as its error."""
    if _is_gaussian(q) and _is_gaussian(p):
        value, error = _gaussian_kl(q, p)
        return ReferenceKL(value, error, "analytic")
    with jax.enable_x64(True):
        value = float(exact_kl(to_float64(q), to_float64(p)))
    # The closed forms subtract O(1) terms: a few float64 ulps of 1 + |value|.
    return ReferenceKL(value, 64 * float(np.finfo(np.float64).eps) * (1 + abs(value)), "analytic")


def has_analytic(q: distrax.DistributionLike, p: distrax.DistributionLike) -> bool:
    """Whether there is a closed-form KL for this pair: two Gaussians (one-component
    mixtures included), or a pair distrax registers."""
    if _is_gaussian(q) and _is_gaussian(p):
        return True
    try:
        exact_kl(q, p)
    except ValueError:
        return False
    return True
