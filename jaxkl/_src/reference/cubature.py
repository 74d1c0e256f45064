r"""Adaptive Gauss-Legendre cubature in 1 and 2 dimensions (NumPy, float64).

The private engine behind :func:`jaxkl.reference.quadrature_kl`. Three things make an
adaptive rule miss part of an integral of ``q (log q - log p)`` between Gaussian mixtures:
a component narrower than the spacing of the nodes (every rule of a cell then sees the same
smooth function, they agree, and the cell is never split); a kink of ``log sum_k w_k N_k``
where it switches from one component to another, over a width ``1 / |slope difference|``
that is often far below 1e-6 and far from every centre (scipy's ``quad`` missed one by
0.27 with an error estimate of 5e-12); and mass outside the integration box. They are
closed off by what is known about the densities:

- *Features, graded.* Every component (of q and of p), and in 1-D every kink, is a
  feature with a centre ``m`` and a precision ``P``. Before any error estimate is
  trusted, every cell is split until it is no wider along each axis ``i`` than
  ``RESOLUTION_SD * max(1, r / GRADING)`` conditional standard deviations ``1/sqrt(P_ii)``
  of each feature, ``r`` being the cell's Mahalanobis distance to it: two sds near the
  centre, about ``r`` sds at distance ``r`` (a graded mesh). No component, however narrow
  or anisotropic, falls between nodes, and a thin ridge along a diagonal gets small cells
  only along the ridge.
- *Kinks in 2-D* are curves, not points: a cell whose nodes do not all have the same
  dominant component holds one, and its error estimate is the pessimistic one below.
- *Tails.* :func:`mixture_tail_bound` bounds the integrand outside the box from the
  component parameters alone (an upper bound, not an estimate).

Each cell is integrated with the tensor Gauss-Legendre rule of order ``HIGH`` in every
axis and, for each axis, with the rules of orders ``LOW`` and ``LOWEST`` along it
(``HIGH`` elsewhere); see :func:`_axis_errors` for how their differences bound the error
of the high rule. Cells are bisected along the axes that carry the error (so a cell long
in one direction is not cut into needless squares) until the total is within tolerance.

Reference: P. J. Davis and P. Rabinowitz, "Methods of Numerical Integration", 2nd ed.,
1984, Ch. 5-6 (adaptive and product Gauss rules); A. C. Genz and A. A. Malik, "An
adaptive algorithm for numerical integration over an N-dimensional rectangular region",
J. Comput. Appl. Math. 6, 1980 (choosing the axis to bisect from per-axis differences).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import special

LOWEST, LOW, HIGH = 5, 10, 15
# Near a feature a cell is at most RESOLUTION_SD of its conditional standard deviations
# wide along each axis: with 15 nodes a cell, a bump of one sd is sampled by ~7 nodes per
# axis, so the rules cannot agree on a bump they all miss.
RESOLUTION_SD = 2.0
# At Mahalanobis distance r > GRADING, a cell may be RESOLUTION_SD * r / GRADING sds wide
# (about r): a graded mesh. Without it, the half of a bisected cell that does not hold a
# feature can lie next to it while far wider than its distance, and the feature's tail
# (a kink's exp(-|x - c| / w) spreading past it) falls between its nodes.
GRADING = 2.0
# Points per evaluation call (memory: points x components x dim float64s).
_CHUNK_POINTS = 2**16
_EPS = float(np.finfo(np.float64).eps)


class Gaussians(NamedTuple):
    """A Gaussian mixture as float64 NumPy arrays (zero-weight components dropped)."""

    log_weights: np.ndarray  # [K]
    means: np.ndarray  # [K, d]
    covariances: np.ndarray  # [K, d, d]
    chol: np.ndarray  # [K, d, d] lower Cholesky factors
    log_dets: np.ndarray  # [K] log det covariances


def gaussians(log_weights, means, covariances) -> Gaussians:
    """:class:`Gaussians` from (possibly -inf) log-weights; covariances must be PD."""
    keep = np.asarray(log_weights) > -np.inf
    means, covariances = np.asarray(means)[keep], np.asarray(covariances)[keep]
    chol = np.linalg.cholesky(covariances)
    log_dets = 2 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
    return Gaussians(np.asarray(log_weights)[keep], means, covariances, chol, log_dets)


def mixture_log_density(g: Gaussians) -> Callable:
    """``(base, offset) [n, d] -> (log sum_k w_k N(base + offset; m_k, S_k), argmax_k)``
    in float64, for ``d <= 2``; the index of the dominant component tells where
    log-sum-exp switches branch (a kink of the log-density).

    The point is given as a cell corner plus an offset so that ``x - m_k`` is computed as
    ``(base - m_k) + offset``: its rounding error is then a few ulps of the distance to the
    centre, not of ``|x|``. (At ``x ~ 30``, ``x - m`` rounded to ulps of 30 is off by
    ``4e-11`` standard deviations of a component of scale ``1e-4``, which moved the
    integral by ``1e-11`` relative; log-sum-exp keeps the rest free of underflow.)
    """
    dim = g.means.shape[-1]
    whiten = np.linalg.inv(g.chol)  # host NumPy: no XLA thread pool involved
    log_norm = g.log_weights - 0.5 * g.log_dets - 0.5 * dim * math.log(2 * math.pi)

    def log_density(base, offset):
        diff = (base[:, None, :] - g.means[None]) + offset[:, None, :]  # [n, K, d]
        # z = L^-1 (x - m) written out for d <= 2 (elementwise: 3x faster than einsum).
        z0 = diff[..., 0] * whiten[:, 0, 0]
        squared = z0 * z0
        if dim == 2:
            z1 = diff[..., 0] * whiten[:, 1, 0] + diff[..., 1] * whiten[:, 1, 1]
            squared = squared + z1 * z1
        terms = log_norm - 0.5 * squared
        return np.logaddexp.reduce(terms, axis=1), np.argmax(terms, axis=1)

    return log_density


class Features(NamedTuple):
    """Where cells must be small: ``[F, d]`` centres, ``[F, d, d]`` precisions, and the
    widest cell allowed in each feature's core, ``[F, d]`` per axis."""

    centres: np.ndarray
    precisions: np.ndarray
    widths: np.ndarray


