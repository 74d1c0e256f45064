"""Accurate elementary functions that the estimators share.

The KL estimators are differences of nearly equal numbers near ``l = 0``: for example
``k3 = expm1(l) - l`` cancels to ``l**2 / 2``. Evaluated naively in float32, every digit
is lost once ``|l| < 1e-4``. Here each such function switches to its Taylor series
inside ``|l| < 1`` (where the series converges fast and all cancellation happens), with
the number of terms picked from the dtype so that the truncation error is below one ulp.

All functions have custom JVPs with the exact derivative, so gradients are accurate and
finite wherever the value is.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# |x| below this uses the series; above it the direct formula has at most ~3 ulps of
# cancellation error (checked by the tests against float64/mpmath-free series).
_SERIES_RADIUS = 1.0


def _num_terms(dtype) -> int:
    """Taylor terms so that the tail (bounded by 2/n!) is below half an ulp at |x| = 1."""
    eps = float(jnp.finfo(dtype).eps)
    n = 2
    while 2.0 / math.factorial(n) > eps / 4:
        n += 1
    return n


def horner(coefficients, x):
    """Evaluates sum_k coefficients[k] * x**k by Horner's rule (coefficients static)."""
    acc = jnp.full_like(x, coefficients[-1])
    for c in coefficients[-2::-1]:
        acc = acc * x + c
    return acc


def _series_input(x):
    """x inside the series radius, 0 outside (so the unused branch never overflows)."""
    inside = jnp.abs(x) < _SERIES_RADIUS
    return inside, jnp.where(inside, x, jnp.zeros_like(x))


@jax.custom_jvp
def expm1(x):
    """``jnp.expm1`` whose derivative is ``exp(x)`` computed directly.

    JAX differentiates expm1 as ``expm1(x) + 1``, which rounds to 0 for x < -37 (float64)
    and loses relative accuracy long before; estimator gradients need it exact.
    """
    return jnp.expm1(x)


@expm1.defjvp
def _expm1_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return jnp.expm1(x), jnp.exp(x) * dx


def expm1mx_and_derivative(x):
    """``(exp(x) - 1 - x, expm1(x))``, sharing one Taylor series.

    Inside ``|x| < 1``: ``s = x**2 * sum_{n>=2} x**(n-2) / n!`` and ``expm1 = s + x`` (the
    two terms never cancel badly: ``|s| < |x| / 2`` for a negative ``x``; 0.76 ulp in
    float32 against XLA:CPU's ``expm1`` at 3.2 ulp). Outside: the direct
    ``exp(x) - 1 - x`` (at most ~4 ulps lost, at ``|x| = 1``; XLA's CPU ``exp`` is ~1.7x
    faster than its ``expm1``) and ``expm1(x)``.
    """
    inside, xs = _series_input(x)
    n = _num_terms(x.dtype)
    coefficients = [1.0 / math.factorial(k + 2) for k in range(n - 1)]
    series = xs * xs * horner(coefficients, xs)
    value = jnp.where(inside, series, (jnp.exp(x) - 1) - x)
    # expm1, not the value's exp(x) - 1: given one shared exp, XLA:CPU writes it to memory
    # for the value's pass and the gradient's pass to read (seen in the compiled HLO of
    # token_kl's value_and_grad) instead of computing it inside both.
    derivative = jnp.where(inside, series + x, jnp.expm1(x))
    return value, derivative


@jax.custom_jvp
def expm1mx(x):
    """``exp(x) - 1 - x`` to a few ulps everywhere (the k3 kernel).

    Inside ``|x| < 1``: ``x**2 * sum_{n>=2} x**(n-2) / n!``; outside: ``exp(x) - 1 - x``.
    Its derivative ``expm1(x)`` is accurate to a few ulps as well.
    """
    return expm1mx_and_derivative(x)[0]


@expm1mx.defjvp
def _expm1mx_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    value, derivative = expm1mx_and_derivative(x)
    return value, derivative * dx


