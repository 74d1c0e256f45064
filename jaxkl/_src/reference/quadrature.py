"""KL(q||p) by adaptive cubature in 1 or 2 dimensions (:func:`quadrature_kl`): the
log-densities, integration box and truncation estimate; the cubature itself is in
:mod:`jaxkl._src.reference.cubature`."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxkl._src.distributions.checks import check_parameters
from jaxkl._src.distributions.mixtures import is_gaussian_mixture
from jaxkl._src.reference import cubature
from jaxkl._src.reference.inputs import (
    check_tolerances,
    event_dim,
    float64_gaussians,
    to_float64,
)
from jaxkl._src.reference.result import ReferenceKL
from jaxkl._src.validation import check_positive_int


def _generic_log_density(d, dim: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``(base, offset) [n, d] -> d.log_prob(base + offset)`` in float64."""

    def log_density(base, offset):
        x = base + offset
        with jax.enable_x64(True):
            points = jnp.asarray(x if dim > 1 else x[:, 0], jnp.float64)
            return np.asarray(to_float64(d).log_prob(points), np.float64), None

    return log_density


def _at(log_density, x: np.ndarray) -> np.ndarray:
    """A ``(base, offset)`` log-density at the points ``x`` ``[n, d]`` (values only)."""
    return log_density(x, np.zeros_like(x))[0]


# Half-width of the box for distributions that are not Gaussian mixtures, in standard
# deviations (widened below until q is e^-60 below its peak on the boundary).
_WIDTH_SD = 10.0


def _location_scale(d, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean [1, d], stddev [1, d]) of d in float64, or None when d has no finite ones."""
    try:
        with jax.enable_x64(True):
            d64 = to_float64(d)
            mean = np.asarray(d64.mean(), np.float64).reshape(1, dim)
            sd = np.asarray(d64.stddev(), np.float64).reshape(1, dim)
    except (NotImplementedError, AttributeError, TypeError):
        return None
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(sd)) and np.all(sd > 0)):
        return None
    return mean, sd


def _features(d, dim: int) -> cubature.Features:
    """Where d has structure that the cells must resolve: its components, or its mean and
    stddev as one feature for other distributions."""
    if is_gaussian_mixture(d):
        g = float64_gaussians(d)
        return cubature.gaussian_features(g.means, g.covariances)
    location = _location_scale(d, dim)
    if location is None:
        return cubature.no_features(dim)
    mean, sd = location
    return cubature.gaussian_features(mean, np.eye(dim)[None] * sd[:, None, :] ** 2)


def _support(d, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The support ``[low, high]`` of the distrax distributions with a bounded one."""
    with jax.enable_x64(True):
        if isinstance(d, distrax.Uniform):
            low, high = np.asarray(d.low, np.float64), np.asarray(d.high, np.float64)
        elif isinstance(d, distrax.Beta):
            low, high = np.zeros(()), np.ones(())
        elif isinstance(d, distrax.Gamma):
            low, high = np.zeros(()), np.full((), np.inf)
        else:
            return None
    return np.broadcast_to(low, (dim,)), np.broadcast_to(high, (dim,))


def _boundary_points(lo, hi, count: int = 64) -> np.ndarray:
    """Points on the faces of the box [lo, hi] (the two ends in 1-D)."""
    if lo.shape[0] == 1:
        return np.array([[lo[0]], [hi[0]]])
    t = np.linspace(0, 1, count)
    x = lo[0] + (hi[0] - lo[0]) * t
    y = lo[1] + (hi[1] - lo[1]) * t
    return np.concatenate([
        np.stack([x, np.full_like(x, lo[1])], 1), np.stack([x, np.full_like(x, hi[1])], 1),
        np.stack([np.full_like(y, lo[0]), y], 1), np.stack([np.full_like(y, hi[0]), y], 1),
    ])


