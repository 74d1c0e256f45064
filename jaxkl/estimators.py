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

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxkl import _csiszar, _numerics
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


# The parameter of each parametrised divergence (TFP's names: alpha, t).
PARAMETERS: dict[str, str] = {"amari_alpha": "alpha", "t_power": "t"}

F_DIVERGENCES: dict[str, Callable[[Array], Array]] = dict(_csiszar.KERNELS)
"""Kernels ``l -> f(e^l) - f(1) - f'(1)(e^l - 1)`` of the parameter-free divergences."""

DIVERGENCE_NAMES: tuple[str, ...] = (*F_DIVERGENCES, *PARAMETERS)
"""Every divergence name that :func:`csiszar`, :func:`jaxkl.estimate` and
:func:`jaxkl.fit` accept (``fit`` adds gradient-estimator variants and ``renyi``)."""


def check_parameter(value, name: str) -> float:
    """A finite real Python/NumPy number (a concrete scalar), as a float."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"`{name}` must be a finite real number, got {value!r}.")
    if jnp.ndim(value) != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {jnp.shape(value)}.")
    try:
        value = float(value)
    except TypeError:  # traced (a ConcretizationTypeError) or not a number
        raise TypeError(f"`{name}` must be a concrete Python number (the kernel's series "
                        f"coefficients are computed from it), got {value!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    return value


# Cached: the same parameter gives the same kernel object, so jitted callers that take
# kernels as static arguments (jaxkl.estimate) compile once per parameter.
@functools.lru_cache(maxsize=256)
def _amari_alpha(alpha: float) -> Callable[[Array], Array]:
    # Limits: alpha -> 0 is KL(q||p), alpha -> 1 is KL(p||q); those kernels are exact
    # there (the general formula divides by alpha (alpha - 1)).
    if alpha == 0.0:
        return F_DIVERGENCES["reverse_kl"]
    if alpha == 1.0:
        return F_DIVERGENCES["forward_kl"]
    return _csiszar.amari_kernel(alpha)


@functools.lru_cache(maxsize=256)
def _t_power(t: float) -> Callable[[Array], Array]:
    # s (u**t - 1 - t(u - 1)) = |t (t - 1)| f_t(u) with f_t Amari's function, s the sign
    # that makes it convex; t = 0 and t = 1 give f = 0.
    scale = abs(t * (t - 1.0))
    if scale == 0.0:
        return _csiszar.make_kernel("t_power", jnp.zeros_like, jnp.zeros_like,
                                    ((0.0, 0.0), (0.0, 0.0)), 0.0)
    return _csiszar.amari_kernel(t, scale=scale, name="t_power")


def f_divergence_fn(divergence, *, alpha=None, t=None) -> Callable[[Array], Array]:
    """The unchecked kernel ``l -> f(r) - f(1) - f'(1)(r - 1)`` for ``divergence``.

    ``divergence`` is a name of :data:`DIVERGENCE_NAMES` (``alpha``/``t`` for the
    parametrised ones, validated here) or a callable ``f(log_u)`` (see :func:`csiszar`).
    """
    given = {"alpha": alpha, "t": t}
    needed = PARAMETERS.get(divergence) if isinstance(divergence, str) else None
    for name, value in given.items():
        if value is not None and name != needed:
            where = f"divergence={divergence!r}" if isinstance(divergence, str) else "a callable"
            raise ValueError(f"`{name}` is not a parameter of {where}; "
                             f"parameters: {PARAMETERS}.")
    if callable(divergence):
        return _user_kernel(divergence)
    if needed is not None:
        if given[needed] is None:
            raise ValueError(f"divergence={divergence!r} needs `{needed}` (a finite number).")
        value = check_parameter(given[needed], needed)
        return _amari_alpha(value) if divergence == "amari_alpha" else _t_power(value)
    try:
        return F_DIVERGENCES[divergence]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown `divergence` {divergence!r}; expected a callable or one "
                         f"of {sorted(DIVERGENCE_NAMES)}.") from None


def _user_kernel(f: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """``f(l) - f(0) - f'(1) expm1(l)`` for a user's ``f`` of the log-ratio (TFP's
    convention: ``f(log_u)`` returns the Csiszar function at ``u``). ``f'(1)`` is the
    derivative in ``log u`` at 0, by autodiff. The subtraction is done as written: its
    accuracy near ``l = 0`` is what ``f`` allows, and no overflow handling is added."""

    def kernel(l):
        zero = jnp.zeros((), l.dtype)
        f0, slope = jax.jvp(lambda x: jnp.asarray(f(x), l.dtype), (zero,), (jnp.ones_like(zero),))
        return jnp.asarray(f(l), l.dtype) - f0 - slope * _numerics.expm1(l)

    kernel.__name__ = getattr(f, "__name__", "csiszar_function")
    return kernel


def csiszar(log_ratio, *, divergence="reverse_kl", alpha=None, t=None) -> Array:
    r"""Per-sample Csiszar f-divergence estimator in non-negative, tangent-subtracted form.

    .. math:: D_f(p\|q) = E_q[f(r)] = E_q[f(r) - f(1) - f'(1)(r - 1)], \quad r = p/q,

    since ``E_q[r - 1] = 0`` and a Csiszar function has ``f(1) = 0`` (``modified_gan``,
    whose TFP form has ``f(1) = log 2``, is shifted to it); each term is ``>= 0`` for
    convex ``f`` (the tangent line at 1 lies below it) and 0 at ``r = 1``.

    ======================== ==========================================  =====================
    ``divergence``           ``f(u)``                                    divergence
    ======================== ==========================================  =====================
    ``reverse_kl``           ``-log u``                                  KL(q||p) (= :func:`k3`)
    ``forward_kl``           ``u log u``                                 KL(p||q)
    ``jensen_shannon``       ``[u log u - (1+u) log((1+u)/2)] / 2``      JS(p, q) (<= log 2)
    ``squared_hellinger``    ``(sqrt(u) - 1)**2``                        sum (sqrt p - sqrt q)^2
    ``total_variation``      ``|u - 1| / 2``                             TV(p, q)
    ``pearson_chi2``         ``(u - 1)**2``                              Pearson chi^2(p||q)
    ``chi_square``           ``u**2 - 1`` (same tangent form as above)   chi^2(p||q)
    ``triangular``           ``(u - 1)**2 / (1 + u)``                    triangular discrim.
    ``log1p_abs``            ``u**sign(u - 1) - 1``                      log1p(f) = |log u|
    ``jeffreys``             ``(u - 1) log(u) / 2``                      (KL(p||q)+KL(q||p))/2
    ``arithmetic_geometric`` ``(1 + u) log((1 + u) / (2 sqrt u))``       2 x Taneja's AG mean
    ``modified_gan``         ``log(1 + u) - log u + (u - 1)/2 - log 2``  modified GAN
    ``amari_alpha``          ``(u**a - 1 - a(u - 1)) / (a(a - 1))``      Amari alpha (``alpha``)
    ``t_power``              ``s (u**t - 1 - t(u - 1))``, ``s = -1`` on  t-power (``t``)
                             ``0 < t < 1``, else 1
    ======================== ==========================================  =====================

    The names and functions are those of TFP's ``tfp.vi`` Csiszar functions
    (``pearson`` is ``pearson_chi2`` here, ``kl_forward``/``kl_reverse`` are
    ``forward_kl``/``reverse_kl``), with two differences of convention: jaxkl's
    ``jensen_shannon`` is the Jensen-Shannon divergence itself, half of TFP's function,
    and every function is normalised to ``f(1) = 0``. For the two functions with a kink
    at ``u = 1`` (``total_variation``, ``log1p_abs``) the subgradient ``f'(1) = 0`` is
    used, and the derivative at ``l = 0`` is 0.

    ``divergence`` may also be a callable ``f(log_u)`` returning the Csiszar function at
    ``u`` (TFP's convention); it is tangent-subtracted as ``f(l) - f(0) - f'(1) expm1(l)``
    with ``f'(1)`` by autodiff. The accuracy of that subtraction near ``l = 0`` is then
    what ``f`` allows. :func:`csiszar_dual` and :func:`csiszar_symmetrized` build the
    dual and symmetrized divergences of a name or a callable.

    Accuracy (the named divergences): the value and its gradient (custom JVPs with the
    exact derivative ``u (f'(u) - f'(1))``) are each the exact value at the input
    rounded to a few ulps, and ``inf`` exactly where that exact value exceeds the
    dtype's range (the gradient can overflow where the value does not: ``forward_kl``
    at ``l = 84.3`` in float32 has value 3.4e38 and gradient inf). ``l = -inf`` gives
    the limit (e.g. 1 for ``forward_kl``). The measured errors, per divergence and
    dtype, are in BENCHMARKS.md (``scripts/csiszar_ulp_table.py``).

    Reference: I. Csiszar, "Information-type measures of difference of probability
    distributions", 1967; S. Amari, *Information Geometry and Its Applications*, 2016;
    TensorFlow Probability, ``tfp.vi`` Csiszar functions.

    Args:
      log_ratio: ``log p(x) - log q(x)`` at samples ``x ~ q``; any shape, float dtype.
      divergence: one of the names above (:data:`DIVERGENCE_NAMES`), or a callable.
      alpha: the Amari alpha, a finite Python number, for ``"amari_alpha"`` only.
        ``alpha -> 0`` is KL(q||p) and ``alpha -> 1`` is KL(p||q).
      t: the exponent of ``"t_power"`` (a finite Python number), for it only.

    Returns:
      Array of the same shape and dtype (computed in float32 at least), ``>= 0``.

    Raises:
      ValueError: unknown name, a missing, extra or non-finite ``alpha``/``t``.
      TypeError: a non-float ``log_ratio``, a non-number parameter.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> l = jnp.array([-2.0, 0.0, 2.0])
      >>> jaxkl.csiszar(l, divergence="squared_hellinger")
      Array([0.39958, 0.     , 2.95249], dtype=float32)
      >>> jaxkl.csiszar(l, divergence="amari_alpha", alpha=0.5)
      Array([0.79915, 0.     , 5.905  ], dtype=float32)
      >>> jaxkl.csiszar(l, divergence="t_power", t=0.5)
      Array([0.19978821, 0.        , 1.4762464 ], dtype=float32)
    """
    return _elementwise(f_divergence_fn(divergence, alpha=alpha, t=t), log_ratio)


def _dual_kernel(g: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """``l -> e^l g(-l)``: the tangent form of the dual ``u f(1/u)`` (exact identity).

    Beyond ``l = shift + 1`` the product is formed as ``e^(l - shift) (e^shift g(-l))``
    so that it overflows only where it must; ``e^l = 0`` (``l = -inf``) times an
    infinite ``g(+inf)`` is left as the formula gives it (NaN) unless ``g`` is one of
    jaxkl's kernels, whose limits are known (see csiszar_dual).
    """

    def kernel(l):
        threshold, shift = _csiszar._shift_for(l.dtype)
        high = l > threshold
        e = jnp.exp(jnp.where(high, l - shift, l))
        scale = jnp.where(high, jnp.asarray(math.exp(shift), l.dtype), jnp.ones((), l.dtype))
        return e * (scale * g(-l))

    return kernel


def _transformed(transform: str, log_ratio, f, alpha, t) -> Array:
    log_ratio = check_float_array(log_ratio, "log_ratio")
    g = f_divergence_fn(f, alpha=alpha, t=t)
    slope_at_infinity = getattr(g, "slope_at_infinity", None)
    dual = _dual_kernel(g)

    def kernel(l):
        value = dual(l) if transform == "dual" else (g(l) + dual(l)) / 2
        if slope_at_infinity is None:
            return value
        # l = -inf: e^l g(-l) -> lim_{v -> inf} g(v) / e^v = f'(inf) - f'(1), a property
        # of the named divergence (0 * inf otherwise).
        limit = slope_at_infinity if transform == "dual" else math.inf
        return jnp.where(l == -jnp.inf, jnp.asarray(limit, l.dtype), value)

    return _elementwise(kernel, log_ratio)


def csiszar_dual(log_ratio, f, *, alpha=None, t=None) -> Array:
    r"""The dual Csiszar divergence ``f*(u) = u f(1/u)``, in tangent-subtracted form.

    ``D_{f*}(p||q) = D_f(q||p)``. With ``g`` the tangent form of ``f`` (as in
    :func:`csiszar`) the tangent form of ``f*`` is exactly ``e^l g(-l)``, so the dual of a
    named divergence keeps its accuracy (one more rounding for the product and ``e^l``).
    As TFP's ``tfp.vi.dual_csiszar_function``, in jaxkl's tangent form.

    Args:
      log_ratio: ``log p(x) - log q(x)`` at samples ``x ~ q``.
      f: a divergence name (:data:`DIVERGENCE_NAMES`) or a callable ``f(log_u)``.
      alpha, t: the parameter of ``amari_alpha`` / ``t_power``.

    Returns:
      Array of the same shape and dtype, ``>= 0``.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> l = jnp.array([-1.0, 0.5])
      >>> bool(jnp.allclose(jaxkl.csiszar_dual(l, "forward_kl"), jaxkl.k3(l)))
      True
    """
    return _transformed("dual", log_ratio, f, alpha, t)


def csiszar_symmetrized(log_ratio, f, *, alpha=None, t=None) -> Array:
    r"""The symmetrized Csiszar divergence ``(f(u) + u f(1/u)) / 2``, tangent-subtracted.

    ``D = (D_f(p||q) + D_f(q||p)) / 2``; computed as ``(g(l) + e^l g(-l)) / 2`` with
    ``g`` the tangent form of ``f``. As TFP's ``tfp.vi.symmetrized_csiszar_function``.

    Args:
      log_ratio: ``log p(x) - log q(x)`` at samples ``x ~ q``.
      f: a divergence name (:data:`DIVERGENCE_NAMES`) or a callable ``f(log_u)``.
      alpha, t: the parameter of ``amari_alpha`` / ``t_power``.

    Returns:
      Array of the same shape and dtype, ``>= 0``.

    Example:
      >>> import jax.numpy as jnp, jaxkl
      >>> l = jnp.array([-1.0, 0.5])
      >>> sym = jaxkl.csiszar_symmetrized(l, "reverse_kl")  # (KL(q||p) + KL(p||q)) / 2
      >>> bool(jnp.allclose(sym, jaxkl.csiszar(l, divergence="jeffreys")))
      True
    """
    return _transformed("symmetrized", log_ratio, f, alpha, t)
