"""Per-sample estimators: accuracy to a few ulps, closed-form moments, transforms, errors."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from tests import _reference as ref

# Both signs, from 1e-8 (where expm1(l) - l has cancelled completely in float32) to 30.
_MAG = np.logspace(-8, np.log10(30), 300)
GRID = np.concatenate([-_MAG[::-1], [0.0], _MAG])

# name -> (jaxkl function, 50-digit reference). All are `f(r) - f'(1)(r - 1)` forms.
CASES = {
    "k3": (jaxkl.k3, ref.k3),
    "forward_kl": (jaxkl.forward_kl, ref.forward_kl),
    **{
        name: (lambda l, n=name: jaxkl.csiszar(l, divergence=n), getattr(ref, name))
        for name in jaxkl.F_DIVERGENCES
    },
}
# Each kernel is a short composition of correctly rounded or ~1-ulp operations (expm1, a
# Horner series whose tail is < eps/4, one subtraction with condition number <= ~3 at the
# branch point |l| = 1, a square), so a handful of ulps is the analytical budget.
ULP_BUDGET = 10


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_accuracy_in_ulps_over_whole_range(name, dtype):
    fn, exact = CASES[name]
    with jax.enable_x64(dtype == np.float64):
        grid = GRID.astype(dtype)
        got = np.asarray(fn(jnp.asarray(grid)))
        assert got.dtype == dtype
        want = ref.evaluate(exact, grid)
        assert ref.ulp_error(got, want, dtype).max() <= ULP_BUDGET


@pytest.mark.parametrize("alpha", [-1.0, 0.5, 2.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_amari_alpha_accuracy(alpha, dtype):
    # exp(alpha * l) has condition number |alpha * l|: the budget grows by that much.
    with jax.enable_x64(dtype == np.float64):
        grid = GRID[np.abs(GRID) <= 10].astype(dtype)
        got = np.asarray(jaxkl.csiszar(jnp.asarray(grid), divergence="amari_alpha", alpha=alpha))
        want = ref.evaluate(ref.amari_alpha(alpha), grid)
        budget = ULP_BUDGET + np.abs(alpha * grid.astype(np.float64))
        assert np.all(ref.ulp_error(got, want, dtype) <= budget)


def test_k3_near_zero_matches_taylor_series_in_float32():
    # The naive float32 formula returns 0 (or garbage) here; the series is l^2/2 + l^3/6.
    l = np.array([1e-6, -1e-6, 3e-4, -3e-4, 1e-3], np.float32)
    series = l.astype(np.float64) ** 2 / 2 + l.astype(np.float64) ** 3 / 6
    np.testing.assert_allclose(np.asarray(jaxkl.k3(jnp.asarray(l))), series, rtol=3e-7)
    naive = np.expm1(l) - l
    assert np.max(np.abs(naive - series) / series) > 1e-2  # what the series avoids


def test_k3_is_non_negative_everywhere():
    l = jnp.asarray(np.concatenate([GRID, -GRID * 3, np.linspace(-80, 80, 10001)]), jnp.float32)
    assert bool(jnp.all(jaxkl.k3(l) >= 0))
    for name in jaxkl.F_DIVERGENCES:
        assert bool(jnp.all(jaxkl.csiszar(l, divergence=name) >= 0)), name


def test_simple_estimators_match_numpy_float64():
    l = np.random.default_rng(0).normal(0, 3, size=1000)
    with jax.enable_x64(True):
        np.testing.assert_allclose(jaxkl.k1(jnp.asarray(l)), -l, rtol=1e-15)
        np.testing.assert_allclose(jaxkl.k2(jnp.asarray(l)), l**2 / 2, rtol=1e-15)
        np.testing.assert_allclose(
            jaxkl.control_variate(jnp.asarray(l), 0.3), -l + 0.3 * np.expm1(l), rtol=1e-12
        )


def test_control_variate_endpoints():
    l = jnp.asarray(GRID, jnp.float32)
    assert bool(jnp.all(jaxkl.control_variate(l, 1.0) == jaxkl.k3(l)))
    np.testing.assert_allclose(jaxkl.control_variate(l, 0.0), jaxkl.k1(l), rtol=1e-6, atol=1e-7)
    lam = jnp.full(l.shape, 0.5)
    np.testing.assert_allclose(
        jaxkl.control_variate(l, lam), jaxkl.control_variate(l, 0.5), rtol=1e-6
    )


def test_csiszar_limits_of_amari_alpha():
    l = jnp.linspace(-3.0, 3.0, 101)
    amari = lambda alpha: jaxkl.csiszar(l, divergence="amari_alpha", alpha=alpha)
    np.testing.assert_array_equal(amari(0.0), jaxkl.k3(l))
    np.testing.assert_array_equal(
        jaxkl.csiszar(l, divergence="amari_alpha", alpha=1.0), jaxkl.forward_kl(l)
    )


@pytest.mark.parametrize("fn", [jaxkl.k1, jaxkl.k2, jaxkl.k3, jaxkl.forward_kl])
def test_jit_equals_eager_and_vmap_equals_loop(fn):
    l = jax.random.normal(jax.random.key(1), (4, 50)) * 2
    eager = fn(l)
    # XLA may fuse (e.g. contract to FMA) differently under jit: equal to an ulp or two.
    np.testing.assert_allclose(jax.jit(fn)(l), eager, rtol=3e-7, atol=1e-30)
    looped = jnp.stack([fn(row) for row in l])
    np.testing.assert_allclose(jax.vmap(fn)(l), looped, rtol=3e-7, atol=1e-30)


def test_gradients_equal_closed_forms(x64):
    l = jnp.asarray(np.concatenate([GRID[np.abs(GRID) < 20], [-50.0, 50.0]]))
    grad = lambda f: jax.vmap(jax.grad(f))(l)
    np.testing.assert_allclose(grad(jaxkl.k1), -np.ones(l.shape))
    np.testing.assert_allclose(grad(jaxkl.k2), l)
    np.testing.assert_allclose(grad(jaxkl.k3), np.expm1(l), rtol=1e-14)
    np.testing.assert_allclose(grad(jaxkl.forward_kl), l * np.exp(l), rtol=1e-14)
    np.testing.assert_allclose(
        grad(lambda x: jaxkl.csiszar(x, divergence="pearson_chi2")),
        2 * np.expm1(l) * np.exp(l),
        rtol=1e-12,
    )


@pytest.mark.parametrize("name", ["k1", "k2", "k3", "forward_kl", *jaxkl.F_DIVERGENCES])
def test_gradients_finite_wherever_values_are(name):
    fn = CASES[name][0] if name in CASES else getattr(jaxkl, name)
    l = jnp.array([-88.0, -50.0, -1e-6, 0.0, 1e-6, 1.0, 50.0])
    values, grads = fn(l), jax.vmap(jax.grad(fn))(l)
    # pearson_chi2 = (r - 1)^2 exceeds float32 at l = 50 (e^100): value and gradient are inf.
    assert bool(jnp.all(jnp.isfinite(grads) == jnp.isfinite(values))), grads
    if name in ("k1", "k2", "k3", "forward_kl"):
        assert bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_shape_and_dtype_preserved(dtype):
    l = jnp.linspace(-2, 2, 24, dtype=dtype).reshape(2, 3, 4)
    for fn in (jaxkl.k1, jaxkl.k2, jaxkl.k3, jaxkl.forward_kl):
        out = fn(l)
        assert out.shape == l.shape and out.dtype == dtype
    # bf16 input, float32 computation: the result is the float32 value rounded once.
    want = jaxkl.k3(l.astype(jnp.float32)).astype(dtype)
    np.testing.assert_array_equal(jaxkl.k3(l), want)


@pytest.mark.parametrize("mu", [0.1, 0.5, 1.0, 2.0])
def test_moments_match_closed_forms_for_gaussian_shift(mu):
    """q = N(0,1), p = N(mu,1): l ~ N(-mu^2/2, mu^2). Means and variances within 5 stderr."""
    n = 400_000
    x = jax.random.normal(jax.random.key(7), (n,))
    l = distrax.Normal(mu, 1.0).log_prob(x) - distrax.Normal(0.0, 1.0).log_prob(x)
    kl = mu**2 / 2
    closed = {  # estimator: (mean, variance), DESIGN.md
        "k1": (kl, mu**2),
        "k2": (kl + mu**4 / 8, (2 * mu**4 + mu**6) / 4),
        "k3": (kl, np.exp(mu**2) - 1 - mu**2),
    }
    for name, (mean, var) in closed.items():
        k = np.asarray(getattr(jaxkl, name)(l), np.float64)
        assert abs(k.mean() - mean) <= 5 * k.std() / np.sqrt(n), name
        sq = (k - mean) ** 2  # its mean is the variance; its std/sqrt(n) the stderr
        assert abs(sq.mean() - var) <= 5 * sq.std() / np.sqrt(n), name


def test_optimal_cv_lambda_matches_closed_form():
    """For q = N(0,1), p = N(mu,1): Cov(l, r) = mu^2 and Var(r) = exp(mu^2) - 1 in closed form."""
    mu = 0.7
    x = jax.random.normal(jax.random.key(3), (1_000_000,))
    l = -mu * mu / 2 + mu * x
    want = mu**2 / np.expm1(mu**2)
    got = float(jaxkl.optimal_cv_lambda(l))
    assert abs(got - want) < 0.01 * want


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: jaxkl.k3(jnp.arange(3)), "log_ratio.*floating"),
        (lambda: jaxkl.k1(np.array([1, 2])), "log_ratio.*floating"),
        (lambda: jaxkl.forward_kl(True), "log_ratio"),
        (lambda: jaxkl.csiszar(jnp.ones(3), divergence="kl"), "Unknown `divergence`"),
        (lambda: jaxkl.csiszar(jnp.ones(3), divergence="amari_alpha"), "alpha"),
        (lambda: jaxkl.csiszar(jnp.ones(3), divergence="jensen_shannon", alpha=0.5), "alpha"),
        (lambda: jaxkl.control_variate(jnp.ones(3), jnp.ones(4)), "lam"),
    ],
)
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_k3_gradient_accuracy_in_ulps(dtype):
    """d k3 / dl = expm1(l), from the value's own series inside |l| < 1 and exp(l) - 1
    outside: within 4 ulps of the correctly rounded expm1 over the whole grid."""
    with jax.enable_x64(dtype == np.float64):
        grid = GRID.astype(dtype)
        got = np.asarray(jax.vmap(jax.grad(jaxkl.k3))(jnp.asarray(grid)))
        assert got.dtype == dtype
        want = ref.evaluate(lambda x: x.exp() - 1, grid)
        assert ref.ulp_error(got, want, dtype).max() <= 4
