"""Independent references for KL(q||p) between 1-D and 2-D Gaussian mixtures (float64).

Written from the definitions, sharing no code with jaxkl:

- 1-D: ``scipy.integrate.quad`` on every piece between breakpoints;
- 2-D: ``scipy.integrate.quad_vec`` over x (with breakpoints) of the integral over y at
  that x, which is a composite Gauss-Legendre rule (scipy's nodes) of order 30 on
  breakpoints computed for that line; the same integral with order 20 on the same pieces,
  carried along, measures the inner rule's error.

What makes an adaptive rule miss part of such an integral is a feature narrower than its
nodes' spacing: a narrow component, or a kink of ``log sum_k w_k N_k`` where it switches
from one component to another (width ``1 / |slope difference|``, often far below 1e-6).
Every such feature is known in closed form here, and gets breakpoints at its centre and
at ``centre -+ width * 2^k`` (k = -1, 0, 1, ...), so that every piece is no wider than its
distance to the feature: inside each piece the integrand is smooth on the piece's scale.
(One breakpoint at a kink is not enough: the switch then hides at the end of a piece,
between the last node and the breakpoint.) Differences ``x - m`` are computed as
``(piece start - m) + t`` so that their rounding is relative to the distance, not to
``|x|`` (at ``x ~ 35`` and a scale of 3e-3 the direct form moved the result by 1e-12).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special

GRADED = np.concatenate([[0.0], 4.0 ** np.arange(-1, 23)])


def random_mixture_1d(rng, near: list, max_components: int = 3):
    """(means, scales, weights) with scales log-uniform in [1e-4, 1e2] and means either
    uniform in [-50, 50] or close (1e-4 .. 10) to an earlier component's mean."""
    k = int(rng.integers(1, max_components + 1))
    scales = 10 ** rng.uniform(-4, 2, k)
    means = []
    for _ in range(k):
        if near and rng.random() < 0.5:
            means.append(near[int(rng.integers(len(near)))]
                         + rng.normal() * 10 ** rng.uniform(-4, 1))
        else:
            means.append(rng.uniform(-50, 50))
        near.append(means[-1])
    return np.array(means), scales, rng.dirichlet(np.ones(k))


def random_mixture_2d(rng, near: list, max_components: int = 2, max_anisotropy: float = 10.0):
    """(means [K, 2], covariances [K, 2, 2], weights [K]). Half the components are
    axis-aligned with independent scales log-uniform in [1e-4, 1e2] per axis; the others
    are rotated, with a scale ratio up to ``max_anisotropy``."""
    k = int(rng.integers(1, max_components + 1))
    means, covariances = [], []
    for _ in range(k):
        if near and rng.random() < 0.5:
            means.append(near[int(rng.integers(len(near)))]
                         + rng.normal(size=2) * 10 ** rng.uniform(-4, 1))
        else:
            means.append(rng.uniform(-50, 50, 2))
        near.append(means[-1])
        if rng.random() < 0.5:
            covariances.append(np.diag((10 ** rng.uniform(-4, 2, 2)) ** 2))
        else:
            s = 10 ** rng.uniform(-4, 2) * np.array(
                [1.0, 10 ** rng.uniform(0, math.log10(max_anisotropy))])
            angle = rng.uniform(0, np.pi)
            rotation = np.array([[math.cos(angle), -math.sin(angle)],
                                 [math.sin(angle), math.cos(angle)]])
            covariances.append(rotation @ np.diag(s**2) @ rotation.T)
    return np.array(means), np.array(covariances), rng.dirichlet(np.ones(k))


def _kinks(log_weights, means, sds):
    """(point, width) where two weighted 1-D Gaussians ``exp(log_weights) N(means, sds)``
    have equal density: roots of a quadratic; width = 1 / |difference of slopes|."""
    out = []
    for j in range(len(means)):
        for k in range(j + 1, len(means)):
            a = 0.5 / sds[k] ** 2 - 0.5 / sds[j] ** 2
            b = means[j] / sds[j] ** 2 - means[k] / sds[k] ** 2
            c = (0.5 * means[k] ** 2 / sds[k] ** 2 - 0.5 * means[j] ** 2 / sds[j] ** 2
                 + (log_weights[j] - math.log(sds[j])) - (log_weights[k] - math.log(sds[k])))
            if a == 0 and b == 0:
                continue
            roots = np.roots([a, b, c])
            for x in roots[np.isreal(roots)].real:
                slope = abs((x - means[j]) / sds[j] ** 2 - (x - means[k]) / sds[k] ** 2)
                if slope > 0:
                    out.append((float(x), 1.0 / slope))
    return out