def gaussian_features(means, covariances) -> Features:
    """One feature per Gaussian component (``[F, d]`` means, ``[F, d, d]`` covariances)."""
    means = np.asarray(means, np.float64).reshape(-1, np.shape(means)[-1])
    dim = means.shape[1]
    precisions = np.linalg.inv(np.asarray(covariances, np.float64).reshape(-1, dim, dim))
    conditional_sd = 1 / np.sqrt(np.diagonal(precisions, axis1=-2, axis2=-1))
    return Features(means, precisions, RESOLUTION_SD * conditional_sd)


def crossing_features_1d(g: Gaussians) -> Features:
    """The kinks of a 1-D mixture's log-density, as features.

    Where two weighted components have equal density, log-sum-exp switches from one to
    the other over a width ``w = 1 / |t_j' - t_k'|`` (``t = log w N``) that can be far
    below the cells around it, far from either centre. A missed switch is a missed
    region of the integrand (scipy's ``quad`` missed one by 0.27 with an error estimate
    of 5e-12), and a switch at a cell edge hides from every rule of that cell. Each root
    of the quadratic ``t_j(x) = t_k(x)`` becomes a feature of scale ``w``.
    """
    m, v = g.means[:, 0], g.covariances[:, 0, 0]
    c = g.log_weights - 0.5 * np.log(v) - 0.5 * m * m / v
    centres, scales = [], []
    for j in range(len(m)):
        for k in range(j + 1, len(m)):
            # (1/2v_k - 1/2v_j) x^2 + (m_j/v_j - m_k/v_k) x + (c_j - c_k) = 0
            coefficients = [0.5 / v[k] - 0.5 / v[j], m[j] / v[j] - m[k] / v[k], c[j] - c[k]]
            if coefficients[0] == 0 and coefficients[1] == 0:
                continue
            roots = np.roots(coefficients)
            for x in roots[np.isreal(roots)].real:
                slope = abs((x - m[j]) / v[j] - (x - m[k]) / v[k])
                if slope > 0:
                    centres.append(x)
                    scales.append(1 / slope)
    centres, scales = np.array(centres).reshape(-1, 1), np.array(scales).reshape(-1, 1)
    return gaussian_features(centres, (scales**2)[:, :, None])


def no_features(dim: int) -> Features:
    return Features(np.zeros((0, dim)), np.zeros((0, dim, dim)), np.zeros((0, dim)))


