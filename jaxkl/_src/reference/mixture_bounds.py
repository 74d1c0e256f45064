"""Closed-form approximations and bounds of KL(q||p) between Gaussian mixtures (pure
JAX): Hershey-Olsen's variational and product approximations and the Durrieu-Thiran-Kelly
bounds, and the references built on them."""

from __future__ import annotations

import math
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp

from jaxkl._src import linalg
from jaxkl._src.distributions.checks import check_parameters
from jaxkl._src.distributions.mixtures import MixtureParams, named_mixture_params
from jaxkl._src.reference.inputs import to_float64
from jaxkl._src.reference.result import ReferenceKL
from jaxkl._src.validation import compute_dtype

Array = jax.Array


class MixtureKLApproximations(NamedTuple):
    """Closed-form approximations and bounds of KL(q||p) between Gaussian mixtures.

    Attributes:
      variational: Hershey & Olsen's variational approximation ``D_var``.
      product: Hershey & Olsen's product-of-Gaussians approximation ``D_prod``.
      lower: Durrieu, Thiran & Kelly's lower bound (may be negative; KL >= 0 anyway).
      upper: Durrieu, Thiran & Kelly's upper bound.
    """

    variational: Array
    product: Array
    lower: Array
    upper: Array


def _gaussian_pair_terms(mean_a, cov_a, mean_b, cov_b) -> tuple[Array, Array]:
    """KL(N_a || N_b) and log of the overlap integral ``int N_a N_b = N(mu_a; mu_b, S_a+S_b)``.

    Inputs are ``[..., A, d]``/``[..., A, d, d]`` and ``[..., B, d]``/``[..., B, d, d]``;
    outputs are ``[..., A, B]``.
    """
    dim = mean_a.shape[-1]
    mean_a, mean_b = mean_a[..., :, None, :], mean_b[..., None, :, :]
    cov_a, cov_b = cov_a[..., :, None, :, :], cov_b[..., None, :, :, :]
    batch = jnp.broadcast_shapes(mean_a.shape[:-1], mean_b.shape[:-1])
    delta = jnp.broadcast_to(mean_b - mean_a, batch + (dim,))[..., None]
    # jaxkl's own Cholesky and solves: jaxlib's LAPACK kernels can deadlock XLA:CPU's
    # thread pool when several run at once, as these three would (see jaxkl._src.linalg).
    chol_a = jnp.broadcast_to(linalg.cholesky(cov_a), batch + (dim, dim))
    chol_b = jnp.broadcast_to(linalg.cholesky(cov_b), batch + (dim, dim))
    chol_sum = linalg.cholesky(jnp.broadcast_to(cov_a + cov_b, batch + (dim, dim)))
    solve = linalg.solve_lower_triangular_matrix

    def logdet(chol):
        return 2 * linalg.log_abs_det_triangular(chol)

    trace = jnp.sum(solve(chol_b, chol_a) ** 2, axis=(-2, -1))
    mahalanobis = jnp.sum(solve(chol_b, delta) ** 2, axis=(-2, -1))
    kl = 0.5 * (trace + mahalanobis - dim + logdet(chol_b) - logdet(chol_a))
    log_overlap = -0.5 * (
        dim * math.log(2 * math.pi)
        + logdet(chol_sum)
        + jnp.sum(solve(chol_sum, delta) ** 2, axis=(-2, -1))
    )
    return kl, log_overlap


def _broadcast_batch(params: MixtureParams, batch: tuple[int, ...], dtype) -> MixtureParams:
    """``params`` with batch shape ``batch`` (explicitly, so ranks match under strict mode)."""
    components, dim = params.means.shape[-2:]
    return MixtureParams(
        jnp.broadcast_to(jnp.asarray(params.log_weights, dtype), batch + (components,)),
        jnp.broadcast_to(jnp.asarray(params.means, dtype), batch + (components, dim)),
        jnp.broadcast_to(jnp.asarray(params.covariances, dtype), batch + (components, dim, dim)),
    )


def _approximations_from_params(q: MixtureParams, p: MixtureParams) -> MixtureKLApproximations:
    dtype = compute_dtype(q.means, p.means)
    q_batch, p_batch = q.log_weights.shape[:-1], p.log_weights.shape[:-1]
    try:
        batch = jnp.broadcast_shapes(q_batch, p_batch)
    except ValueError:
        raise ValueError(
            f"`q` and `p` have batch shapes {q_batch} and {p_batch}, which do not broadcast."
        ) from None
    q, p = _broadcast_batch(q, batch, dtype), _broadcast_batch(p, batch, dtype)
    dim = q.means.shape[-1]
    kl_qq, log_z_qq = _gaussian_pair_terms(q.means, q.covariances, q.means, q.covariances)
    kl_qp, log_t_qp = _gaussian_pair_terms(q.means, q.covariances, p.means, p.covariances)
    chol = linalg.cholesky(q.covariances)
    entropy = 0.5 * (dim * (1 + math.log(2 * math.pi)) + 2 * linalg.log_abs_det_triangular(chol))
    w_q, w_p = q.log_weights[..., None, :], p.log_weights[..., None, :]
    # Per component a of q: lower (variational, Jensen on log-sum-exp) and upper
    # (Jensen on log) bounds of E_{q_a}[log q] + H(q_a) and of E_{q_a}[log p] + H(q_a).
    self_var = jax.nn.logsumexp(w_q - kl_qq, axis=-1)
    self_prod = jax.nn.logsumexp(w_q + log_z_qq, axis=-1) + entropy
    cross_var = jax.nn.logsumexp(w_p - kl_qp, axis=-1)
    cross_prod = jax.nn.logsumexp(w_p + log_t_qp, axis=-1) + entropy

    def average(terms):
        return jnp.sum(jnp.exp(q.log_weights) * terms, axis=-1)

    return MixtureKLApproximations(
        variational=average(self_var - cross_var),
        product=average(self_prod - cross_prod),
        lower=average(self_var - cross_prod),
        upper=average(self_prod - cross_var),
    )