def _generic_domain(q, log_q, dim: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Box holding the mass of a q that is not a Gaussian mixture, and whether it holds
    all of it (q's support is bounded and inside)."""
    location = _location_scale(q, dim)
    support = _support(q, dim)
    if location is None:
        if support is None or not np.all(np.isfinite(support[0]) & np.isfinite(support[1])):
            raise ValueError(
                f"Cannot choose a quadrature domain for q of type {type(q).__name__} (no "
                "finite mean/stddev or bounded support); pass `bounds=[[low, high], ...]`."
            )
        return support[0].copy(), support[1].copy(), True
    centre, sd = location
    lo, hi = centre[0] - _WIDTH_SD * sd[0], centre[0] + _WIDTH_SD * sd[0]
    if support is not None:
        lo, hi = np.maximum(lo, support[0]), np.minimum(hi, support[1])
    # Widen until q is negligible on the boundary (heavier tails than Gaussian).
    peak = float(np.max(_at(log_q, centre)))
    for _ in range(40):
        if np.max(_at(log_q, _boundary_points(lo, hi))) < peak - 60:
            break
        mid = (lo + hi) / 2
        lo, hi = mid - 1.5 * (mid - lo), mid + 1.5 * (hi - mid)
        if support is not None:
            lo, hi = np.maximum(lo, support[0]), np.minimum(hi, support[1])
    whole = support is not None and bool(np.all(lo <= support[0]) and np.all(hi >= support[1]))
    return lo, hi, whole


def _check_bounds(bounds, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``bounds`` as (low [d], high [d]), or a clear error."""
    try:
        box = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"`bounds` must be numbers [[low, high]] * {dim}, got {bounds!r}."
        ) from None
    if dim == 1 and box.shape == (2,):
        box = box[None]
    if box.shape != (dim, 2):
        raise ValueError(
            f"`bounds` must have shape ({dim}, 2), i.e. [[low, high]] for each of the {dim} "
            f"dimension(s), got shape {box.shape}."
        )
    if not np.all(np.isfinite(box)):
        raise ValueError(
            f"`bounds` must be finite, got {box.tolist()}; omit `bounds` to integrate over "
            "the whole of q's mass (the default box and its tail bound cover it)."
        )
    if not np.all(box[:, 0] < box[:, 1]):
        raise ValueError(f"`bounds` must have low < high in every row, got {box.tolist()}.")
    return box[:, 0], box[:, 1]


def _kl_integrand(log_q, log_p) -> Callable[[np.ndarray], np.ndarray]:
    """Points ``base + offset`` (``[n, d]`` each) -> ``[n, 3]``: ``q (log q - log p)``,
    ``q (|log q| + |log p|)`` (for the rounding bound) and ``q`` (mass)."""

    def integrand(base, offset):
        (lq, branch_q), (lp, branch_p) = log_q(base, offset), log_p(base, offset)
        for name, values in (("q", lq), ("p", lp)):
            bad = np.isnan(values) & (lq > -np.inf)
            if bad.any():
                where = (base + offset)[np.argmax(bad)].tolist()
                raise ValueError(
                    f"`{name}`.log_prob is NaN at x = {where}, where q has mass: invalid "
                    "parameters, or a distribution whose log_prob is undefined there; pass "
                    "`bounds` inside its support."
                )
        density = np.exp(lq)
        with np.errstate(invalid="ignore"):
            kl = np.where(density > 0, density * (lq - lp), 0.0)
            size = np.where(density > 0, density * (np.abs(lq) + np.abs(lp)), 0.0)
        # Which component dominates log q and log p: where it changes, log-sum-exp
        # switches branch (a kink), which the cubature's error estimate must know.
        labels = None
        if branch_q is not None or branch_p is not None:
            labels = (0 if branch_q is None else branch_q * 2**20) + (
                0 if branch_p is None else branch_p)
        return np.stack([kl, size, density], axis=1), labels

    return integrand


def _estimated_truncation(log_q, log_p, lo, hi, outside: float) -> float:
    """``(mass of q outside) x (1 + max |log q - log p| on the boundary where q > 0)``."""
    if outside <= 0:
        return 0.0
    boundary = _boundary_points(lo, hi)
    lq, lp = _at(log_q, boundary), _at(log_p, boundary)
    has_mass = lq > -np.inf
    if not has_mass.any():
        return outside
    with np.errstate(invalid="ignore"):
        ratio = float(np.max(np.abs(lq[has_mass] - lp[has_mass])))
    return outside * (1.0 + ratio)


class _Density(NamedTuple):
    """A distribution as the cubature sees it: its ``(base, offset)`` log-density, and its
    float64 Gaussian components when it is a Gaussian (mixture), else None."""

    log_density: Callable
    gaussians: cubature.Gaussians | None


def _density(d: distrax.DistributionLike, dim: int) -> _Density:
    if is_gaussian_mixture(d):
        g = float64_gaussians(d)
        return _Density(cubature.mixture_log_density(g), g)
    return _Density(_generic_log_density(d, dim), None)


def _check_pair(
    q: distrax.DistributionLike, p: distrax.DistributionLike, bounds, max_cells: int | None
) -> tuple[int, tuple[np.ndarray, np.ndarray] | None, int]:
    """(event dimension, the box given by ``bounds`` or None, the cell budget), or a clear
    error for anything quadrature cannot integrate."""
    if max_cells is not None:
        max_cells = check_positive_int(max_cells, "max_cells")
    dim = event_dim(q, "q")
    if event_dim(p, "p") != dim or tuple(q.event_shape) != tuple(p.event_shape):
        raise ValueError(
            f"`q` and `p` must have the same event shape, got {q.event_shape} and "
            f"{p.event_shape}."
        )
    if dim > 2:
        raise ValueError(
            f"Quadrature handles 1-D and 2-D distributions, got dimension {dim}; use "
            "method='bounds' (Gaussian mixtures) or method='monte_carlo'."
        )
    check_parameters(q, "q")
    check_parameters(p, "p")
    box = None if bounds is None else _check_bounds(bounds, dim)
    return dim, box, max_cells or (20000 if dim == 1 else 40000)


def _domain(
    q: distrax.DistributionLike, dq: _Density, dp: _Density, box, atol: float, dim: int
) -> tuple[np.ndarray, np.ndarray, float | None, bool]:
    """The box to integrate over; the bound of the integral outside it when both are
    Gaussian mixtures (else None: it is estimated after the cubature); and whether the box
    holds all of q's mass."""
    gq, gp = dq.gaussians, dp.gaussians
    if gq is not None and gp is not None:
        if box is None:
            lo, hi, tail = cubature.mixture_box(gq, gp, atol / 100)
            return lo, hi, tail, False
        lo, hi = box
        return lo, hi, cubature.mixture_tail_bound(gq, gp, lo, hi), False
    if gq is not None:
        # q's part of the bound picks the box; p's part is estimated after the cubature.
        lo, hi = box if box is not None else cubature.mixture_box(gq, gq, atol / 100)[:2]
        return lo, hi, None, False
    if box is not None:
        return box[0], box[1], None, False
    lo, hi, whole = _generic_domain(q, dq.log_density, dim)
    return lo, hi, None, whole


def _estimated_outside(dq: _Density, dp: _Density, lo, hi, whole: bool,
                       result: cubature.Result) -> float:
    """The estimated integral outside the box, from q's mass outside it (none when the box
    holds q's support, bounded for a mixture q, else one minus the integrated mass)."""
    if whole:
        outside = 0.0
    elif dq.gaussians is not None:
        outside = cubature.mixture_mass_outside(dq.gaussians, lo, hi)
    else:
        outside = max(1.0 - float(result.value[2]), 0.0)
    return _estimated_truncation(dq.log_density, dp.log_density, lo, hi, outside)


def quadrature_kl(
    q: distrax.DistributionLike,
    p: distrax.DistributionLike,
    *,
    bounds: ArrayLike | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-15,
    max_cells: int | None = None,
) -> ReferenceKL:
    r"""KL(q||p) by adaptive Gauss-Legendre cubature in 1 or 2 dimensions (float64).

    .. math:: KL = \int_{B} q(x) \left(\log q(x) - \log p(x)\right) dx
              + \int_{\mathbb R^d \setminus B} q(x) \log\frac{q(x)}{p(x)} dx.

    The box ``B`` and the cells are chosen from what is known about the densities, so that
    nothing is missed whatever the scales (:mod:`jaxkl._src.reference.cubature`):

    - Every component of both mixtures (a single Gaussian is one), and in 1-D every point
      where a log-density switches from one component to another, is resolved before any
      error estimate is used: cells are split until, along each axis, they are at most 2
      of its conditional standard deviations wide near it and no wider than about their
      distance to it (in those sds) further out, a graded mesh. Then cells are bisected
      along the axes that carry the error (per-axis differences between Gauss-Legendre
      rules of orders 15, 10 and 5, pessimistic on cells where a log-density switches
      component) until the summed estimate is within ``max(rtol * |KL|, atol)`` (or the
      float64 rounding bound, when larger).
    - For Gaussian mixtures ``B`` covers each component of q to ``R`` standard deviations,
      with ``R`` (8 to 37) chosen so that a rigorous bound of the integral outside ``B``
      (from the component parameters) is below ``atol / 100``; that bound is added to
      ``error``. For other distributions ``B`` is the mean -+ 10 sd, cut to the support
      where it is bounded (distrax ``Uniform``, ``Beta``, ``Gamma``), widened until q is
      ``e^-60`` below its peak on the boundary, and the truncation is estimated.

    ``error`` adds the cubature's estimate, the truncation term and a bound on float64
    rounding (``64 eps int q (|log q| + |log p| + 1)``): for Gaussian mixtures,
    ``|value - KL| <= error`` (checked against scipy on random pairs with scales 1e-4 to
    1e2, ``tests/test_reference_quadrature.py``). ``value`` is never negative (KL >= 0;
    a negative cubature value is raised to 0, which only moves it closer). If the
    tolerance is not met within ``max_cells`` cells, ``converged`` is False and
    ``error`` is what was reached (``inf`` when the components themselves could not be
    resolved, e.g. extremely thin diagonal ridges in 2-D).

    Args:
      q, p: single distributions (batch shape ``()``) with scalar or 2-vector events.
      bounds: optional finite box ``[[low, high]] * d`` (``[low, high]`` in 1-D) to
        integrate over instead; q's mass outside it is bounded (mixtures) or estimated
        and counted in ``error``.
      rtol, atol: target relative/absolute accuracy of the cubature.
      max_cells: cap on the number of cells (default 20000 in 1-D, 40000 in 2-D).

    Returns:
      :class:`ReferenceKL` with ``method="quadrature"`` (Python floats; ``value`` is
      ``inf``, with error 0, where p vanishes where q has mass).

    Raises:
      ValueError: for more than 2 dimensions, batched distributions, mismatched event
        shapes, invalid parameters (a non-positive scale, a singular covariance), invalid
        ``bounds``, or a ``log_prob`` that is NaN where q has mass.

    Reference: P. J. Davis and P. Rabinowitz, "Methods of Numerical Integration", 2nd ed.,
    1984 (adaptive product Gauss rules).

    Example:
      >>> import distrax
      >>> from jaxkl.reference import quadrature_kl
      >>> r = quadrature_kl(distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 2.0))
      >>> round(r.value, 8), float(distrax.Normal(0.0, 1.0).kl_divergence(distrax.Normal(1.0, 2.0)))
      (0.44314718, 0.44314718)
      >>> r.converged, r.error < 1e-10
      (True, True)
    """
    check_tolerances(rtol=rtol, atol=atol)
    dim, box, max_cells = _check_pair(q, p, bounds, max_cells)
    dq, dp = _density(q, dim), _density(p, dim)
    features = cubature.concat_features(_features(q, dim), _features(p, dim))
    lo, hi, tail, whole = _domain(q, dq, dp, box, atol, dim)

    def tolerance(total):
        return max(rtol * abs(total[0]), atol, cubature.rounding_error(total[1]))

    if dim == 1:
        # In 1-D the kinks of log-sum-exp are points, known in closed form.
        features = cubature.concat_features(features, *(
            cubature.crossing_features_1d(g) for g in (dq.gaussians, dp.gaussians)
            if g is not None))
    result = cubature.integrate(_kl_integrand(dq.log_density, dp.log_density), lo, hi,
                                features, tolerance=tolerance, max_cells=max_cells)
    value = float(result.value[0])
    if not np.isfinite(value):
        # +inf: p vanishes where q has mass (the integrand is +inf at a node).
        return ReferenceKL(value, 0.0, "quadrature", result.converged)
    if tail is None:
        tail = _estimated_outside(dq, dp, lo, hi, whole, result)
    error = result.error + tail + cubature.rounding_error(float(result.value[1]))
    return ReferenceKL(max(value, 0.0), error, "quadrature", result.converged)
