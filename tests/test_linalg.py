"""jaxkl._src.linalg: Cholesky and triangular solves in plain JAX, checked against NumPy's LAPACK.

They exist so that full-covariance log-densities never call jaxlib's LAPACK kernels,
which deadlock XLA:CPU's thread pool when several run at once (the stress test in
test_hang_stress.py runs the workload that hung); here: exactness, gradients, batching,
and that the compiled programs contain no custom call.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg, stats

from jaxkl import families, mixtures, reference
from jaxkl._src import linalg as _linalg


def _spd(rng, batch, dim):
    a = rng.normal(size=batch + (dim, dim))
    return a @ np.swapaxes(a, -1, -2) + dim * np.eye(dim)


@pytest.mark.parametrize("dim", [1, 2, 3, 8])
def test_cholesky_and_solves_match_numpy_in_float64(x64, dim):
    rng = np.random.default_rng(dim)
    matrix = _spd(rng, (4,), dim)
    factor = np.asarray(_linalg.cholesky(jnp.asarray(matrix)))
    np.testing.assert_allclose(factor, np.linalg.cholesky(matrix), rtol=1e-13, atol=1e-13)
    assert np.all(np.triu(factor, 1) == 0)

    rhs = rng.normal(size=(5, 4, dim))  # a batch of points against 4 factors
    solved = np.asarray(_linalg.solve_lower_triangular(jnp.asarray(factor), jnp.asarray(rhs)))
    expected = np.stack([[linalg.solve_triangular(f, r, lower=True)
                          for f, r in zip(factor, row, strict=True)] for row in rhs])
    np.testing.assert_allclose(solved, expected, rtol=1e-12, atol=1e-12)

    columns = rng.normal(size=(4, dim, 3))
    solved_matrix = _linalg.solve_lower_triangular_matrix(jnp.asarray(factor),
                                                          jnp.asarray(columns))
    np.testing.assert_allclose(np.asarray(solved_matrix), np.linalg.solve(factor, columns),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        np.asarray(_linalg.log_abs_det_triangular(jnp.asarray(factor))),
        0.5 * np.linalg.slogdet(matrix)[1], rtol=1e-13,
    )


def test_solve_ignores_the_upper_triangle():
    lower = jnp.array([[2.0, 99.0], [1.0, 4.0]])
    np.testing.assert_allclose(_linalg.solve_lower_triangular(lower, jnp.array([2.0, 9.0])),
                               [1.0, 2.0])


def test_gradients_match_jax_linalg(x64):
    rng = np.random.default_rng(1)
    matrix = jnp.asarray(_spd(rng, (), 3))
    rhs = jnp.asarray(rng.normal(size=3))

    def ours(a, b):
        return jnp.sum(jnp.sin(_linalg.solve_lower_triangular(_linalg.cholesky(a), b)))

    def theirs(a, b):
        factor = jnp.linalg.cholesky(a)
        return jnp.sum(jnp.sin(jax.scipy.linalg.solve_triangular(factor, b, lower=True)))

    for got, want in zip(jax.grad(ours, (0, 1))(matrix, rhs),
                         jax.grad(theirs, (0, 1))(matrix, rhs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_cholesky_of_an_indefinite_matrix_is_nan_like_jax():
    factor = _linalg.cholesky(jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    assert np.isnan(np.asarray(factor)[1, 1]) and float(factor[0, 0]) == 1.0


def test_multivariate_normal_tri_log_prob_matches_scipy_and_slices():
    rng = np.random.default_rng(2)
    covariances = _spd(rng, (3,), 2)
    means = rng.normal(size=(3, 2))
    factor = np.linalg.cholesky(covariances)
    d = mixtures.MultivariateNormalTri(jnp.asarray(means, jnp.float32),
                                       jnp.asarray(factor, jnp.float32))
    x = rng.normal(size=(6, 1, 2))
    expected = np.stack([stats.multivariate_normal(m, c).logpdf(x[:, 0])
                         for m, c in zip(means, covariances, strict=True)], axis=-1)
    np.testing.assert_allclose(d.log_prob(jnp.asarray(x, jnp.float32)), expected, rtol=2e-6)
    one = d[1]
    assert isinstance(one, mixtures.MultivariateNormalTri) and one.batch_shape == ()
    np.testing.assert_allclose(one.log_prob(jnp.asarray(x[:, 0], jnp.float32)), expected[:, 1],
                               rtol=2e-6)
    # Same distribution as distrax's, up to rounding.
    theirs = distrax.MultivariateNormalTri(jnp.asarray(means), jnp.asarray(factor))
    with jax.numpy_rank_promotion("allow"):  # distrax broadcasts implicitly
        their_log_prob = theirs.log_prob(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(d.log_prob(jnp.asarray(x, jnp.float32)), their_log_prob,
                               rtol=2e-6)


def _custom_calls(fn, *args) -> list[str]:
    text = jax.jit(fn).lower(*args).compile().as_text()
    return [line for line in text.splitlines() if "custom_call_target=" in line]


def test_full_covariance_paths_compile_without_lapack_calls():
    means = jnp.array([[-1.0, 0.0], [1.0, 0.5]])
    covariances = jnp.array([[[0.5, 0.2], [0.2, 0.4]], [[0.3, -0.1], [-0.1, 0.6]]])
    x = jnp.ones((16, 2))

    def mixture_log_prob(m, c, points):
        return mixtures.gaussian_mixture_full(m, c).log_prob(points)

    family = families.full_covariance_gaussian(2)
    params = family.init(jax.random.key(0))

    def family_value_and_grad(params, points):
        return jax.value_and_grad(lambda p: family.distribution(p).log_prob(points).sum())(params)

    def bounds(m, c):
        q = mixtures.gaussian_mixture_full(m, c)
        return reference.mixture_kl_approximations(q, q)

    assert _custom_calls(mixture_log_prob, means, covariances, x) == []
    assert _custom_calls(family_value_and_grad, params, x) == []
    assert _custom_calls(bounds, means, covariances) == []
