"""Schulman's k1, k2, k3, the control variate and the forward-KL estimator (see
:mod:`jaxkl.estimators` for the overview)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxkl._src import numerics
from jaxkl._src.validation import check_float_array, check_same_shape, compute_dtype

Array = jax.Array


# The unchecked per-sample kernels of Schulman's estimators, shared with jaxkl.estimate
# and jaxkl.rl.token_kl (the public functions below add input checks and dtype handling).
KL_KERNELS: dict[str, Callable[[Array], Array]] = {
    "k1": jnp.negative,
    "k2": lambda l: 0.5 * l * l,
    "k3": numerics.expm1mx,
}


def apply_kernel(fn: Callable[[Array], Array], log_ratio: ArrayLike,
                 name: str = "log_ratio") -> Array:
    """The public edge of every per-sample estimator: checks ``log_ratio``, computes in
    float32 at least, and returns the input's dtype."""
    log_ratio = check_float_array(log_ratio, name)
    out = fn(log_ratio.astype(compute_dtype(log_ratio.dtype)))
    return out.astype(log_ratio.dtype)


def k1(log_ratio: ArrayLike) -> Array:
    r"""Schulman's k1: ``-l``, the naive unbiased estimator of KL(q||p).

    .. math:: k_1 = -\log r, \quad E_q[k_1] = KL(q \| p).

    High variance (Var = E_q[l^2] - KL^2) and negative on about half the samples.

    Args:
      log_ratio: ``log p(x) - log q(x)`` at samples ``x ~ q``; any shape, float dtype.

    Returns:
      Array of the same shape and dtype.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> jaxkl.k1(jnp.array([-0.5, 0.0, 0.5]))
      Array([ 0.5, -0. , -0.5], dtype=float32)
    """
    return apply_kernel(KL_KERNELS["k1"], log_ratio)


def k2(log_ratio: ArrayLike) -> Array:
    r"""Schulman's k2: ``l**2 / 2``, a biased, low-variance estimator of KL(q||p).

    .. math:: k_2 = \tfrac12 (\log r)^2, \quad E_q[k_2] = D_f(p\|q),\ f(u) = \tfrac12 (\log u)^2.

    The f-divergence it estimates agrees with KL(q||p) to second order near p = q, so the
    bias is O(KL^2) (for q = N(0,1), p = N(mu,1): bias = mu**4 / 8 against KL = mu**2 / 2).

    Args:
      log_ratio: ``log p(x) - log q(x)`` at samples ``x ~ q``; any shape, float dtype.

    Returns:
      Array of the same shape and dtype, always ``>= 0``.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> jaxkl.k2(jnp.array([-0.5, 0.0, 0.5]))
      Array([0.125, 0.   , 0.125], dtype=float32)
    """
    return apply_kernel(KL_KERNELS["k2"], log_ratio)


def k3(log_ratio: ArrayLike) -> Array:
    r"""Schulman's k3: ``(r - 1) - l``, unbiased, non-negative estimator of KL(q||p).

    .. math:: k_3 = (r - 1) - \log r \ \ge 0, \quad E_q[k_3] = KL(q \| p)

    since ``E_q[r - 1] = 0``; non-negative because ``log u <= u - 1``. Evaluated as
    ``expm1(l) - l`` with a Taylor series for ``|l| < 1`` (accurate to a few ulps; the
    direct formula loses all float32 digits below ``|l| ~ 1e-4``). The gradient is
    ``expm1(l)``. Its variance can be infinite when p has heavier tails than q (for
    ``q = N(0,1)``, ``p = N(0, s**2)`` with ``s**2 >= 2``), where :func:`k1` stays finite.

    Args:
      log_ratio: ``log p(x) - log q(x)`` at samples ``x ~ q``; any shape, float dtype.

    Returns:
      Array of the same shape and dtype.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> jaxkl.k3(jnp.array([-1.0, 1e-4, 1.0]))
      Array([3.67879e-01, 5.00017e-09, 7.18282e-01], dtype=float32)
    """
    return apply_kernel(KL_KERNELS["k3"], log_ratio)