def mixture_kl_approximations(
    q: distrax.DistributionLike, p: distrax.DistributionLike
) -> MixtureKLApproximations:
    r"""Hershey-Olsen approximations and Durrieu-Thiran-Kelly bounds of KL(q||p).

    For mixtures :math:`q = \sum_a \pi_a q_a`, :math:`p = \sum_b \omega_b p_b` of Gaussians,
    with :math:`D_{ab} = KL(q_a\|p_b)`, :math:`D_{aa'} = KL(q_a\|q_{a'})`, overlaps
    :math:`t_{ab} = \int q_a p_b`, :math:`z_{aa'} = \int q_a q_{a'}` and entropies
    :math:`H_a`:

    .. math::
        D_{var} &= \sum_a \pi_a \log \frac{\sum_{a'} \pi_{a'} e^{-D_{aa'}}}
                                          {\sum_b \omega_b e^{-D_{ab}}}, \qquad
        D_{prod} = \sum_a \pi_a \log \frac{\sum_{a'} \pi_{a'} z_{aa'}}
                                          {\sum_b \omega_b t_{ab}}, \\
        L &= \sum_a \pi_a \Big(\log \sum_{a'} \pi_{a'} e^{-D_{aa'}} - H_a
                              - \log \sum_b \omega_b t_{ab}\Big)
          \le KL(q\|p) \le
        U = \sum_a \pi_a \Big(\log \sum_{a'} \pi_{a'} z_{aa'} + H_a
                              - \log \sum_b \omega_b e^{-D_{ab}}\Big).

    The bounds follow from two Jensen inequalities on each :math:`E_{q_a}[\log m]`
    (:math:`m = q` or :math:`p`): :math:`\ge \log\sum_b \omega_b e^{E_{q_a} \log m_b}`
    (log-sum-exp is convex) and :math:`\le \log E_{q_a}[m]` (log is concave). Both
    approximations lie in :math:`[L, U]`. Pure JAX: jit/vmap-able; batch dimensions
    broadcast.

    Args:
      q, p: Gaussians or ``distrax.MixtureSameFamily`` of Gaussians (see
        :func:`jaxkl.mixtures.mixture_params`) with the same event shape.

    Returns:
      :class:`MixtureKLApproximations` of arrays with the broadcast batch shape.

    Raises:
      ValueError: mismatched event dimensions, batch shapes that do not broadcast, or
        (concrete) invalid parameters: a non-positive scale, a singular covariance.

    References:
      J. R. Hershey and P. A. Olsen, "Approximating the Kullback Leibler divergence between
      Gaussian mixture models", ICASSP 2007. J.-L. Durrieu, J.-Ph. Thiran and F. Kelly,
      "Lower and upper bounds for approximation of the Kullback-Leibler divergence between
      Gaussian mixture models", ICASSP 2012.

    Example:
      >>> from jaxkl.mixtures import gaussian_mixture_1d
      >>> from jaxkl.reference import mixture_kl_approximations
      >>> q = gaussian_mixture_1d([-1.0, 1.0], [0.5, 0.5])
      >>> p = gaussian_mixture_1d([-1.0, 2.0], [0.5, 1.0])
      >>> a = mixture_kl_approximations(q, p)
      >>> bool(a.lower <= a.variational <= a.upper)
      True
    """
    check_parameters(q, "q")
    check_parameters(p, "p")
    params_q, _ = named_mixture_params(q, "q")
    params_p, _ = named_mixture_params(p, "p")
    if params_q.means.shape[-1] != params_p.means.shape[-1]:
        raise ValueError(
            f"`q` and `p` must have the same event dimension, got {q.event_shape} and "
            f"{p.event_shape}."
        )
    # Compiled once per shape: eagerly, each small op would be dispatched on its own.
    return _approximations_jit(params_q, params_p)


_approximations_jit = jax.jit(_approximations_from_params)


def bounds_reference(
    q: distrax.DistributionLike, p: distrax.DistributionLike, method: str
) -> ReferenceKL:
    """A reference from the mixture bounds: their midpoint (``"bounds"``) or an
    approximation (``"variational"``, ``"product"``), with a guaranteed half-width."""
    with jax.enable_x64(True):
        a = mixture_kl_approximations(to_float64(q), to_float64(p))
        lower, upper = max(float(a.lower), 0.0), float(a.upper)
        if method == "bounds":
            return ReferenceKL((lower + upper) / 2, (upper - lower) / 2, "bounds")
        value = float(getattr(a, method))
        return ReferenceKL(value, max(value - lower, upper - value), method)
