"""High-precision references for the estimator tests (Python's decimal, 50 digits).

Independent of jaxkl's kernels: written straight from the definitions f(r) - f'(1)(r - 1).
"""

from __future__ import annotations

import decimal
import math

import numpy as np

decimal.getcontext().prec = 50
D = decimal.Decimal


def _exp(l: D) -> D:
    return l.exp()


def k3(l: D) -> D:
    return _exp(l) - 1 - l


def forward_kl(l: D) -> D:
    r = _exp(l)
    return r * l - (r - 1)


def jensen_shannon(l: D) -> D:
    u = _exp(l)
    return (u * l - (1 + u) * ((1 + u) / 2).ln()) / 2


def squared_hellinger(l: D) -> D:
    return (_exp(l / 2) - 1) ** 2


def total_variation(l: D) -> D:
    return abs(_exp(l) - 1) / 2


def pearson_chi2(l: D) -> D:
    return (_exp(l) - 1) ** 2


def amari_alpha(alpha: float):
    a = D(alpha)

    def f(l: D) -> D:
        u = _exp(l)
        return (_exp(a * l) - 1 - a * (u - 1)) / (a * (a - 1))

    return f


def evaluate(fn, values: np.ndarray) -> np.ndarray:
    """fn at each value (converted exactly from binary floating point), as float64."""
    return np.array([float(fn(D(float(v)))) for v in np.ravel(values)]).reshape(np.shape(values))


def ulp_error(got: np.ndarray, want: np.ndarray, dtype) -> np.ndarray:
    """|got - want| in units of the spacing of ``dtype`` at ``want``."""
    want_d = np.asarray(want, dtype)
    spacing = np.spacing(np.abs(want_d)).astype(np.float64)
    spacing = np.where(spacing > 0, spacing, np.finfo(dtype).tiny)
    return np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)) / spacing


reverse_kl = k3


# ---------------------------------------------------------------------------------------
# 50-digit mpmath references for every Csiszar divergence: the function f(u) and its
# derivative f'(u) as defined in the literature / TFP's vi.csiszar_divergence (JS with
# the 1/2 of the true Jensen-Shannon divergence), and the tangent-subtracted form
# g(l) = f(u) - f(1) - f'(1)(u - 1), g'(l) = u (f'(u) - f'(1)), u = e^l, built from them.
# ---------------------------------------------------------------------------------------

import mpmath  # noqa: E402

mpmath.mp.dps = 50
_mp = mpmath.mpf


def _sign(x):
    return (x > 0) - (x < 0)


def _amari_f(alpha):
    a = _mp(alpha)
    return (lambda u: (u**a - 1 - a * (u - 1)) / (a * (a - 1)),
            lambda u: (u ** (a - 1) - 1) / (a - 1))


def _t_power_f(t):
    t_ = _mp(t)
    s = -1 if 0 < t < 1 else 1
    return (lambda u: s * (u**t_ - 1 - t_ * (u - 1)), lambda u: s * t_ * (u ** (t_ - 1) - 1))


CSISZAR_F = {
    # name: (f(u), f'(u), f'(1) used)
    "reverse_kl": (lambda u: -mpmath.log(u), lambda u: -1 / u, None),
    "forward_kl": (lambda u: u * mpmath.log(u), lambda u: mpmath.log(u) + 1, None),
    "jensen_shannon": (
        lambda u: (u * mpmath.log(u) - (1 + u) * mpmath.log((1 + u) / 2)) / 2,
        lambda u: (mpmath.log(u) - mpmath.log((1 + u) / 2)) / 2,
        None,
    ),
    "squared_hellinger": (lambda u: (mpmath.sqrt(u) - 1) ** 2,
                          lambda u: 1 - 1 / mpmath.sqrt(u), None),
    "total_variation": (lambda u: abs(u - 1) / 2, lambda u: _sign(u - 1) / _mp(2), 0),
    "pearson_chi2": (lambda u: (u - 1) ** 2, lambda u: 2 * (u - 1), None),
    "chi_square": (lambda u: u**2 - 1, lambda u: 2 * u, None),
    "triangular": (lambda u: (u - 1) ** 2 / (1 + u),
                   lambda u: ((u - 1) * (u + 3)) / (1 + u) ** 2, None),
    "log1p_abs": (lambda u: (u if u >= 1 else 1 / u) - 1,
                  lambda u: _mp(1) if u > 1 else (-1 / u**2 if u < 1 else _mp(0)), 0),
    "jeffreys": (lambda u: (u - 1) * mpmath.log(u) / 2,
                 lambda u: (mpmath.log(u) + (u - 1) / u) / 2, None),
    "arithmetic_geometric": (
        lambda u: (1 + u) * mpmath.log((1 + u) / (2 * mpmath.sqrt(u))),
        lambda u: mpmath.log((1 + u) / (2 * mpmath.sqrt(u))) + 1 - (1 + u) / (2 * u),
        None,
    ),
    "modified_gan": (lambda u: mpmath.log(1 + u) - mpmath.log(u) + (u - 1) / 2,
                     lambda u: 1 / (1 + u) - 1 / u + _mp(1) / 2, None),
}