def concat_features(*features: Features) -> Features:
    return Features(*(np.concatenate(parts) for parts in zip(*features, strict=True)))


def _min_quadratic(lo, hi, f: Features) -> np.ndarray:
    """``min over each box [lo, hi] of (x - c)^T P (x - c)`` for every (box, feature):
    ``[M, F]``. Exact: a convex quadratic's minimum over a box is at its centre when the
    centre is inside, else on an edge, where it is the clipped 1-D minimiser."""
    lo, hi = lo[:, None, :], hi[:, None, :]
    c, prec = f.centres[None], f.precisions[None]
    inside = np.all((lo <= c) & (c <= hi), axis=-1)
    if lo.shape[-1] == 1:
        x = np.clip(c, lo, hi)
        return prec[..., 0, 0] * (x - c)[..., 0] ** 2
    best = np.full(inside.shape, np.inf)
    for axis in (0, 1):
        other = 1 - axis
        for edge in (lo[..., axis], hi[..., axis]):
            slope = prec[..., other, axis] / prec[..., other, other]
            t = np.clip(c[..., other] - slope * (edge - c[..., axis]), lo[..., other],
                        hi[..., other])
            ya, yo = edge - c[..., axis], t - c[..., other]
            value = (prec[..., axis, axis] * ya * ya + 2 * prec[..., axis, other] * ya * yo
                     + prec[..., other, other] * yo * yo)
            best = np.minimum(best, value)
    return np.where(inside, 0.0, best)


def _unresolved(lo, hi, f: Features) -> np.ndarray:
    """``[M, d]``: the axes along which each cell is too wide for some feature (a cell at
    Mahalanobis distance ``r`` may be ``widths * max(1, r / GRADING)`` wide)."""
    if f.centres.shape[0] == 0:
        return np.zeros(lo.shape, bool)
    width = hi - lo
    candidate = (width[:, None, :] > f.widths[None]).any(-1)  # [M, F]
    out = np.zeros(lo.shape, bool)
    rows = np.nonzero(candidate.any(-1))[0]
    if rows.size:
        distance = np.sqrt(_min_quadratic(lo[rows], hi[rows], f))  # [m, F]
        allowed = f.widths[None] * np.maximum(1.0, distance / GRADING)[..., None]
        out[rows] = (width[rows][:, None, :] > allowed).any(1)
    return out


def _splittable(lo, hi) -> np.ndarray:
    """``[M, d]``: axes wide enough to bisect in float64 (a few ulps at least)."""
    scale = np.maximum(np.abs(lo), np.abs(hi))
    return (hi - lo) > 64 * np.spacing(scale)


def _split(lo, hi, axes) -> tuple[np.ndarray, np.ndarray]:
    """Bisects each cell along the axes marked in ``axes`` ``[M, d]`` (2**count children)."""
    for i in range(lo.shape[1]):
        sel = axes[:, i]
        if not sel.any():
            continue
        mid = (lo[sel, i] + hi[sel, i]) / 2
        left_hi, right_lo = hi[sel].copy(), lo[sel].copy()
        left_hi[:, i], right_lo[:, i] = mid, mid
        lo = np.concatenate([lo[~sel], lo[sel], right_lo])
        hi = np.concatenate([hi[~sel], left_hi, hi[sel]])
        axes = np.concatenate([axes[~sel], axes[sel], axes[sel]])
    return lo, hi


class _Rule(NamedTuple):
    nodes: np.ndarray  # [n, d] in [0, 1]**d: the nodes of every rule, one block each
    # Per rule, its weights on its own block of nodes: the high rule; then, per axis i,
    # the rules of orders LOW and LOWEST along axis i (HIGH along the others). (Blocks,
    # not one dense matrix: a zero weight times an infinite value would give NaN.)
    blocks: tuple[tuple[slice, np.ndarray], ...]


