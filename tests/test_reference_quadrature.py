"""quadrature_kl / reference_kl against independent references (issue 15).

The references (``tests/_kl_reference.py``) are scipy's adaptive quadrature on pieces
between breakpoints at every component and every kink of the log-densities, graded
outwards, and in 2-D an outer scipy integral of an inner composite rule. Each check is
``|value - truth| <= error + truth_error``: the reported error must bound the true one.
"""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from jaxkl.reference import quadrature_kl, reference_kl
from tests import _kl_reference as ref


def _mixture_1d(args):
    means, scales, weights = args
    return jaxkl.gaussian_mixture_1d(means, scales, weights=weights)


def _mixture_2d(args):
    means, covariances, weights = args
    return jaxkl.gaussian_mixture_full(means, covariances, weights=weights)


def _check(result, truth, truth_error):
    assert result.value >= 0
    assert abs(result.value - truth) <= result.error + truth_error, (result, truth, truth_error)


# ----------------------------------------------------------------------------------------
# The inputs of the issue: a component of scale 1e-3 fell between the nodes of both rules
# (value log 2 with error 7e-16; and -0.3466 with error 0.85).

Q1 = ([0.0], [1.0], [1.0])
P1 = ([0.2, 0.0], [1e-3, 1.0], [0.5, 0.5])


@pytest.mark.parametrize("q_args, p_args, expected", [
    (Q1, P1, 0.6793485017354114),
    (P1, Q1, 2.5291728262983395),
])
def test_issue_inputs_with_a_narrow_component(x64, q_args, p_args, expected):
    q, p = _mixture_1d(q_args), _mixture_1d(p_args)
    truth, truth_error = ref.kl_1d(*(tuple(np.asarray(a, float) for a in args)
                                      for args in (q_args, p_args)))
    assert abs(truth - expected) <= 2e-15 * expected + truth_error
    r = reference_kl(q, p)
    assert r.method == "quadrature" and r.converged
    _check(r, expected, 1e-15)
    assert r.error < 1e-9 * expected


def test_issue_inputs_in_float32():
    # The same mixtures with float32 parameters: the reference is computed for the
    # float32-rounded values (the quadrature itself runs in float64).
    for q_args, p_args in ((Q1, P1), (P1, Q1)):
        q, p = _mixture_1d(q_args), _mixture_1d(p_args)
        rounded = [tuple(np.asarray(np.asarray(a, np.float32), float) for a in args)
                   for args in (q_args, p_args)]
        truth, truth_error = ref.kl_1d(*rounded)
        _check(quadrature_kl(q, p), truth, truth_error)


def test_issue_inputs_in_2d(x64):
    # "The same happens in 2-D": a 1e-3 component on top of a unit one.
    unit = (np.zeros((1, 2)), np.eye(2)[None], np.ones(1))
    spike = (np.array([[0.2, 0.0], [0.0, 0.0]]),
             np.stack([1e-6 * np.eye(2), np.eye(2)]), np.array([0.5, 0.5]))
    for q_args, p_args in ((unit, spike), (spike, unit)):
        truth, truth_error = ref.kl_2d(q_args, p_args)
        r = reference_kl(_mixture_2d(q_args), _mixture_2d(p_args))
        assert r.method == "quadrature" and r.converged
        _check(r, truth, truth_error)


# ----------------------------------------------------------------------------------------
# Random pairs: scales 1e-4 .. 1e2, means up to 100 apart, narrow components on top of
# wide ones half of the time.


@pytest.mark.slow
def test_random_1d_pairs_error_bounds_the_truth(x64):
    rng = np.random.default_rng(2024)
    failures, ratios = [], []
    for i in range(250):
        near = []
        q_args = ref.random_mixture_1d(rng, near)
        p_args = ref.random_mixture_1d(rng, near)
        r = reference_kl(_mixture_1d(q_args), _mixture_1d(p_args))
        truth, truth_error = ref.kl_1d(q_args, p_args)
        ratios.append(abs(r.value - truth) / (r.error + truth_error))
        if not (r.value >= 0 and ratios[-1] <= 1 and r.converged):
            failures.append((i, r, truth, truth_error))
    print(f"1-D: 250 pairs, max |error| / bound = {max(ratios):.3g}")
    assert not failures, failures