@jax.custom_jvp
def xexpx_minus_expm1(x):
    """``x*exp(x) - (exp(x) - 1) = exp(x)*(x - 1) + 1`` to a few ulps (forward-KL kernel).

    Inside ``|x| < 1``: ``x**2 * sum_{n>=2} (n-1)/n! x**(n-2)``; outside the direct form,
    whose two terms have the same sign for ``x > 1`` and lose at most ~2 ulps for ``x < -1``.
    """
    inside, xs = _series_input(x)
    n = _num_terms(x.dtype) + 1
    coefficients = [(k + 1) / math.factorial(k + 2) for k in range(n - 1)]
    series = xs * xs * horner(coefficients, xs)
    return jnp.where(inside, series, jnp.exp(x) * (x - 1) + 1)


@xexpx_minus_expm1.defjvp
def _xexpx_minus_expm1_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return xexpx_minus_expm1(x), x * jnp.exp(x) * dx


def _js_series_coefficients(dtype):
    """(1+t)log(1+t) + (1-t)log(1-t) = sum_{k>=1} t**(2k) / (k (2k-1)), in powers of t**2."""
    eps = float(jnp.finfo(dtype).eps)
    coefficients = []
    k = 1
    # |t| < 1/2 in this branch, so the k-th term is at most 4**-k / (k (2k-1)).
    while True:
        coefficients.append(1.0 / (k * (2 * k - 1)))
        if 0.25**k / (k * (2 * k - 1)) < eps / 8:
            break
        k += 1
    return coefficients


def js_bracket(x, t):
    """``(1+t)log(1+t) + (1-t)log(1-t)`` at ``t = tanh(x/2)``: an even series in ``t`` with
    positive coefficients for ``|t| < 1/2``; outside, the logs are rewritten with
    softplus so that neither ``1 - t`` nor ``log(1 - t)`` underflows."""
    inside = jnp.abs(t) < 0.5
    ts = jnp.where(inside, t, jnp.zeros_like(t))
    coefficients = _js_series_coefficients(x.dtype)
    series = ts * ts * horner(coefficients, ts * ts)
    log2 = np.log(2.0).astype(x.dtype)
    one_plus_t = 2 * jax.nn.sigmoid(x)
    one_minus_t = 2 * jax.nn.sigmoid(-x)
    direct = one_plus_t * (log2 - jax.nn.softplus(-x)) + one_minus_t * (
        log2 - jax.nn.softplus(x)
    )
    return jnp.where(inside, series, direct)


def js_f(x):
    """Jensen-Shannon generator at ratio ``u = exp(x)``, accurate near ``x = 0``.

    ``f(u) = [u log u - (1 + u) log((1 + u) / 2)] / 2``, written with ``t = tanh(x/2)`` as
    ``f = (1 + u)/4 * [(1+t) log(1+t) + (1-t) log(1-t)]`` (see :func:`js_bracket`).
    """
    return (1 + jnp.exp(x)) / 4 * js_bracket(x, jnp.tanh(x / 2))


# ---- 16-bit inputs sliced in a loop -------------------------------------------------


def as_storage_bits(x: jax.Array) -> jax.Array:
    """16-bit floats as their uint16 bits, so that a loop's slices of them stay 16-bit.

    XLA:CPU has no bf16 arithmetic: a bf16 array that a loop slices and upcasts gets a
    float32 copy of the whole array hoisted out of the loop (200% of the input). Slicing
    the bits costs one uint16 copy instead (100%); BENCHMARKS.md lists what else was
    tried. Other dtypes are returned as they are. :func:`from_storage_bits` reads a slice
    back.
    """
    return jax.lax.bitcast_convert_type(x, jnp.uint16) if x.dtype.itemsize == 2 else x


def from_storage_bits(block: jax.Array, dtype, compute) -> jax.Array:
    """A slice of :func:`as_storage_bits` of a ``dtype`` array, as ``compute`` floats
    (bf16 -> float32 is exact: the bits shifted left by 16)."""
    if dtype == jnp.bfloat16:
        bits = jax.lax.shift_left(block.astype(jnp.uint32), jnp.uint32(16))
        return jax.lax.bitcast_convert_type(bits, jnp.float32).astype(compute)
    if jnp.dtype(dtype).itemsize == 2:
        return jax.lax.bitcast_convert_type(block, dtype).astype(compute)
    return block.astype(compute)
