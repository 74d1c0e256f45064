"""High-precision references for the estimator tests (Python's decimal, 50 digits).

Independent of jaxkl's kernels: written straight from the definitions f(r) - f'(1)(r - 1).
"""

from __future__ import annotations

import decimal

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