@pytest.mark.slow
def test_random_2d_pairs_error_bounds_the_truth(x64):
    rng = np.random.default_rng(2025)
    failures, ratios, methods, converged = [], [], [], 0
    for i in range(50):
        near = []
        q_args = ref.random_mixture_2d(rng, near)
        p_args = ref.random_mixture_2d(rng, near)
        r = reference_kl(_mixture_2d(q_args), _mixture_2d(p_args))
        truth, truth_error = ref.kl_2d(q_args, p_args)
        ratios.append(abs(r.value - truth) / (r.error + truth_error))
        methods.append(r.method)
        converged += r.converged
        if not (r.value >= 0 and ratios[-1] <= 1):
            failures.append((i, r, truth, truth_error))
    print(f"2-D: 50 pairs, max |error| / bound = {max(ratios):.3g}, methods "
          f"{ {m: methods.count(m) for m in set(methods)} }, {converged} converged")
    assert not failures, failures


# ----------------------------------------------------------------------------------------
# What the result says when it cannot do better.


def test_identical_distributions_give_zero_with_a_rounding_error(x64):
    q = _mixture_1d(([-3.0, 0.0, 4.0], [1e-4, 1.0, 30.0], [0.2, 0.5, 0.3]))
    r = quadrature_kl(q, q)
    assert r.value == 0.0 and 0 < r.error < 1e-12


def test_cell_budget_gives_an_honest_unconverged_result(x64):
    q_args = (np.array([0.0, 0.3]), np.array([1.0, 1e-3]), np.array([0.5, 0.5]))
    p_args = (np.array([0.0, 5.0]), np.array([1.0, 1e-4]), np.array([0.5, 0.5]))
    truth, truth_error = ref.kl_1d(q_args, p_args)
    r = quadrature_kl(_mixture_1d(q_args), _mixture_1d(p_args), max_cells=60)
    assert not r.converged
    _check(r, truth, truth_error)
    assert r.error > 1e-9 * truth  # not a tight-looking error


def test_unresolvable_ridge_is_flagged_and_auto_falls_back_to_the_bounds(x64):
    # A 2-D ridge of scales 1e-4 x 1e2 along the diagonal needs ~1e6 cells to resolve.
    angle = np.pi / 4
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    ridge = rotation @ np.diag([1e-8, 1e4]) @ rotation.T
    mean_p, cov_p = np.array([1.0, 0.0]), 100.0 * np.eye(2)
    # q is the ridge written as two identical halves: the same distribution as the single
    # ridge (so the Gaussian closed form is the truth), but a two-component mixture, which
    # has no closed form and goes to quadrature.
    q = jaxkl.gaussian_mixture_full(np.zeros((2, 2)), np.stack([ridge, ridge]))
    p = jaxkl.gaussian_mixture_full(mean_p[None], cov_p[None])
    r = quadrature_kl(q, p)
    assert not r.converged and r.error == math.inf
    auto = reference_kl(q, p)
    assert auto.method == "bounds" and np.isfinite(auto.error)
    precision = np.linalg.inv(cov_p)
    truth = 0.5 * (np.trace(precision @ ridge) + mean_p @ precision @ mean_p - 2
                   + np.log(np.linalg.det(cov_p) / np.linalg.det(ridge)))
    assert abs(auto.value - truth) <= auto.error
    # Written as one component, "auto" takes the closed form (its error covers the
    # ridge's condition number of 1e12).
    single = reference_kl(jaxkl.gaussian_mixture_full(np.zeros((1, 2)), ridge[None]), p)
    assert single.method == "analytic" and abs(single.value - truth) <= single.error


def test_user_box_counts_the_mass_outside(x64):
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(0.5, 2.0)
    truth = math.log(2.0) + (1.0 + 0.25) / 8.0 - 0.5
    for box, tight in (([[-1.0, 1.0]], False), ([-40.0, 40.0], True)):
        r = quadrature_kl(q, p, bounds=box)
        _check(r, truth, 1e-15)
        assert (r.error < 1e-12) == tight


