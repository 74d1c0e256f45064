"""Csiszar f-divergences D_f(p||q) = E_q[f(p/q)] in tangent-subtracted form
f(r) - f(1) - f'(1)(r - 1) >= 0 (for convex f), each written in l for accuracy near
l = 0; the kernels are in :mod:`divergence_kernels` (see :mod:`jaxkl.estimators`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxkl._src import numerics, vocabulary
from jaxkl._src.estimators import divergence_kernels
from jaxkl._src.estimators.kl import apply_kernel
from jaxkl._src.validation import check_float_array

Array = jax.Array


PARAMETERS = vocabulary.DIVERGENCE_PARAMETERS

F_DIVERGENCES: dict[str, Callable[[Array], Array]] = {
    name: divergence_kernels.KERNELS[name] for name in vocabulary.PARAMETER_FREE_DIVERGENCES
}
"""Kernels ``l -> f(e^l) - f(1) - f'(1)(e^l - 1)`` of the parameter-free divergences."""

DIVERGENCE_NAMES = vocabulary.DIVERGENCES


def check_parameter(value: float, name: str) -> float:
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
    return divergence_kernels.amari_kernel(alpha)


@functools.lru_cache(maxsize=256)
def _t_power(t: float) -> Callable[[Array], Array]:
    # s (u**t - 1 - t(u - 1)) = |t (t - 1)| f_t(u) with f_t Amari's function, s the sign
    # that makes it convex; t = 0 and t = 1 give f = 0.
    scale = abs(t * (t - 1.0))
    if scale == 0.0:
        return divergence_kernels.make_kernel("t_power", jnp.zeros_like, jnp.zeros_like,
                                    ((0.0, 0.0), (0.0, 0.0)), 0.0)
    return divergence_kernels.amari_kernel(t, scale=scale, name="t_power")


def f_divergence_fn(divergence: str | Callable[[Array], Array], *, alpha: float | None = None,
                    t: float | None = None) -> Callable[[Array], Array]:
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
        return jnp.asarray(f(l), l.dtype) - f0 - slope * numerics.expm1(l)

    kernel.__name__ = getattr(f, "__name__", "csiszar_function")
    return kernel


def csiszar(log_ratio: ArrayLike, *, divergence: str | Callable[[Array], Array] = "reverse_kl",
            alpha: float | None = None, t: float | None = None) -> Array:
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
    ``log1p_abs``            ``u**sign(u - 1) - 1``                      log1p(f) = ``|log u|``
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
    return apply_kernel(f_divergence_fn(divergence, alpha=alpha, t=t), log_ratio)


def _dual_kernel(g: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """``l -> e^l g(-l)``: the tangent form of the dual ``u f(1/u)`` (exact identity).

    Beyond ``l = shift + 1`` the product is formed as ``e^(l - shift) (e^shift g(-l))``
    so that it overflows only where it must; ``e^l = 0`` (``l = -inf``) times an
    infinite ``g(+inf)`` is left as the formula gives it (NaN) unless ``g`` is one of
    jaxkl's kernels, whose limits are known (see csiszar_dual).
    """

    def kernel(l):
        threshold, shift = divergence_kernels._shift_for(l.dtype)
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

    return apply_kernel(kernel, log_ratio)


def csiszar_dual(log_ratio: ArrayLike, f: str | Callable[[Array], Array], *,
                 alpha: float | None = None, t: float | None = None) -> Array:
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


def csiszar_symmetrized(log_ratio: ArrayLike, f: str | Callable[[Array], Array], *,
                        alpha: float | None = None, t: float | None = None) -> Array:
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
