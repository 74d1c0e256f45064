"""Too few samples give NaN spreads, never a confident 0; NaN in, NaN out (issue 15)."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from jaxkl import stats
from jaxkl._src.montecarlo.engine import sample_log_ratio

Q, P = distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 1.0)
ALL = ("k1", "k2", "k3", "cv*", "forward", "total_variation")


def test_one_sample_estimate_has_nan_spread():
    # Before: std = stderr = 0 and a zero-width interval.
    res = jaxkl.estimate(Q, P, key=jax.random.key(0), num_samples=1, estimators=ALL)
    for name, s in res.items():
        assert int(s.count) == 1 and np.isfinite(float(s.mean)), name
        assert np.isnan(float(s.std)) and np.isnan(float(s.stderr)), name
        assert all(np.isnan(float(v)) for v in s.interval()), name


def test_control_variate_needs_three_samples():
    # lam* is fitted to the same samples: with two, k1 + lam (r - 1) is constant.
    two = jaxkl.estimate(Q, P, key=jax.random.key(0), num_samples=2, estimators=("cv*", "k3"))
    assert np.isnan(float(two["cv*"].std)) and np.isfinite(float(two["k3"].std))
    three = jaxkl.estimate(Q, P, key=jax.random.key(0), num_samples=3, estimators=("cv*",))
    assert np.isfinite(float(three["cv*"].std)) and float(three["cv*"].std) > 0


@pytest.mark.parametrize("num_samples", [3, 5, 37])
def test_control_variate_std_is_the_regression_residual_with_two_dof(x64, num_samples):
    # Independent reference: the same samples, lam by least squares, residual std with
    # n - 2 degrees of freedom.
    key = jax.random.key(3)
    chunk = 1 << (num_samples - 1).bit_length()  # estimate's chunk for small runs
    l = np.asarray(sample_log_ratio(Q, P, jax.random.fold_in(key, 0), chunk))[:num_samples]
    k1, r1 = -l, np.expm1(l)
    lam = -np.cov(k1, r1)[0, 1] / np.var(r1, ddof=1)
    y = k1 + lam * r1
    res = jaxkl.estimate(Q, P, key=key, num_samples=num_samples, estimators=("cv*",))["cv*"]
    np.testing.assert_allclose(float(res.mean), y.mean(), rtol=1e-12)
    np.testing.assert_allclose(float(res.std), np.std(y, ddof=2), rtol=1e-10)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_describe_of_one_value_is_nan_spread(dtype):
    s = jaxkl.describe(jnp.array([2.0], dtype))
    assert float(s.mean) == 2.0 and int(s.count) == 1
    assert np.isnan(float(s.std)) and np.isnan(float(s.stderr))
    batch = jaxkl.describe(jnp.ones((1, 3), dtype), axis=0)
    assert batch.std.shape == (3,) and bool(jnp.all(jnp.isnan(batch.std)))
    assert bool(jnp.all(jnp.isnan(jax.jit(jaxkl.describe)(jnp.ones((1, 2), dtype)).stderr)))


def test_describe_of_nothing_is_nan():
    s = jaxkl.describe(jnp.zeros((0, 2)))
    assert s.mean.shape == (2,) and bool(jnp.all(jnp.isnan(s.mean)))
    assert bool(jnp.all(jnp.isnan(s.std))) and int(s.count[0]) == 0


def test_describe_rejects_a_scalar_and_a_bad_axis():
    with pytest.raises(ValueError, match="`x`"):
        jaxkl.describe(1.0)
    with pytest.raises(ValueError, match="`axis`"):
        jaxkl.describe(jnp.ones(3), axis=2)
    with pytest.raises(ValueError, match="`axis`"):
        jaxkl.describe(jnp.ones((2, 3)), axis=-3)
    with pytest.raises(TypeError, match="`axis`"):
        jaxkl.describe(jnp.ones(3), axis=0.0)
    assert float(jaxkl.describe(jnp.array([[1.0], [3.0]]), axis=-2).mean[0]) == 2.0


def test_summaries_of_moments():
    one = stats.from_samples(jnp.array([[1.0, 2.0]]))
    assert np.isnan(float(stats.summarize(one, 0).std))
    two = stats.from_samples(jnp.array([[1.0, 2.0], [3.0, 5.0]]))
    assert float(stats.summarize(two, 1).std) == pytest.approx(np.std([2.0, 5.0], ddof=1))
    fitted = stats.summarize_linear(two, jnp.array([1.0, -1.0]), ddof=2)
    assert np.isnan(float(fitted.std))
    empty = stats.summarize(stats.empty(1), 0)
    assert np.isnan(float(empty.mean)) and np.isnan(float(empty.std))
    jitted = jax.jit(stats.summarize, static_argnums=1)(one, 0)
    assert np.isnan(float(jitted.stderr))
    interval = jaxkl.relative_error(jaxkl.describe(jnp.array([1.0])), 1.0)
    assert all(np.isnan(float(v)) for v in interval[1:])


@pytest.mark.parametrize("values", [[0.1, np.nan, 0.3], [0.1, np.inf, 0.3],
                                    [0.1, -np.inf, 0.3]])
def test_optimal_cv_lambda_nan_in_nan_out(values):
    # Before: 0.0, as if r were constant.
    assert np.isnan(float(jaxkl.optimal_cv_lambda(jnp.array(values))))


def test_optimal_cv_lambda_defined_cases_jit_and_vmap():
    assert float(jaxkl.optimal_cv_lambda(jnp.full(4, 0.25))) == 0.0
    l = jnp.array([[0.1, -0.2, 0.3, 0.05], [0.0, 0.0, 0.0, 0.0], [0.1, jnp.nan, 0.2, 0.3]])
    rows = jaxkl.optimal_cv_lambda(l, axis=1)
    np.testing.assert_array_equal(np.isnan(rows), [False, False, True])
    assert float(rows[1]) == 0.0
    np.testing.assert_array_equal(np.asarray(jax.vmap(jaxkl.optimal_cv_lambda)(l)),
                                  np.asarray(rows))
    np.testing.assert_array_equal(np.asarray(jax.jit(jaxkl.optimal_cv_lambda,
                                                     static_argnames="axis")(l, axis=1)),
                                  np.asarray(rows))
    # Cov(l, r) / Var(r) against NumPy in float64.
    r = np.expm1(np.asarray(l[0], np.float64))
    expected = np.cov(np.asarray(l[0], np.float64), r, ddof=0)[0, 1] / np.var(r)
    np.testing.assert_allclose(float(rows[0]), expected, rtol=1e-5)
    grad = jax.grad(lambda x: jaxkl.optimal_cv_lambda(x))(jnp.full(4, 0.25))
    assert bool(jnp.all(jnp.isfinite(grad)))