def _graded(centre, width):
    return np.concatenate([centre + width * GRADED, centre - width * GRADED])


# ----------------------------------------------------------------------------------------
# 1-D


def _log_density_1d(a, t, means, scales, weights):
    """log sum_k w_k N(a + t; m_k, s_k) with x - m_k computed as (a - m_k) + t."""
    terms = [math.log(w) - 0.5 * (((a - m) + t) / s) ** 2 - math.log(s)
             - 0.5 * math.log(2 * math.pi) for m, s, w in zip(means, scales, weights, strict=True)]
    top = max(terms)
    return top + math.log(sum(math.exp(term - top) for term in terms))


def breakpoints_1d(q, p):
    """Breakpoints for KL(q||p): q's mass to 40 sd, every component and every kink of
    log q and log p, graded."""
    lo, hi = np.min(q[0] - 40 * q[1]), np.max(q[0] + 40 * q[1])
    points = [np.array([lo, hi])]
    for means, scales, weights in (q, p):
        points += [_graded(m, s) for m, s in zip(means, scales, strict=True)]
        points += [_graded(x, w) for x, w in _kinks(np.log(weights), means, scales)]
    return np.unique(np.clip(np.concatenate(points), lo, hi))


def kl_1d(q, p) -> tuple[float, float]:
    """KL(q||p) for 1-D mixtures ``(means, scales, weights)``, with quad's error sum."""
    points = breakpoints_1d(q, p)
    total = error = 0.0
    for a, b in zip(points[:-1], points[1:], strict=True):
        def integrand(t, a=a):
            log_q = _log_density_1d(a, t, *q)
            return math.exp(log_q) * (log_q - _log_density_1d(a, t, *p))

        value, err = integrate.quad(integrand, 0.0, b - a, epsabs=1e-15, epsrel=1e-13,
                                    limit=200)
        total += value
        error += err
    return total, error


# ----------------------------------------------------------------------------------------
# 2-D


class _Mixture2d:
    def __init__(self, means, covariances, weights):
        self.means, self.covariances, self.weights = means, covariances, weights
        self.precisions = np.linalg.inv(covariances)
        self.log_norms = (np.log(weights) - 0.5 * np.log(np.linalg.det(covariances))
                          - math.log(2 * math.pi))

    def along_y(self, a, t):
        """At x = a + t, each component as a 1-D Gaussian in y: log of its x-marginal
        weight, conditional mean and conditional sd."""
        var_x = self.covariances[:, 0, 0]
        dx = (a - self.means[:, 0]) + t
        log_weights = (np.log(self.weights) - 0.5 * dx**2 / var_x
                       - 0.5 * np.log(2 * math.pi * var_x))
        means = self.means[:, 1] + self.covariances[:, 0, 1] / var_x * dx
        sds = np.sqrt(self.covariances[:, 1, 1] - self.covariances[:, 0, 1] ** 2 / var_x)
        return log_weights, means, sds

    def x_extrema_of_kinks(self):
        """x where a kink curve ``t_j(v) = t_k(v)`` has a vertical tangent (the y-kinks
        appear or merge there, so the integral over y has a weak singularity in x)."""
        out = []
        for j in range(len(self.weights)):
            for k in range(j + 1, len(self.weights)):
                # D(v) = c0 + b.v + v.A.v with A = -(P_j - P_k)/2.
                A = -0.5 * (self.precisions[j] - self.precisions[k])
                b = (self.precisions[j] @ self.means[j] - self.precisions[k] @ self.means[k])
                c0 = (self.log_norms[j] - self.log_norms[k] - 0.5 * (
                    self.means[j] @ self.precisions[j] @ self.means[j]
                    - self.means[k] @ self.precisions[k] @ self.means[k]))
                if A[1, 1] == 0:
                    continue
                # dD/dy = 0: y = alpha x + beta; then D(x, y(x)) is a quadratic in x.
                alpha, beta = -A[0, 1] / A[1, 1], -b[1] / (2 * A[1, 1])
                coefficients = [A[0, 0] + 2 * A[0, 1] * alpha + A[1, 1] * alpha**2,
                                b[0] + b[1] * alpha + 2 * A[0, 1] * beta
                                + 2 * A[1, 1] * alpha * beta,
                                c0 + b[1] * beta + A[1, 1] * beta**2]
                if coefficients[0] == 0 and coefficients[1] == 0:
                    continue
                roots = np.roots(coefficients)
                out += roots[np.isreal(roots)].real.tolist()
        return out