# ----------------------------------------------------------------------------------------
# Other distributions and bounded supports.


def test_uniform_against_normal_has_a_finite_error():
    # int_0^1 -log phi(x) dx = log(2 pi) / 2 + 1/6.
    truth = 0.5 * math.log(2 * math.pi) + 1.0 / 6.0
    r = quadrature_kl(distrax.Uniform(0.0, 1.0), distrax.Normal(0.0, 1.0))
    assert np.isfinite(r.error) and r.converged
    _check(r, truth, 1e-15)
    assert r.error < 1e-9
    # KL(Uniform(a, b) || Uniform(c, d)) = log((d - c) / (b - a)) when [a, b] is inside.
    r = quadrature_kl(distrax.Uniform(0.0, 1.0), distrax.Uniform(-1.0, 3.0))
    _check(r, math.log(4.0), 1e-15)
    assert quadrature_kl(distrax.Normal(0.0, 1.0), distrax.Uniform(0.0, 1.0)).value == math.inf


@pytest.mark.parametrize("bounds, error, match", [
    ([[-np.inf, np.inf]], ValueError, "`bounds` must be finite"),
    ([[np.nan, 1.0]], ValueError, "`bounds` must be finite"),
    ([0.0, 1.0, 2.0], ValueError, r"`bounds` must have shape \(1, 2\)"),
    ([[0.0, 1.0], [0.0, 1.0]], ValueError, r"`bounds` must have shape \(1, 2\)"),
    ([[1.0, -1.0]], ValueError, "low < high"),
    ("wide", TypeError, "`bounds` must be numbers"),
])
def test_invalid_bounds_are_named(bounds, error, match):
    with pytest.raises(error, match=match):
        quadrature_kl(distrax.Normal(0.0, 1.0), distrax.Normal(0.0, 2.0), bounds=bounds)
    with pytest.raises(error, match=match):
        reference_kl(distrax.Normal(0.0, 1.0), jaxkl.gaussian_mixture_1d([0.0], [2.0]),
                     method="quadrature", bounds=bounds)


def test_two_dimensional_bounds_shape_is_checked():
    q = distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2))
    with pytest.raises(ValueError, match=r"`bounds` must have shape \(2, 2\)"):
        quadrature_kl(q, q, bounds=[[-1.0, 1.0]])
    assert quadrature_kl(q, q, bounds=[[-9.0, 9.0], [-9.0, 9.0]]).value == 0.0


# ----------------------------------------------------------------------------------------
# Invalid parameters (issue item 6): a Normal with scale -1 has the covariance of scale 1.


@pytest.mark.parametrize("bad", [
    lambda: distrax.Normal(0.0, -1.0),
    lambda: distrax.Normal(0.0, 0.0),
    lambda: distrax.Normal(jnp.nan, 1.0),
    lambda: distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.array([1.0, -1.0])),
    lambda: distrax.MultivariateNormalTri(jnp.zeros(2), jnp.array([[1.0, 0.0], [1.0, 0.0]])),
    lambda: distrax.MixtureSameFamily(distrax.Categorical(logits=jnp.array([0.0, jnp.nan])),
                                      distrax.Normal(jnp.zeros(2), jnp.ones(2))),
    lambda: distrax.Laplace(0.0, -2.0),
    lambda: distrax.Uniform(1.0, 0.0),
])
@pytest.mark.parametrize("method", ["auto", "analytic", "quadrature", "bounds", "monte_carlo"])
def test_invalid_parameters_of_p_raise_naming_p(bad, method):
    p = bad()
    q = distrax.Normal(0.0, 1.0) if p.event_shape == () else distrax.MultivariateNormalDiag(
        jnp.zeros(2), jnp.ones(2))
    with pytest.raises(ValueError, match="`p`"):
        reference_kl(q, p, method=method, key=jax.random.key(0), num_samples=4096)
    with pytest.raises(ValueError, match="`q`"):
        reference_kl(p, q, method=method, key=jax.random.key(0), num_samples=4096)
