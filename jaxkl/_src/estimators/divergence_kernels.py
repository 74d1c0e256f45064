r"""Kernels of the Csiszar f-divergences in tangent-subtracted form, with exact JVPs.

Each kernel maps the log-ratio ``l`` to ``g(l) = f(u) - f(1) - f'(1)(u - 1)`` at
``u = exp(l)`` and has a custom JVP whose derivative ``g'(l) = u f'(u) - f'(1) u`` is
computed from its own formula. The contract, for value and derivative alike: the exact
value at the input (a float, taken as exact) rounded to the dtype to a few ulps, and
``inf`` exactly where that exact value exceeds the dtype's range (no intermediate
overflows first, no ``inf - inf``). ``l = -inf`` (``p(x) = 0``) and ``l = +inf`` give the
limits; NaN stays NaN.

How the accuracy is kept:

- Near ``l = 0`` every ``g`` is a difference of nearly equal terms; each kernel uses a
  rearrangement whose terms have one sign (``expm1``-type functions, products, a log
  cosh) or a Taylor series.
- Where a product ``c * exp(a l)`` would overflow before the exact result does, the
  exponent is shifted by an integer (exact in floating point) and the factor ``c e^s``
  taken as a constant.
- For the Amari family, ``a * l`` is not rounded before ``exp``: it is split into
  ``p + e`` with ``p = fl(a l)`` and ``e`` its rounding error (Dekker's product with
  bit-masked halves), and ``exp(a l) = exp(p) (1 + e)``. Rounding ``a l`` first would
  cost up to ``|a l|/2`` ulps (e.g. 5 ulps at ``a l = 10``).

The derivative formulas are the exact ones; their accuracy is measured against 50-digit
references on the same grid as the values (scripts/csiszar_ulp_table.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from jaxkl._src import numerics

Array = jax.Array

_LOG2 = math.log(2.0)
INF = math.inf


def _expm1(x: Array) -> Array:
    """``expm1`` from the shared Taylor series inside |x| < 1 (0.8 ulp in float32, where
    XLA:CPU's expm1 reaches 3 ulps), ``exp(x) - 1`` outside."""
    return numerics.expm1mx_and_derivative(x)[1]


def _tanh_half(l: Array) -> Array:
    """``tanh(l/2) = sign(l) (1 - e^-|l|) / (1 + e^-|l|)`` from the series expm1: 2.3 ulps
    (max over |l| <= 6, float32 and float64, against mpmath), XLA:CPU's tanh 3.0."""
    m = _expm1(-jnp.abs(l))
    return jnp.sign(l) * (-m / (2 + m))


def _const(value: float, like: Array) -> Array:
    """A Python constant as a 0-d array of ``like``'s dtype (rounded once)."""
    return jnp.asarray(value, like.dtype)


def _exact_limits(value_fn, derivative_fn, limits):
    """Wraps value and derivative so that ``l = +-inf`` give the stated limits.

    The formulas run on ``l`` with infinities replaced by 0 (so that no ``inf - inf`` or
    ``0 * inf`` arises there); the selects put the limits back. NaN stays NaN.
    """
    (value_lo, deriv_lo), (value_hi, deriv_hi) = limits

    def finite_input(l):
        return jnp.where(jnp.isinf(l), jnp.zeros_like(l), l)

    def select(l, out, lo, hi):
        out = jnp.where(l == -jnp.inf, _const(lo, out), out)
        return jnp.where(l == jnp.inf, _const(hi, out), out)

    def value(l):
        return select(l, value_fn(finite_input(l)), value_lo, value_hi)

    def derivative(l):
        return select(l, derivative_fn(finite_input(l)), deriv_lo, deriv_hi)

    return value, derivative


def make_kernel(name: str, value_fn, derivative_fn, limits,
                slope_at_infinity: float = INF) -> Callable[[Array], Array]:
    """A kernel ``l -> g(l)`` whose JVP is ``derivative_fn(l) * dl`` (both exact).

    ``limits`` are ``((g(-inf), g'(-inf)), (g(+inf), g'(+inf)))``; ``slope_at_infinity``
    is ``f'(inf) - f'(1) = lim g(l) / e^l`` as ``l -> inf``, the value of the dual
    ``e^l g(-l)`` at ``l = -inf``.
    """
    value, derivative = _exact_limits(value_fn, derivative_fn, limits)

    @jax.custom_jvp
    def kernel(l):
        return value(l)

    @kernel.defjvp
    def _jvp(primals, tangents):
        (l,), (dl,) = primals, tangents
        return value(l), derivative(l) * dl

    kernel.__name__ = name
    kernel.__qualname__ = name
    kernel.derivative = derivative
    kernel.slope_at_infinity = slope_at_infinity
    return kernel


# ---------------------------------------------------------------------------------------
# Overflow-safe exponentials and exact exponents.
# ---------------------------------------------------------------------------------------


def _shift_for(dtype) -> tuple[float, float]:
    """(threshold, shift): exponents beyond +-threshold are evaluated as exp(p -+ shift)
    with e**(+-shift) folded into the factor, so that exp neither overflows nor is
    flushed to zero (XLA flushes subnormals) before the product does."""
    if jnp.finfo(dtype).bits == 64:
        return 512.0, 512.0
    return 64.0, 64.0


def _bits_mask(dtype) -> tuple[type, int]:
    """An unsigned type of the float's width and the mask keeping the high half of the
    significand (12 of 24 bits in float32, 26 of 53 in float64): products of two high
    halves are exact."""
    if jnp.finfo(dtype).bits == 64:
        return jnp.uint64, ~((1 << 27) - 1) & ((1 << 64) - 1)
    return jnp.uint32, ~((1 << 12) - 1) & ((1 << 32) - 1)


def _high_half(x: Array) -> Array:
    unsigned, mask = _bits_mask(x.dtype)
    bits = jax.lax.bitcast_convert_type(x, unsigned) & jnp.asarray(mask, unsigned)
    return jax.lax.bitcast_convert_type(bits, x.dtype)


def exact_product(a: float, l: Array) -> tuple[Array, Array]:
    """``(p, e)`` with ``p = fl(a l)`` and ``a l = p + e`` to ~2**-40 relative.

    ``a`` is a Python float (double): it is taken as ``a1 + a2`` in the dtype. Dekker's
    product ``a1 * l`` with halves split by masking bits gives the rounding error of
    ``p`` exactly (each partial product is exact); ``a2 * l`` adds the part of ``a``
    the dtype cannot hold.
    """
    if a == 1.0:
        return l, jnp.zeros_like(l)
    a1 = np.asarray(a, l.dtype)
    a2 = _const(float(a - float(a1)), l)
    a1_hi = _high_half(jnp.asarray(a1))
    a1_lo = jnp.asarray(a1) - a1_hi
    l_hi = _high_half(l)
    l_lo = l - l_hi
    p = jnp.asarray(a1) * l
    # (a1_hi l_hi - p) is exact (Sterbenz); the other partial products are exact too.
    e = ((a1_hi * l_hi - p) + a1_hi * l_lo + a1_lo * l_hi) + a1_lo * l_lo
    return p, e + a2 * l


def exp_scaled(p: Array, factor) -> Array:
    """``exp(p) * factor`` for an exact exponent ``p``: beyond +-threshold the exponent is
    moved by an integer (exact there) and ``e**shift`` joins the factor, so the result is
    infinite (or flushed to 0) only where the product itself is."""
    threshold, shift = _shift_for(p.dtype)
    high, low = p > threshold, p < -threshold
    moved = jnp.where(high, p - shift, jnp.where(low, p + shift, p))
    scale = jnp.where(high, _const(math.exp(shift), p),
                      jnp.where(low, _const(math.exp(-shift), p), _const(1.0, p)))
    return jnp.exp(moved) * (factor * scale)


def exp_times(a: float, l: Array, factor, down=None) -> Array:
    """``exp(a l - down) * factor`` with ``a l`` exact (``down``: 0 or an integer shift
    of the whole computation, see _amari)."""
    p, e = exact_product(a, l)
    if down is not None:
        p = p - down
    return exp_scaled(p, factor * (1 + e))


def expm1_times(a: float, l: Array, c: float, down=None) -> Array:
    """``c * (exp(a l - down) - exp(-down))`` (``c expm1(a l)`` for ``down = 0``), with
    ``a l`` exact and no early overflow."""
    p, e = exact_product(a, l)
    large = p > 1
    if down is not None:
        large = large | (down > 0)
    ps = jnp.where(large, jnp.zeros_like(p), p)
    # expm1(p + e) = expm1(p) + exp(p) expm1(e), expm1(e) = e to within e**2.
    small = _const(c, l) * (_expm1(ps) + jnp.exp(ps) * e)
    # Beyond p = 1, c e^(a l) - c has no cancellation and keeps the overflow exact.
    offset = _const(c, l) if down is None else _const(c, l) * jnp.exp(-down)
    return jnp.where(large, exp_times(a, l, _const(c, l), down) - offset, small)


# ---------------------------------------------------------------------------------------
# Elementary pieces.
# ---------------------------------------------------------------------------------------


def logcosh(x: Array) -> Array:
    """``log(cosh(x))`` to a few ulps: ``log1p((e^|x| - 1)^2 / (2 e^|x|))`` for |x| < 1
    (no cancellation: cosh x - 1 = expm1(|x|)^2 / (2 e^|x|)), else
    ``|x| - log 2 + log1p(e^(-2|x|))`` (no overflow)."""
    a = jnp.abs(x)
    inside = a < 1
    ai = jnp.where(inside, a, jnp.zeros_like(a))
    near = jnp.log1p(jnp.square(_expm1(ai)) / (2 * jnp.exp(ai)))
    far = (a - _const(_LOG2, x)) + jnp.log1p(jnp.exp(-2 * a))
    return jnp.where(inside, near, far)


def log_two_sigmoid(x: Array) -> Array:
    """``log(2 sigmoid(x)) = log(2 u / (1 + u))`` at ``u = e^x``, to a few ulps:
    ``log1p(tanh(x/2))`` inside |x| < 1/2, ``log 2 - softplus(-x)`` outside (where the
    two terms cancel by at most a factor ~3). The radius keeps log1p's argument within
    (-0.25, 0.25): XLA:CPU's float64 log1p is 50 ulps off near -0.4 (measured against
    mpmath), and 2 ulps within 0.25."""
    inside = jnp.abs(x) < 0.5
    xi = jnp.where(inside, x, jnp.zeros_like(x))
    return jnp.where(inside, jnp.log1p(_tanh_half(xi)),
                     _const(_LOG2, x) - jax.nn.softplus(-x))


# ---------------------------------------------------------------------------------------
# The divergences.
# ---------------------------------------------------------------------------------------

def _reverse_kl_value(l):
    return numerics.expm1mx_and_derivative(l)[0]


def _reverse_kl_derivative(l):
    return numerics.expm1mx_and_derivative(l)[1]


def _forward_kl_value(l):
    return numerics.xexpx_minus_expm1(l)


def _forward_kl_derivative(l):
    # l e^l is a normal number at l = -90 in float32 while e^-90 is subnormal (flushed
    # to 0 by XLA): exp_scaled moves the exponent.
    return exp_scaled(l, l)


def _js_value(l):
    # (1 + u)/4 * B with B the bracket of jaxkl.numerics.js_f; for l > 1 written as
    # exp(l - 2) (e^2 / 4)(1 + e^-l) B so that it overflows only where the value does
    # (~0.35 e^l), not where e^l does.
    bracket = numerics.js_bracket(l, _tanh_half(l))
    near = (1 + jnp.exp(jnp.minimum(l, 1))) / 4 * bracket
    far = exp_scaled(l, (1 + jnp.exp(-l)) * bracket / 4)
    return jnp.where(l > 1, far, near)


def _js_derivative(l):
    # g' = (u / 2) log(2u / (1 + u)).
    return exp_scaled(l, log_two_sigmoid(l) / 2)


def _hellinger_value(l):
    return jnp.square(_expm1(l / 2))


def _hellinger_derivative(l):
    return _expm1(l / 2) * jnp.exp(l / 2)


def _tv_value(l):
    # |u - 1| / 2; for l > 1 as e^l (1 - e^-l) / 2 without overflowing early.
    near = jnp.abs(_expm1(jnp.minimum(l, 1))) / 2
    far = exp_scaled(l, -_expm1(-l) / 2)
    return jnp.where(l > 1, far, near)


def _tv_derivative(l):
    # sign(u - 1) u / 2, with the subgradient 0 at u = 1 (the f'(1) used).
    return jnp.sign(l) * exp_scaled(l, _const(0.5, l))


def _pearson_value(l):
    return jnp.square(_expm1(l))


def _pearson_derivative(l):
    return exp_scaled(l, 2 * _expm1(l))


def _triangular_value(l):
    # (u - 1)^2 / (1 + u) = expm1(l) tanh(l/2): a product, no cancellation.
    return _expm1(l) * _tanh_half(l)


def _triangular_derivative(l):
    # e^l tanh(l/2) + expm1(l) sech^2(l/2) / 2 = tanh(l/2) (e^l + 2 sigmoid(l)).
    # = e^l tanh(l/2) (1 + 2 sigmoid(-l)), as sigmoid(l) = e^l sigmoid(-l).
    return exp_scaled(l, _tanh_half(l) * (1 + 2 * jax.nn.sigmoid(-l)))


def _log1p_abs_value(l):
    # u^sign(u - 1) - 1 = expm1(|l|); f has a kink at u = 1, the subgradient 0 is used.
    return _expm1(jnp.abs(l))


def _log1p_abs_derivative(l):
    return jnp.sign(l) * jnp.exp(jnp.abs(l))


def _jeffreys_value(l):
    # (u - 1) log(u) / 2: a product of two terms of one sign.
    return (l / 2) * _expm1(l)


def _jeffreys_derivative(l):
    # (expm1(l) + l e^l) / 2: both terms have the sign of l. Beyond l = 1 as
    # e^l (1 + l)/2 - 1/2, whose first term overflows only where the result does.
    near = (_expm1(jnp.minimum(l, 1)) + l * jnp.exp(jnp.minimum(l, 1))) / 2
    return jnp.where(l > 1, exp_scaled(l, (1 + l) / 2) - 0.5, near)


def _ag_value(l):
    # (1 + u) log((1 + u) / (2 sqrt u)) = (1 + u) log cosh(l/2); for l > 1 as
    # e^l (1 + e^-l) logcosh(l/2): where e^l overflows (l > 88) the second factor is ~43,
    # so the value overflows too.
    near = (1 + jnp.exp(jnp.minimum(l, 1))) * logcosh(l / 2)
    far = exp_scaled(l, (1 + jnp.exp(-l)) * logcosh(l / 2))
    return jnp.where(l > 1, far, near)


def _ag_derivative(l):
    # e^l logcosh(l/2) + (1 + e^l) tanh(l/2) / 2; for l < 0 the second term dominates
    # (|tanh(l/2)|/2 > logcosh(l/2) e^l/(1 + e^l)), so no cancellation beyond a factor ~1.5.
    u = jnp.exp(jnp.minimum(l, 1))
    near = u * logcosh(l / 2) + (1 + u) * _tanh_half(l) / 2
    far = exp_scaled(l, logcosh(l / 2) + (1 + jnp.exp(-l)) * _tanh_half(l) / 2)
    return jnp.where(l > 1, far, near)


def _modified_gan_value(l):
    # log(1 + u) - log u - log 2 + (u - 1)/2 = (e^l - 1 - l)/2 + logcosh(l/2): two
    # non-negative terms. (e^l - 1 - l)/2 overflows only where e^l / 2 does.
    k3, _ = numerics.expm1mx_and_derivative(jnp.minimum(l, 2))
    far = exp_scaled(l, _const(0.5, l)) - (1 + l) / 2
    return jnp.where(l > 2, far, k3 / 2) + logcosh(l / 2)


def _modified_gan_derivative(l):
    # expm1(l)/2 + tanh(l/2)/2: both terms have the sign of l.
    far = exp_scaled(l, _const(0.5, l)) - 0.5
    near = _expm1(jnp.minimum(l, 2)) / 2
    return jnp.where(l > 2, far, near) + _tanh_half(l) / 2


# ---------------------------------------------------------------------------------------
# The Amari alpha family (and t-power, a multiple of it).
# ---------------------------------------------------------------------------------------


def _series_coefficients(alpha: float, scale: float, radius: float, eps: float) -> list[float]:
    """``scale * c_n / n!`` for n >= 2, ``c_n = 1 + alpha + ... + alpha**(n-2)``, exact
    rationals rounded once, until the tail is below eps/64 of the first term at the
    radius."""
    a = Fraction(alpha)
    out = []
    c = Fraction(0)
    bound = 0.0  # |c_n| <= 1 + |a| + ... + |a|**(n-2), a bound for every later term too
    n = 2
    first = abs(scale) / 2 * radius**2
    while True:
        c = c + a ** (n - 2)
        bound += abs(alpha) ** (n - 2)
        out.append(float(Fraction(scale) * c / math.factorial(n)))
        # The tail beyond n is below twice its first term once that term decreases fast.
        tail = abs(scale) * bound * max(1.0, abs(alpha)) * radius ** (n + 1) / math.factorial(
            n + 1)
        if n > 4 and 2 * tail < eps / 64 * first or n > 400:
            return out
        n += 1


def _amari(alpha: float, scale: float) -> tuple[Callable, Callable, tuple]:
    """Value, derivative and limits of ``scale * (u**a - 1 - a(u - 1)) / (a(a - 1))``."""
    beta = 1.0 - alpha
    big = max(1.0, abs(alpha), abs(beta))
    radius = 2.0 / big
    # The series of g_alpha has terms of one sign for l > 0 when alpha >= -1; for
    # l < 0 the dual identity g_alpha(l) = e^l g_beta(-l) gives the same when
    # beta >= -1 (alpha <= 2). Elsewhere the alternating series is used on half the
    # radius, where its terms cancel by at most a factor e.
    direct_positive = alpha >= -1
    dual_negative = beta >= -1
    radius_pos = radius if direct_positive else radius / 2
    radius_neg = radius if dual_negative else radius / 2

    def series(l, gamma, r):
        eps = float(jnp.finfo(l.dtype).eps)
        coefficients = _series_coefficients(gamma, scale, r, eps)
        return l * l * numerics.horner(coefficients, l)

    def value(l):
        inside_pos = (l >= 0) & (l < radius_pos)
        inside_neg = (l < 0) & (l > -radius_neg)
        lp = jnp.where(inside_pos, l, jnp.zeros_like(l))
        ln = jnp.where(inside_neg, l, jnp.zeros_like(l))
        near_pos = series(lp, alpha, radius_pos)
        if dual_negative:
            near_neg = jnp.exp(ln) * series(-ln, beta, radius_neg)
        else:
            near_neg = series(ln, alpha, radius_neg)
        lf = jnp.where(inside_pos | inside_neg, jnp.ones_like(l), l)
        # Where the dominant exponent max(l, a l) is large, both terms are computed with
        # it lowered by an integer (exact) and the difference raised again at the end:
        # the terms may exceed the range where their difference does not.
        threshold, shift = _shift_for(l.dtype)
        big = jnp.maximum(lf, alpha * lf) > threshold
        down = jnp.where(big, _const(shift, l), _const(0.0, l))
        if alpha < 0.5:
            # (expm1(a l) - a expm1(l)) / (a (a - 1)): for a <= 1/2 the two terms never
            # cancel by more than a factor ~3 outside the series radius.
            t1 = expm1_times(alpha, lf, scale / (alpha * (alpha - 1)), down)
            t2 = expm1_times(1.0, lf, scale / (alpha - 1), down)
        else:
            # The dual arrangement (g'(l) - expm1(l)) / a for a >= 1/2.
            t1 = _amari_derivative_scaled(alpha, lf, scale / alpha, down)
            t2 = expm1_times(1.0, lf, scale / alpha, down)
        scaled = jnp.where(jnp.isinf(t1) | jnp.isinf(t2), jnp.inf, t1 - t2)
        far = scaled * jnp.where(big, _const(math.exp(shift), l), _const(1.0, l))
        return jnp.where(inside_pos, near_pos, jnp.where(inside_neg, near_neg, far))

    def derivative(l):
        return _amari_derivative_scaled(alpha, l, scale)

    # u -> 0: scale/a for a > 0 (+inf for a < 0); u -> inf: +inf. g'(-inf): 0 for
    # a > 0, -inf for a < 0; g'(+inf) = +inf.
    at_zero = scale / alpha if alpha > 0 else INF
    deriv_at_zero = 0.0 if alpha > 0 else -INF
    limits = ((at_zero, deriv_at_zero), (INF, INF))
    return value, derivative, limits


def _amari_derivative_scaled(alpha: float, l: Array, c: float, down=None) -> Array:
    """``c (e^l - e^(a l)) / (1 - a)`` (times ``e^-down``) as a product with the dominant
    exponential outside: ``e^(a l) expm1(b l)/b`` where ``b l <= 0``, else
    ``e^l (-expm1(-b l))/b`` (b = 1 - a): the expm1 factor lies in (-1, 0] either way,
    so nothing cancels, and exp_times keeps overflow and underflow exact."""
    beta = 1.0 - alpha
    p, _ = exact_product(beta, l)
    use_alpha = p <= 0
    # expm1 of the non-positive exponent +-b l, each with its exact rounding error.
    neg = expm1_times(beta, jnp.where(use_alpha, l, jnp.zeros_like(l)), c / beta)
    pos = -expm1_times(-beta, jnp.where(use_alpha, jnp.zeros_like(l), l), c / beta)
    return jnp.where(use_alpha, exp_times(alpha, l, neg, down), exp_times(1.0, l, pos, down))


def amari_kernel(alpha: float, *, scale: float = 1.0, name: str = "amari_alpha"):
    """The kernel of ``scale * f_a``, f_a Amari's alpha function (a != 0, 1)."""
    value, derivative, limits = _amari(alpha, scale)
    slope = scale / (1.0 - alpha) if alpha < 1 else INF
    return make_kernel(name, value, derivative, limits, slope)


KERNELS: dict[str, Callable[[Array], Array]] = {
    "reverse_kl": make_kernel("reverse_kl", _reverse_kl_value, _reverse_kl_derivative,
                              ((INF, -1.0), (INF, INF)), 1.0),
    "forward_kl": make_kernel("forward_kl", _forward_kl_value, _forward_kl_derivative,
                              ((1.0, 0.0), (INF, INF))),
    "jensen_shannon": make_kernel("jensen_shannon", _js_value, _js_derivative,
                                  ((_LOG2 / 2, 0.0), (INF, INF)), _LOG2 / 2),
    "squared_hellinger": make_kernel("squared_hellinger", _hellinger_value,
                                     _hellinger_derivative, ((1.0, 0.0), (INF, INF)), 1.0),
    "total_variation": make_kernel("total_variation", _tv_value, _tv_derivative,
                                   ((0.5, 0.0), (INF, INF)), 0.5),
    "pearson_chi2": make_kernel("pearson_chi2", _pearson_value, _pearson_derivative,
                                ((1.0, 0.0), (INF, INF))),
    "chi_square": make_kernel("chi_square", _pearson_value, _pearson_derivative,
                              ((1.0, 0.0), (INF, INF))),
    "triangular": make_kernel("triangular", _triangular_value, _triangular_derivative,
                              ((1.0, 0.0), (INF, INF)), 1.0),
    "log1p_abs": make_kernel("log1p_abs", _log1p_abs_value, _log1p_abs_derivative,
                             ((INF, -INF), (INF, INF)), 1.0),
    "jeffreys": make_kernel("jeffreys", _jeffreys_value, _jeffreys_derivative,
                            ((INF, -0.5), (INF, INF))),
    "arithmetic_geometric": make_kernel("arithmetic_geometric", _ag_value, _ag_derivative,
                                        ((INF, -0.5), (INF, INF))),
    "modified_gan": make_kernel("modified_gan", _modified_gan_value, _modified_gan_derivative,
                                ((INF, -1.0), (INF, INF)), 0.5),
}