_RULES = [special.roots_legendre(order) for order in (20, 30)]


def _inner(a, t, q: _Mixture2d, p: _Mixture2d) -> np.ndarray:
    """Integral over y of q (log q - log p) at x = a + t, by the rules of order 30 and 20."""
    q_line, p_line = q.along_y(a, t), p.along_y(a, t)
    keep = q_line[0] > q_line[0].max() - 745  # components with mass on this line
    lo = np.min((q_line[1] - 40 * q_line[2])[keep])
    hi = np.max((q_line[1] + 40 * q_line[2])[keep])
    points = [np.array([lo, hi])]
    for (log_weights, means, sds), mask in ((q_line, keep), (p_line, None)):
        points += [_graded(m, s) for i, (m, s) in enumerate(zip(means, sds, strict=True))
                   if mask is None or mask[i]]
        points += [_graded(y, w) for y, w in _kinks(log_weights, means, sds)]
    points = np.unique(np.clip(np.concatenate(points), lo, hi))
    start, half = points[:-1], (points[1:] - points[:-1]) / 2

    def log_density(line, base, offset):
        log_weights, means, sds = line
        z = ((base[:, None] - means[None]) + offset[:, None]) / sds[None]
        terms = log_weights[None] - 0.5 * z**2 - np.log(sds)[None] - 0.5 * math.log(2 * math.pi)
        return np.logaddexp.reduce(terms, axis=1)

    values = []
    for nodes, weights in _RULES[::-1]:
        base = np.repeat(start, len(nodes))
        offset = (half[:, None] * (nodes[None] + 1)).ravel()
        log_q, log_p = log_density(q_line, base, offset), log_density(p_line, base, offset)
        density = np.exp(log_q)
        f = np.where(density > 0, density * (log_q - log_p), 0.0)
        values.append(np.sum(f * (half[:, None] * weights[None]).ravel()))
    return np.array(values)


def kl_2d(q, p) -> tuple[float, float]:
    """KL(q||p) for 2-D mixtures ``(means, covariances, weights)``, with an error: the
    outer rule's estimate plus the difference between the inner rules of order 30 (the
    value) and 20."""
    q, p = _Mixture2d(*q), _Mixture2d(*p)
    sd_x = np.sqrt(q.covariances[:, 0, 0])
    lo, hi = np.min(q.means[:, 0] - 40 * sd_x), np.max(q.means[:, 0] + 40 * sd_x)
    points = [np.array([lo, hi])]
    for mixture in (q, p):
        sd_axis = np.sqrt(mixture.covariances[:, 0, 0])
        points += [_graded(m, s) for m, s in zip(mixture.means[:, 0], sd_axis, strict=True)]
        points.append(np.array(mixture.x_extrema_of_kinks()))
    points = np.unique(np.clip(np.concatenate(points), lo, hi))
    total, error = np.zeros(2), 0.0
    for a, b in zip(points[:-1], points[1:], strict=True):
        values, err = integrate.quad_vec(lambda t, a=a: _inner(a, t, q, p), 0.0, b - a,
                                         epsabs=1e-15, epsrel=1e-13, norm="max")
        total += values
        error += err
    return float(total[0]), error + abs(float(total[0] - total[1]))