def csiszar_f(name: str, param: float | None = None):
    """(f, f', f'(1) or None) for a divergence name (``param``: alpha or t)."""
    if name == "amari_alpha":
        return (*_amari_f(param), None)
    if name == "t_power":
        return (*_t_power_f(param), None)
    return CSISZAR_F[name]


def tangent_form(name: str, param: float | None = None):
    """(g, g') of the log-ratio, as mpmath functions of an exact float ``l``."""
    f, fp, fp1 = csiszar_f(name, param)
    one = _mp(1)
    slope = fp(one) if fp1 is None else _mp(fp1)
    f1 = f(one)

    def g(l):
        if mpmath.isinf(l):
            return None  # limits are checked separately
        u = mpmath.exp(l)
        return f(u) - f1 - slope * (u - 1)

    def gp(l):
        u = mpmath.exp(l)
        return u * (fp(u) - slope)

    return g, gp


def mp_evaluate(fn, values) -> list:
    """fn at each float value (exact), as mpmath numbers (50 digits)."""
    return [fn(_mp(float(v))) for v in np.ravel(values)]


def _spacing(x: float, finfo) -> float:
    """The gap from |x| to the next larger number of the dtype (its ulp at x)."""
    tiny = float(finfo.smallest_subnormal)
    if x == 0:
        return tiny
    _, exponent = math.frexp(abs(x))  # |x| = m 2**exponent, 0.5 <= m < 1
    return max(math.ldexp(float(finfo.eps), exponent - 1), tiny)


def mp_ulp_error(got: np.ndarray, want: list, dtype) -> np.ndarray:
    """Error of ``got`` in ulps of ``dtype`` at the exact ``want``; a reference beyond
    the dtype's range must give ``inf`` of its sign (error 0), anything else is inf."""
    import jax.numpy as jnp

    finfo = jnp.finfo(dtype)
    got = np.ravel(np.asarray(got, np.float64))
    big = float(finfo.max)
    # Round-to-nearest overflows from max + half an ulp at max on (in mpmath: the sum
    # itself would round to inf in float64).
    overflow = _mp(big) + _mp(math.ldexp(float(finfo.eps), math.frexp(big)[1] - 1)) / 2
    tiny = float(finfo.tiny)
    out = np.empty(len(want))
    for i, (x, w) in enumerate(zip(got, want, strict=True)):
        if abs(w) >= overflow:
            out[i] = 0.0 if x == float(mpmath.sign(w)) * np.inf else np.inf
        elif not np.isfinite(x):
            out[i] = np.inf
        elif abs(w) < tiny:
            # XLA flushes subnormal results to zero on CPU: below the smallest normal
            # number the error is counted in units of that number (0 or the subnormal
            # itself both count as < 1).
            out[i] = float(abs(_mp(x) - w) / tiny)
        else:
            rounded = float(np.asarray(float(w), np.float64).astype(dtype))
            out[i] = float(abs(_mp(x) - w) / _spacing(rounded, finfo))
    return out


def csiszar_ulps(name: str, param, dtype, grid) -> tuple[np.ndarray, np.ndarray]:
    """Ulp errors of ``jaxkl.csiszar`` (jitted) and of its gradient at each point of
    ``grid`` (cast to ``dtype``; bf16 is computed in float32 and rounded once), against
    the 50-digit tangent form of ``name``."""
    import jax
    import jax.numpy as jnp

    import jaxkl

    kw = {} if param is None else {"alpha" if name == "amari_alpha" else "t": param}

    def fn(l):
        return jaxkl.csiszar(l, divergence=name, **kw)

    with jax.enable_x64(jnp.dtype(dtype) == jnp.float64):
        x = jnp.asarray(grid, dtype)
        values = np.asarray(jax.jit(fn)(x), np.float64)
        grads = np.asarray(jax.jit(jax.vmap(jax.grad(fn)))(x), np.float64)
        exact = np.asarray(x, np.float64)
    g, gp = tangent_form(name, param)
    return (mp_ulp_error(values, mp_evaluate(g, exact), dtype),
            mp_ulp_error(grads, mp_evaluate(gp, exact), dtype))