def _gauss(order: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = special.roots_legendre(order)
    return (x + 1) / 2, w / 2


def _rule(dim: int) -> _Rule:
    """The high tensor rule and, per axis, the rules of orders LOW and LOWEST along it."""
    rules = [(HIGH,) * dim] + [tuple(order if j == i else HIGH for j in range(dim))
                               for i in range(dim) for order in (LOW, LOWEST)]
    nodes, blocks = [], []
    for orders in rules:
        parts = [_gauss(o) for o in orders]
        grids = np.meshgrid(*[x for x, _ in parts], indexing="ij")
        weights = np.meshgrid(*[w for _, w in parts], indexing="ij")
        nodes.append(np.stack([g.ravel() for g in grids], axis=1))
        blocks.append(np.prod([w.ravel() for w in weights], axis=0))
    starts = np.cumsum([0] + [len(b) for b in blocks])
    spans = zip(starts[:-1], starts[1:], blocks, strict=True)
    return _Rule(np.concatenate(nodes), tuple((slice(int(a), int(b)), w) for a, b, w in spans))


def _integrate_cells(f, lo, hi, rule: _Rule) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's integrals ``[M, 1 + 2d, C]`` by the high rule and the per-axis low
    rules, and whether the integrand switches branch inside the cell ``[M]``.

    ``f(base, offset)`` receives each node as its cell's corner and the offset from it,
    and returns the values ``[n, C]`` and an integer branch label per node (for
    log-sum-exp, which component dominates), or None.
    """
    n, dim = rule.nodes.shape
    per_call = max(1, _CHUNK_POINTS // n)
    out, switches = [], []
    for s in range(0, lo.shape[0], per_call):
        l, h = lo[s:s + per_call], hi[s:s + per_call]
        width = h - l
        base = np.broadcast_to(l[:, None, :], (l.shape[0], n, dim)).reshape(-1, dim)
        offset = (width[:, None, :] * rule.nodes[None]).reshape(-1, dim)
        values, labels = f(base, offset)
        values = values.reshape(l.shape[0], n, values.shape[-1])
        integrals = np.stack([np.einsum("n,mnc->mc", w, values[:, block])
                              for block, w in rule.blocks], axis=1)
        out.append(integrals * np.prod(width, axis=1)[:, None, None])
        if labels is None:
            switches.append(np.zeros(l.shape[0], bool))
        else:
            labels = labels.reshape(l.shape[0], n)
            switches.append(labels.min(1) != labels.max(1))
    return np.concatenate(out), np.concatenate(switches)


def _axis_errors(integrals: np.ndarray, switches: np.ndarray) -> np.ndarray:
    """``[M, d]`` error estimates of the high rule from ``[M, 1 + 2d]`` integrals.

    Per axis, ``d1 = |I_15 - I_10|``, ``d2 = |I_10 - I_5|``, ``d3 = |I_15 - I_5|``. On a
    cell where the integrand is analytic on the cell's scale, Gauss rules converge
    geometrically: ``d1 << d2`` and ``d1`` (about the error of ``I_10``) exceeds the
    error of ``I_15`` by orders of magnitude; ``d1`` is used. Where it is not, the errors
    fall only like a power of the order and change sign with the position of the
    feature, so ``d1`` alone can fall below the error of ``I_15``. That happens on a cell
    that holds a log-sum-exp switch (``switches``: a kink far narrower than the cell;
    one in a 2-D cell gave ``d1 = 0.03 d2`` and an ``I_15`` error of ``3.4 d1``) or where
    ``d1 > d2 / 10``; ``max(d1, d2, d3)`` is used there: for errors ``~ C / n^a`` with
    ``a >= 1`` it exceeds the error of ``I_15`` by 1.5x (``a = 1``) to 7x (``a = 2``)
    whatever their signs, unless all three rules agree by coincidence.
    """
    high, lows = integrals[:, :1], integrals[:, 1:]
    with np.errstate(invalid="ignore"):  # inf - inf: p = 0 where q > 0, the KL is inf
        d1 = np.abs(high - lows[:, 0::2])
        d2 = np.abs(lows[:, 0::2] - lows[:, 1::2])
        d3 = np.abs(high - lows[:, 1::2])
    resolved = (d1 <= 0.1 * d2) & ~switches[:, None]
    return np.where(resolved, d1, np.maximum(np.maximum(d1, d2), d3))


class Result(NamedTuple):
    value: np.ndarray  # [C] integrals of the integrand's channels
    error: float  # estimated absolute error of value[0] (inf: features not resolved)
    converged: bool  # whether the estimate met the tolerance
    cells: int


def integrate(f, lo, hi, features: Features, *, tolerance: Callable[[np.ndarray], float],
              max_cells: int, edges=None) -> Result:
    """Adaptive cubature of ``f`` over a box: ``f(base, offset)`` maps the points
    ``base + offset`` (both ``[n, d]``, see :func:`mixture_log_density`) to ``[n, C]``.

    ``edges`` (optional, per axis) are extra cell boundaries (support edges). The error
    estimate is that of channel 0; the loop stops when it is at most
    ``tolerance(current values)``, or when ``max_cells`` would be exceeded
    (``converged=False``). If the features cannot be resolved within ``max_cells`` the
    error is ``inf``.
    """
    dim = lo.shape[0]
    grid = [np.unique(np.concatenate([[lo[i], hi[i]], [] if edges is None else
                                      [e for e in edges[i] if lo[i] < e < hi[i]]]))
            for i in range(dim)]
    starts = np.meshgrid(*[g[:-1] for g in grid], indexing="ij")
    ends = np.meshgrid(*[g[1:] for g in grid], indexing="ij")
    cell_lo = np.stack([s.ravel() for s in starts], axis=1)
    cell_hi = np.stack([e.ravel() for e in ends], axis=1)
    rule = _rule(dim)

    # Phase 1: resolve every component's core (no error estimate is trusted before).
    resolved = True
    pending = np.ones(cell_lo.shape[0], bool)
    while pending.any():
        need = np.zeros(cell_lo.shape, bool)
        need[pending] = _unresolved(cell_lo[pending], cell_hi[pending], features)
        need &= _splittable(cell_lo, cell_hi)
        rows = need.any(1)
        if not rows.any():
            break
        added = int(np.sum(2 ** need[rows].sum(1) - 1))
        if cell_lo.shape[0] + added > max_cells:
            resolved = False
            break
        kept_lo, kept_hi = cell_lo[~rows], cell_hi[~rows]
        new_lo, new_hi = _split(cell_lo[rows], cell_hi[rows], need[rows])
        cell_lo, cell_hi = np.concatenate([kept_lo, new_lo]), np.concatenate([kept_hi, new_hi])
        pending = np.concatenate([np.zeros(len(kept_lo), bool), np.ones(len(new_lo), bool)])

    def evaluate(l, h):
        integrals, switches = _integrate_cells(f, l, h, rule)
        return integrals[:, 0, :], _axis_errors(integrals[..., 0], switches)

    values, axis_errors = evaluate(cell_lo, cell_hi)
    while True:
        errors = axis_errors.sum(1)
        total, total_error = values.sum(axis=0), float(errors.sum())
        if not resolved:
            return Result(total, math.inf, False, cell_lo.shape[0])
        tol = tolerance(total)
        if not np.isfinite(total[0]) or total_error <= tol:
            return Result(total, total_error, True, cell_lo.shape[0])
        can_split = _splittable(cell_lo, cell_hi)
        # Split along the axes that carry at least a quarter of the cell's largest error.
        axes = (axis_errors >= 0.25 * axis_errors.max(1, keepdims=True)) & can_split
        axes[~axes.any(1) & can_split.any(1)] = can_split[~axes.any(1) & can_split.any(1)]
        candidates = np.nonzero(axes.any(1))[0]
        # The fewest cells whose errors leave at most half the tolerance behind.
        order = candidates[np.argsort(errors[candidates])[::-1]]
        left_behind = total_error - np.cumsum(errors[order])
        count = int(np.argmax(left_behind <= tol / 2)) + 1 if order.size else 0
        extra = np.cumsum(2 ** axes[order].sum(1) - 1)
        count = min(count, int(np.searchsorted(extra, max_cells - cell_lo.shape[0], "right")))
        if count == 0:
            return Result(total, total_error, False, cell_lo.shape[0])
        refine = np.zeros(cell_lo.shape[0], bool)
        refine[order[:count]] = True
        new_lo, new_hi = _split(cell_lo[refine], cell_hi[refine], axes[refine])
        new_values, new_axis_errors = evaluate(new_lo, new_hi)
        cell_lo = np.concatenate([cell_lo[~refine], new_lo])
        cell_hi = np.concatenate([cell_hi[~refine], new_hi])
        values = np.concatenate([values[~refine], new_values])
        axis_errors = np.concatenate([axis_errors[~refine], new_axis_errors])


# ----------------------------------------------------------------------------------------
# Tails of Gaussian mixtures.


def _log_peak(g: Gaussians) -> float:
    """An upper bound of the log-density: log sum_k w_k (2 pi)^(-d/2) det(S_k)^(-1/2)."""
    dim = g.means.shape[-1]
    return float(special.logsumexp(g.log_weights - 0.5 * g.log_dets
                                   - 0.5 * dim * math.log(2 * math.pi)))


def _half_space_moments(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For u ~ N(0, 1): ``P(u > r)`` and ``E[u^2; u > r] = r phi(r) + P(u > r)``."""
    tail = special.ndtr(-r)
    return tail, r * np.exp(-0.5 * r * r) / math.sqrt(2 * math.pi) + tail


def mixture_tail_bound(q: Gaussians, p: Gaussians, lo, hi) -> float:
    r"""An upper bound of ``int_{x outside [lo, hi]} q(x) (|log q(x)| + |log p(x)|) dx``.

    For each component ``a`` of q, with ``x = m_a + L_a z``:
    ``log q`` lies between ``log pi_a + log N_a(x)`` and the peak bound
    ``U_q = log sum_k pi_k (2 pi)^{-d/2} |S_k|^{-1/2}``, and for any component ``b`` of p,
    ``log p`` lies between ``log w_b + log N_b(x)`` and ``U_p``; with
    ``M = L_b^{-1} L_a``, ``delta = L_b^{-1}(m_a - m_b)`` this gives
    ``|log q| + |log p| <= A + B |z|^2``. The outside of the box is covered by the
    ``2d`` half-spaces beyond each face; in each, the standardised coordinate ``u`` of
    that axis is N(0, 1) under ``N_a`` and ``|z|^2 = u^2 + (d - 1 independent chi^2)``, so
    each half-space's integral is ``(A + B (d - 1)) P(u > r) + B E[u^2; u > r]``.
    """
    dim = q.means.shape[-1]
    u_q, u_p = abs(_log_peak(q)), abs(_log_peak(p))
    const = 0.5 * dim * math.log(2 * math.pi)
    total = 0.0
    for a in range(q.means.shape[0]):
        a_q = abs(q.log_weights[a] - 0.5 * q.log_dets[a] - const)
        transfer = np.linalg.solve(p.chol, np.broadcast_to(q.chol[a], p.chol.shape))
        delta = np.linalg.solve(p.chol, (q.means[a] - p.means)[..., None])[..., 0]
        a_p = np.abs(p.log_weights - 0.5 * p.log_dets - const)
        big_a = u_q + a_q + u_p + a_p + np.sum(delta**2, axis=-1)
        big_b = 0.5 + np.linalg.norm(transfer, ord=2, axis=(-2, -1)) ** 2
        b = int(np.argmin(big_a + dim * big_b))  # any b gives a bound; take the tightest
        sd = np.sqrt(np.diagonal(q.covariances[a]))
        r = np.concatenate([(q.means[a] - lo) / sd, (hi - q.means[a]) / sd])
        tail, second = _half_space_moments(r)
        total += math.exp(q.log_weights[a]) * float(
            np.sum((big_a[b] + big_b[b] * (dim - 1)) * tail + big_b[b] * second))
    return total


def mixture_box(q: Gaussians, p: Gaussians, target: float) -> tuple[np.ndarray, np.ndarray,
                                                                      float]:
    """The smallest box ``m_a -+ R sd_a`` (R = 8, 9, ..., 37) whose tail bound is at most
    ``target``, with that bound."""
    sd = np.sqrt(np.diagonal(q.covariances, axis1=-2, axis2=-1))
    for radius in range(8, 38):
        lo = np.min(q.means - radius * sd, axis=0)
        hi = np.max(q.means + radius * sd, axis=0)
        bound = mixture_tail_bound(q, p, lo, hi)
        if bound <= target:
            break
    return lo, hi, bound


def mixture_mass_outside(q: Gaussians, lo, hi) -> float:
    """An upper bound of q's mass outside the box (a union bound over its faces)."""
    sd = np.sqrt(np.diagonal(q.covariances, axis1=-2, axis2=-1))
    r = np.concatenate([(q.means - lo) / sd, (hi - q.means) / sd], axis=1)
    return float(np.sum(np.exp(q.log_weights) * special.ndtr(-r).sum(1)))


def rounding_error(abs_integral: float) -> float:
    """A bound on float64 rounding in the integral of ``q (log q - log p)``: each
    log-density carries a few ulps of its magnitude (``abs_integral`` is
    ``int q (|log q| + |log p|)``), and the sums add a few more."""
    return 64 * _EPS * (abs_integral + 1.0)
