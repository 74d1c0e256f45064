r"""Per-sample KL and f-divergence estimators on log-ratios.

Every function here takes ``log_ratio = log p(x) - log q(x)`` evaluated at samples
``x ~ q`` and returns one value per sample, with the input's shape and dtype. Averaging
the values over samples estimates a divergence:

=========================  ===========================  =========  ==================
function                   value (``r = exp(l)``)       unbiased?  estimates
=========================  ===========================  =========  ==================
:func:`k1`                 ``-l``                       yes        KL(q||p)
:func:`k2`                 ``l**2 / 2``                 no         KL(q||p) + O(KL^2)
:func:`k3`                 ``(r - 1) - l``              yes        KL(q||p)
:func:`control_variate`    ``-l + lam (r - 1)``         yes        KL(q||p)
:func:`forward_kl`         ``r l - (r - 1)``            yes        KL(p||q)
:func:`csiszar`            ``f(r) - f'(1) (r - 1)``     yes        D_f(p||q)
=========================  ===========================  =========  ==================

Reference: J. Schulman, "Approximating KL Divergence", 2020,
http://joschu.net/blog/kl-approx.html.

Computation happens in float32 at least (bf16/f16 inputs are upcast) and the result is
cast back to the input dtype. Near ``l = 0`` the unbiased estimators are differences of
nearly equal numbers; they are evaluated with series there (see ``jaxkl._numerics``), so
they are accurate to a few ulps over the whole range. Values that exceed the dtype's
range (``k3`` for ``l > ~88`` in float32) overflow to ``inf``, as the exact value does;
:func:`jaxkl.rl.token_kl` offers clamping for training losses.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxkl import _numerics
from jaxkl._validation import check_float_array, check_same_shape, compute_dtype

Array = jax.Array


# The unchecked per-sample kernels of Schulman's estimators, shared with jaxkl.estimate
# and jaxkl.rl.token_kl (the public functions below add input checks and dtype handling).
KL_KERNELS: dict[str, Callable[[Array], Array]] = {
    "k1": jnp.negative,
    "k2": lambda l: 0.5 * l * l,
    "k3": _numerics.expm1mx,
}


def _elementwise(fn: Callable[[Array], Array], log_ratio, name: str = "log_ratio") -> Array:
    log_ratio = check_float_array(log_ratio, name)
    out = fn(log_ratio.astype(compute_dtype(log_ratio.dtype)))
    return out.astype(log_ratio.dtype)


def k1(log_ratio) -> Array:
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
    return _elementwise(KL_KERNELS["k1"], log_ratio)


def k2(log_ratio) -> Array:
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
    return _elementwise(KL_KERNELS["k2"], log_ratio)


def k3(log_ratio) -> Array:
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
    return _elementwise(KL_KERNELS["k3"], log_ratio)


def control_variate(log_ratio, lam) -> Array:
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
    r_minus_1 = _numerics.expm1(l)
    near = _numerics.expm1mx(l) + (lam - 1) * r_minus_1
    far = lam * r_minus_1 - l
    return jnp.where(jnp.abs(l) < 1, near, far).astype(log_ratio.dtype)


def optimal_cv_lambda(log_ratio, *, axis=None) -> Array:
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
    cov = (dl * dr).mean(axis=axis)
    var = (dr * dr).mean(axis=axis)
    # NaN in, NaN out: only an exactly constant r gives the defined 0 (a test "var > 0"
    # would also turn a NaN variance into 0).
    return jnp.where(var == 0, 0, cov / jnp.where(var == 0, 1, var))


def forward_kl(log_ratio) -> Array:
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
    return _elementwise(_numerics.xexpx_minus_expm1, log_ratio)


# ---------------------------------------------------------------------------------------
# Csiszar f-divergences D_f(p||q) = E_q[f(p/q)], in tangent-subtracted form
# f(r) - f'(1)(r - 1) >= 0 (for convex f), each written in l for accuracy near l = 0.
# ---------------------------------------------------------------------------------------


def _amari_alpha(alpha: float) -> Callable[[Array], Array]:
    # f_a(u) = (u**a - 1 - a (u - 1)) / (a (a - 1)) = (a expm1mx(l) - expm1mx(a l)) / (a (1 - a))
    # keeps the O(l**2) part exact. Limits: a -> 0 reverse KL, a -> 1 forward KL.
    if alpha == 0.0:
        return _numerics.expm1mx
    if alpha == 1.0:
        return _numerics.xexpx_minus_expm1
    scale = 1.0 / (alpha * (1.0 - alpha))

    def f(l):
        # Near 0 the expm1mx form keeps the O(l**2) part exact; far from 0 the expm1 form
        # avoids subtracting two large k3 values.
        near = alpha * _numerics.expm1mx(l) - _numerics.expm1mx(alpha * l)
        far = alpha * jnp.expm1(l) - jnp.expm1(alpha * l)
        return scale * jnp.where(jnp.abs(l) < 1, near, far)

    return f


F_DIVERGENCES: dict[str, Callable[[Array], Array]] = {
    # KL(q||p): f(u) = -log u, f'(1) = -1.
    "reverse_kl": _numerics.expm1mx,
    # KL(p||q): f(u) = u log u, f'(1) = 1.
    "forward_kl": _numerics.xexpx_minus_expm1,
    # JS(p, q) = KL(p||m)/2 + KL(q||m)/2, m = (p+q)/2; f'(1) = 0.
    "jensen_shannon": _numerics.js_f,
    # H^2(p, q) = E_q[(sqrt(r) - 1)^2] = 2 - 2 * Bhattacharyya coefficient; f'(1) = 0.
    "squared_hellinger": lambda l: jnp.square(_numerics.expm1(l / 2)),
    # TV(p, q) = E_q|r - 1| / 2; f is not differentiable at 1, its subgradient 0 is used.
    "total_variation": lambda l: jnp.abs(_numerics.expm1(l)) / 2,
    # chi^2(p||q) = E_q[(r - 1)^2]; f'(1) = 0.
    "pearson_chi2": lambda l: jnp.square(_numerics.expm1(l)),
}


def csiszar(log_ratio, *, divergence: str = "reverse_kl", alpha: float | None = None) -> Array:
    r"""Per-sample Csiszar f-divergence estimator in non-negative, tangent-subtracted form.

    .. math:: D_f(p\|q) = E_q[f(r)] = E_q[f(r) - f'(1)(r - 1)], \quad r = p/q,

    since ``E_q[r - 1] = 0``; each term is ``>= 0`` for convex ``f`` (tangent line).

    ==================== ======================================  ==========================
    ``divergence``       ``f(u)``                                divergence
    ==================== ======================================  ==========================
    ``reverse_kl``       ``-log u``                              KL(q||p) (= :func:`k3`)
    ``forward_kl``       ``u log u``                             KL(p||q)
    ``jensen_shannon``   ``[u log u - (1+u) log((1+u)/2)] / 2``  JS(p, q) (<= log 2)
    ``squared_hellinger````(sqrt(u) - 1)**2``                    sum (sqrt p - sqrt q)^2
    ``total_variation``  ``|u - 1| / 2``                         TV(p, q)
    ``pearson_chi2``     ``(u - 1)**2``                          chi^2(p||q)
    ``amari_alpha``      ``(u**a - 1 - a(u - 1)) / (a(a-1))``    Amari alpha (needs alpha)
    ==================== ======================================  ==========================

    Reference: I. Csiszar, "Information-type measures of difference of probability
    distributions", 1967; S. Amari, *Information Geometry and Its Applications*, 2016.

    Args:
      log_ratio: ``log p(x) - log q(x)`` at samples ``x ~ q``.
      divergence: one of the names above.
      alpha: the Amari alpha (a Python float), required for ``"amari_alpha"`` only.
        ``alpha -> 0`` is KL(q||p) and ``alpha -> 1`` is KL(p||q).

    Returns:
      Array of the same shape and dtype, ``>= 0``.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> l = jnp.array([-2.0, 0.0, 2.0])
      >>> jaxkl.csiszar(l, divergence="squared_hellinger")
      Array([0.39958, 0.     , 2.95249], dtype=float32)
      >>> jaxkl.csiszar(l, divergence="amari_alpha", alpha=0.5)
      Array([0.79915, 0.     , 5.905  ], dtype=float32)
    """
    return _elementwise(f_divergence_fn(divergence, alpha=alpha), log_ratio)


def f_divergence_fn(divergence: str, *, alpha: float | None = None) -> Callable[[Array], Array]:
    """The unchecked kernel ``l -> f(r) - f'(1)(r - 1)`` for ``divergence`` (see csiszar)."""
    if divergence == "amari_alpha":
        if alpha is None or isinstance(alpha, jax.Array) and alpha.ndim:
            raise ValueError("`alpha` must be a Python float when divergence='amari_alpha'.")
        return _amari_alpha(float(alpha))
    if alpha is not None:
        raise ValueError(f"`alpha` is only used with divergence='amari_alpha', not {divergence!r}.")
    try:
        return F_DIVERGENCES[divergence]
    except KeyError:
        names = sorted([*F_DIVERGENCES, "amari_alpha"])
        raise ValueError(f"Unknown `divergence` {divergence!r}; expected one of {names}.") from None