def control_variate(log_ratio: ArrayLike, lam: ArrayLike) -> Array:
    r"""Control-variate family ``-l + lam * (r - 1)``; unbiased for KL(q||p) for any ``lam``.

    .. math:: k_\lambda = -\log r + \lambda (r - 1), \quad E_q[r - 1] = 0.

    ``lam = 1`` gives :func:`k3` bit for bit (near ``l = 0`` the value is computed as
    ``k3 + (lam - 1)(r - 1)``, which keeps the accuracy of k3 there);
    ``lam = 0`` gives :func:`k1`. The variance-optimal ``lam`` is
    ``Cov(l, r) / Var(r)``: see :func:`optimal_cv_lambda`.

    Args:
      log_ratio: ``log p(x) - log q(x)`` at samples ``x ~ q``.
      lam: scalar or array broadcastable to ``log_ratio`` (exactly, no rank promotion).

    Returns:
      Array with the shape and dtype of ``log_ratio``.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> l = jnp.array([-1.0, 0.5])
      >>> bool(jnp.all(jaxkl.control_variate(l, 1.0) == jaxkl.k3(l)))
      True
    """
    log_ratio = check_float_array(log_ratio, "log_ratio")
    dtype = compute_dtype(log_ratio.dtype)
    if lam is None or isinstance(lam, (str, bytes, bool)):
        raise TypeError(f"`lam` must be a number or an array of numbers, got {lam!r}.")
    try:
        lam = jnp.asarray(lam, dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`lam` must be a number or an array of numbers, got "
                        f"{type(lam).__name__}.") from e
    if lam.ndim:
        check_same_shape([("log_ratio", log_ratio), ("lam", lam)])
    l = log_ratio.astype(dtype)
    # Near 0, k3 + (lam - 1)(r - 1) keeps k3's accuracy (and equals k3 bit for bit at
    # lam = 1); farther out the direct form avoids cancelling two large terms.
    r_minus_1 = numerics.expm1(l)
    near = numerics.expm1mx(l) + (lam - 1) * r_minus_1
    far = lam * r_minus_1 - l
    return jnp.where(jnp.abs(l) < 1, near, far).astype(log_ratio.dtype)


def optimal_cv_lambda(log_ratio: ArrayLike, *, axis: int | tuple[int, ...] | None = None) -> Array:
    r"""Variance-optimal control-variate coefficient estimated from samples.

    .. math:: \lambda^* = \frac{\mathrm{Cov}_q(\log r, r)}{\mathrm{Var}_q(r)}

    minimises ``Var(-l + lam (r - 1))``. Estimated from the same samples that are then
    averaged, ``lam_hat`` depends on them, so the resulting estimate has a bias of order
    ``1/n`` (the usual control-variate bias, e.g. Glasserman, *Monte Carlo Methods in
    Financial Engineering*, 2003, Sec. 4.1.3); it is negligible against the ``1/sqrt(n)``
    standard error for the sample sizes used here. Use an independent pilot sample to
    remove it exactly.

    Args:
      log_ratio: samples of ``l``; reduced over ``axis`` (all axes by default).
      axis: axis or axes to reduce.

    Returns:
      ``lam_hat`` in float32 at least: 0 where ``Var(r) = 0`` (r is constant: every
      ``lam`` gives the same estimate), NaN where the samples hold NaN or ``inf``.

    Example:
      >>> import jax, jaxkl
      >>> l = 0.1 * jax.random.normal(jax.random.key(0), (100_000,)) - 0.005
      >>> round(float(jaxkl.optimal_cv_lambda(l)), 1)  # close to 1 when p ~ q
      1.0
    """
    log_ratio = check_float_array(log_ratio, "log_ratio")
    l = log_ratio.astype(compute_dtype(log_ratio.dtype))
    r_minus_1 = jnp.expm1(l)
    dl = l - l.mean(axis=axis, keepdims=True)
    dr = r_minus_1 - r_minus_1.mean(axis=axis, keepdims=True)
    return cv_coefficient((dl * dr).mean(axis=axis), (dr * dr).mean(axis=axis))


def cv_coefficient(covariance: Array, variance: Array) -> Array:
    """``lam* = Cov(l, r) / Var(r)`` from the two (co)variances, for every caller
    (:func:`optimal_cv_lambda` from samples, ``cv*`` in :func:`jaxkl.estimate` from
    streamed co-moments; any common normalisation cancels).

    0 where ``Var(r) = 0`` (r is constant: every ``lam`` gives the same estimate); NaN
    in, NaN out (a test ``var > 0`` would also turn a NaN variance into 0).
    """
    zero = variance == 0
    return jnp.where(zero, 0, covariance / jnp.where(zero, 1, variance))


def forward_kl(log_ratio: ArrayLike) -> Array:
    r"""Schulman's estimator of the forward KL(p||q) from samples of q.

    .. math:: r \log r - (r - 1) \ \ge 0, \quad E_q[\cdot] = E_p[\log r] = KL(p \| q).

    The tangent-subtracted Csiszar form of ``f(u) = u log u``. Evaluated as
    ``exp(l)(l - 1) + 1`` with a series for ``|l| < 1``. Gradient ``l * exp(l)``.

    Args:
      log_ratio: ``log p(x) - log q(x)`` at samples ``x ~ q``.

    Returns:
      Array of the same shape and dtype.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> jaxkl.forward_kl(jnp.array([-1.0, 0.0, 1.0]))
      Array([0.2642411, 0.       , 1.       ], dtype=float32)
    """
    return apply_kernel(numerics.xexpx_minus_expm1, log_ratio)
