"""Gaussian-mixture constructors, parameter read-back and closed-form moments."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from jaxkl import mixtures

WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([-2.0, 0.5, 3.0])
SCALES = np.array([0.7, 1.2, 0.4])


def _numpy_log_density_1d(x):
    comp = stats.norm.logpdf(x[:, None], MEANS[None], SCALES[None]) + np.log(WEIGHTS)[None]
    return special.logsumexp(comp, axis=1)


def test_1d_log_prob_matches_numpy_float64():
    p = mixtures.gaussian_mixture_1d(MEANS, SCALES, weights=WEIGHTS)
    x = np.linspace(-6, 6, 41)
    np.testing.assert_allclose(p.log_prob(jnp.asarray(x)), _numpy_log_density_1d(x), rtol=2e-6)
    assert p.batch_shape == () and p.event_shape == ()


def test_logits_equal_weights_and_default_is_uniform():
    from_weights = mixtures.gaussian_mixture_1d(MEANS, SCALES, weights=WEIGHTS)
    from_logits = mixtures.gaussian_mixture_1d(MEANS, SCALES, logits=np.log(WEIGHTS) + 3.0)
    x = jnp.linspace(-5.0, 5.0, 11)
    np.testing.assert_allclose(from_weights.log_prob(x), from_logits.log_prob(x), rtol=1e-6)
    uniform = mixtures.gaussian_mixture_1d(MEANS, SCALES)
    np.testing.assert_allclose(jnp.exp(uniform.mixture_distribution.logits), np.full(3, 1 / 3),
                               rtol=1e-6)


def test_diag_and_full_log_prob_match_scipy():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(2, 3))
    scales = np.exp(rng.uniform(-0.5, 0.5, size=(2, 3)))
    a = rng.normal(size=(2, 3, 3))
    covariances = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(3)
    weights = np.array([0.4, 0.6])
    x = rng.normal(size=(7, 3))

    def reference(covs):
        comp = [np.log(w) + stats.multivariate_normal(m, c).logpdf(x)
                for w, m, c in zip(weights, means, covs, strict=True)]
        return special.logsumexp(np.stack(comp), axis=0)

    diag = mixtures.gaussian_mixture_diag(means, scales, weights=weights)
    full = mixtures.gaussian_mixture_full(means, covariances, weights=weights)
    np.testing.assert_allclose(diag.log_prob(x), reference([np.diag(s**2) for s in scales]),
                               rtol=1e-5)
    np.testing.assert_allclose(full.log_prob(x), reference(covariances), rtol=1e-5)
    assert diag.event_shape == (3,) and full.event_shape == (3,)


def test_1d_moments_match_numerical_integration():
    p = mixtures.gaussian_mixture_1d(MEANS, SCALES, weights=WEIGHTS)
    density = lambda x: np.exp(_numpy_log_density_1d(np.array([x]))[0])
    mean = integrate.quad(lambda x: x * density(x), -np.inf, np.inf)[0]
    second = integrate.quad(lambda x: x * x * density(x), -np.inf, np.inf)[0]
    moments = mixtures.mixture_moments(p)
    np.testing.assert_allclose(moments.mean, mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(moments.covariance, second - mean**2, rtol=1e-6)


def test_full_moments_match_monte_carlo():
    means = np.array([[0.0, 1.0], [2.0, -1.0]])
    covariances = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.2, 0.0], [0.0, 2.0]]])
    p = mixtures.gaussian_mixture_full(means, covariances, weights=np.array([0.3, 0.7]))
    x = np.asarray(p.sample(seed=jax.random.key(0), sample_shape=(200_000,)), np.float64)
    moments = mixtures.mixture_moments(p)
    n = x.shape[0]
    stderr_mean = x.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(x.mean(axis=0) - moments.mean) < 5 * stderr_mean)
    centred = x - x.mean(axis=0)
    products = centred[:, :, None] * centred[:, None, :]
    stderr_cov = products.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(products.mean(axis=0) - moments.covariance) < 5 * stderr_cov)


def test_batched_mixture_under_jit_and_vmap():
    means = jnp.asarray(np.stack([MEANS, MEANS + 1.0]))
    scales = jnp.asarray(np.stack([SCALES, SCALES]))

    @jax.jit
    def mean_of(m, s):
        return mixtures.mixture_moments(mixtures.gaussian_mixture_1d(m, s)).mean

    batched = mixtures.gaussian_mixture_1d(means, scales)
    assert batched.batch_shape == (2,)
    np.testing.assert_allclose(mean_of(means, scales), means.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(mean_of)(means, scales), means.mean(axis=1), rtol=1e-6)


def test_gradient_of_moments_through_parameters():
    # d mean / d mu_k = w_k; d var / d sigma_k = 2 w_k sigma_k.
    w = jnp.asarray(WEIGHTS, jnp.float32)
    grad_mean = jax.grad(lambda m: mixtures.mixture_moments(
        mixtures.gaussian_mixture_1d(m, SCALES, weights=w)).mean)(jnp.asarray(MEANS, jnp.float32))
    grad_var = jax.grad(lambda s: mixtures.mixture_moments(
        mixtures.gaussian_mixture_1d(MEANS, s, weights=w)).covariance)(
        jnp.asarray(SCALES, jnp.float32))
    np.testing.assert_allclose(grad_mean, WEIGHTS, rtol=1e-6)
    np.testing.assert_allclose(grad_var, 2 * WEIGHTS * SCALES, rtol=1e-6)


def test_dtypes_bf16_becomes_float32():
    p = mixtures.gaussian_mixture_1d(jnp.asarray(MEANS, jnp.bfloat16),
                                     jnp.asarray(SCALES, jnp.bfloat16))
    assert p.log_prob(jnp.float32(0.0)).dtype == jnp.float32


def test_dtypes_float64_under_x64(x64):
    p = mixtures.gaussian_mixture_1d(jnp.asarray(MEANS), jnp.asarray(SCALES),
                                     weights=jnp.asarray(WEIGHTS))
    value = p.log_prob(jnp.float64(0.3))
    assert value.dtype == jnp.float64
    np.testing.assert_allclose(value, _numpy_log_density_1d(np.array([0.3]))[0], rtol=1e-13)


def test_mixture_params_of_plain_gaussians():
    params, univariate = mixtures.mixture_params(distrax.Normal(1.0, 2.0))
    assert univariate and params.means.shape == (1, 1) and params.covariances.shape == (1, 1, 1)
    params, univariate = mixtures.mixture_params(
        distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.array([1.0, 3.0])))
    assert not univariate
    np.testing.assert_allclose(params.covariances[0], np.diag([1.0, 9.0]))
    with pytest.raises(TypeError, match="Laplace"):
        mixtures.mixture_params(distrax.Laplace(0.0, 1.0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weights=[0.5, 0.6, -0.1]), "non-negative"),
        (dict(weights=[0.5, 0.6, 0.1]), "sum to 1"),
        (dict(weights=[0.5, 0.5]), "weights"),
        (dict(weights=[0.2, 0.5, 0.3], logits=[0.0, 0.0, 0.0]), "not both"),
        (dict(logits=[-np.inf, -np.inf, -np.inf]), "logits"),
        (dict(weights=[0.2, np.nan, 0.3]), "finite"),
    ],
)
def test_bad_weights_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mixtures.gaussian_mixture_1d(MEANS, SCALES, **kwargs)


def test_bad_scales_and_shapes_raise():
    with pytest.raises(ValueError, match="scales"):
        mixtures.gaussian_mixture_1d(MEANS, -SCALES)
    with pytest.raises(ValueError, match="scales"):
        mixtures.gaussian_mixture_1d(MEANS, SCALES[:2])
    with pytest.raises(ValueError, match="means"):
        mixtures.gaussian_mixture_1d(np.float32(1.0), np.float32(1.0))
    with pytest.raises(TypeError, match="means"):
        mixtures.gaussian_mixture_1d(np.array([1, 2]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="means"):
        mixtures.gaussian_mixture_diag(MEANS, SCALES)
    with pytest.raises(ValueError, match="scales"):
        mixtures.gaussian_mixture_diag(np.zeros((2, 3)), np.zeros((2, 3)))
    # No component, or components of dimension 0 (an argmax error, or accepted, before).
    with pytest.raises(ValueError, match="`means` must hold at least one component"):
        mixtures.gaussian_mixture_1d([], [])
    with pytest.raises(ValueError, match="of dimension >= 1"):
        mixtures.gaussian_mixture_diag(np.zeros((1, 0)), np.zeros((1, 0)))
    with pytest.raises(ValueError, match="at least one component"):
        mixtures.gaussian_mixture_full(np.zeros((0, 2)), np.zeros((0, 2, 2)))


def test_bad_covariances_raise():
    means = np.zeros((2, 2))
    good = np.stack([np.eye(2), np.eye(2)])
    with pytest.raises(ValueError, match=r"covariances`\[1\] is not positive definite"):
        mixtures.gaussian_mixture_full(means, np.stack([np.eye(2), np.diag([1.0, -1.0])]))
    with pytest.raises(ValueError, match="symmetric"):
        mixtures.gaussian_mixture_full(means, good + np.array([[0.0, 0.5], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        mixtures.gaussian_mixture_full(means, np.eye(2))
