"""Regressions from the review of fitting, families, reference and mixtures.

Each test failed before its fix (see the comment on each).
"""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkl import families as F
from jaxkl import mixtures
from jaxkl._src.fitting.objectives import _renyi_value
from jaxkl.fitting import default_optimizer, evaluate, fit
from jaxkl.reference import mixture_kl_approximations, quadrature_kl, reference_kl

# ----------------------------------------------------------------------------------------
# Renyi objective: logsumexp(a l - log n) / (a (a - 1)) cancelled to O(eps log n) absolute
# before the division by a, so the float32 value was 86% off at a = 1e-6.
# ----------------------------------------------------------------------------------------


def _renyi_float64(log_ratio, alpha):
    """log mean(r^a) / (a (a - 1)) by the textbook formula in float64 (no cancellation
    matters there at these alphas: eps64 * log n / a is < 1e-9 relative)."""
    log_ratio = np.asarray(log_ratio, np.float64)
    m = np.max(alpha * log_ratio)
    return (m + np.log(np.mean(np.exp(alpha * log_ratio - m)))) / (alpha * (alpha - 1))


@pytest.mark.parametrize("alpha", [1e-6, 1e-4, 1e-2, 0.5, 0.9, 1.5, 2.0])
@pytest.mark.parametrize("num_samples", [64, 4096])
def test_renyi_value_is_accurate_in_float32(alpha, num_samples):
    # Log-ratios of q = N(0, 1) against p = N(1, 1): l ~ N(-1/2, 1).
    log_ratio = np.random.default_rng(0).normal(-0.5, 1.0, num_samples).astype(np.float32)
    log_w = jnp.full((num_samples,), -math.log(num_samples), jnp.float32)
    value = _renyi_value(jnp.asarray(log_ratio), log_w, jnp.float32(alpha))
    # float32 alpha itself is rounded by eps32/2 relative; the value's sensitivity to it is
    # below 1 (relative) here, so 1e-5 leaves room for a few ulps without hiding the bug.
    expected = _renyi_float64(log_ratio, float(np.float32(alpha)))
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_renyi_value_with_large_exponents_uses_logsumexp_branch():
    # a (l - mean l) up to ~200: the series branch would overflow; the value must be finite.
    log_ratio = jnp.linspace(-40.0, 60.0, 101, dtype=jnp.float32)
    log_w = jnp.full((101,), -math.log(101), jnp.float32)
    value = _renyi_value(log_ratio, log_w, jnp.float32(2.0))
    np.testing.assert_allclose(float(value), _renyi_float64(np.asarray(log_ratio), 2.0),
                               rtol=1e-6)
    grad = jax.grad(lambda l: _renyi_value(l, log_w, jnp.float32(2.0)))(log_ratio)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_renyi_at_small_alpha_tends_to_reverse_kl_on_the_same_samples():
    # Same key => same samples; D_a/a -> KL(q||p) estimate as a -> 0 (difference O(a)).
    family, p = F.gaussian(), distrax.Normal(1.0, 1.0)
    params = family.encode(loc=0.0, scale=1.0)
    common = dict(key=jax.random.key(0), num_samples=4096)
    reverse = evaluate(p, family, params, divergence="reverse_kl", **common)
    renyi = evaluate(p, family, params, divergence="renyi", alpha=1e-6, **common)
    np.testing.assert_allclose(float(renyi), float(reverse), rtol=1e-5)


# ----------------------------------------------------------------------------------------
# fit: a non-finite start made every step non-finite, so every step was skipped and the
# returned params were NaN, contradicting "params stay finite".
# ----------------------------------------------------------------------------------------


def test_fit_rejects_non_finite_init_params():
    family = F.gaussian()
    init = {"loc": jnp.float32(jnp.nan), "raw_scale": jnp.float32(0.0)}
    with pytest.raises(ValueError, match=r"`init_params\['loc'\]` must be finite"):
        fit(distrax.Normal(0.0, 1.0), family, divergence="reverse_kl", key=jax.random.key(0),
            num_steps=5, num_samples=4, init_params=init)


def test_alpha_learning_rate_and_key_validation():
    p, family = distrax.Normal(0.0, 1.0), F.gaussian()
    common = dict(key=jax.random.key(0), num_steps=5, num_samples=4)
    # A NumPy float is a valid Amari alpha (it was rejected as "not a Python float").
    result = fit(p, family, divergence="amari_alpha", alpha=np.float32(0.5), **common)
    assert bool(result.finite)
    # A length-2 array raised NumPy's "Only scalar arrays..." without naming `alpha`.
    with pytest.raises(ValueError, match="`alpha` must be a scalar"):
        fit(p, family, divergence="amari_alpha", alpha=jnp.ones(2), **common)
    # A NaN alpha silently skipped every step.
    with pytest.raises(ValueError, match="`alpha` must be finite"):
        fit(p, family, divergence="renyi", alpha=float("nan"), **common)
    # evaluate accepted an integer as a key.
    with pytest.raises(TypeError, match="`key`"):
        evaluate(p, family, family.encode(loc=0.0, scale=1.0), divergence="reverse_kl",
                 key=0, num_samples=8)
    # A negative learning rate gave an optimiser that ascends.
    with pytest.raises(ValueError, match="`learning_rate`"):
        default_optimizer(10, -0.1)
    default_optimizer(10, jnp.float32(0.1))  # a concrete array is still fine


# ----------------------------------------------------------------------------------------
# families: invalid values were encoded to NaN/inf parameters without an error.
# ----------------------------------------------------------------------------------------


def test_encode_rejects_non_finite_and_invalid_values():
    with pytest.raises(ValueError, match="`scale` must be positive and finite"):
        F.gaussian().encode(loc=0.0, scale=float("nan"))
    with pytest.raises(ValueError, match="`scale` must be positive and finite"):
        F.gaussian().encode(loc=0.0, scale=float("inf"))
    with pytest.raises(ValueError, match="`loc` must be finite"):
        F.gaussian().encode(loc=float("nan"), scale=1.0)
    with pytest.raises(ValueError, match="`locs` must be finite"):
        F.gaussian_mixture(2).encode(weights=jnp.array([0.5, 0.5]),
                                     locs=jnp.array([0.0, jnp.inf]), scales=jnp.ones(2))
    full = F.full_covariance_gaussian(2)
    # Not positive definite: Cholesky returned NaN and encode returned NaN parameters.
    with pytest.raises(ValueError, match="`covariance` must be positive definite"):
        full.encode(loc=jnp.zeros(2), covariance=jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    # Not symmetric: Cholesky silently symmetrised it (a different covariance).
    with pytest.raises(ValueError, match="`covariance` must be symmetric"):
        full.encode(loc=jnp.zeros(2), covariance=jnp.array([[1.0, 0.9], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="diagonal of `scale_tril`"):
        full.encode(loc=jnp.zeros(2), scale_tril=jnp.array([[1.0, 0.0], [0.5, -1.0]]))
    with pytest.raises(ValueError, match="`scale_init`"):
        F.gaussian(scale_init=float("inf"))
    with pytest.raises(TypeError, match="`loc_init_std`"):
        F.diagonal_gaussian(2, loc_init_std="1")


@pytest.mark.parametrize("name,make", [
    ("gaussian", lambda: F.gaussian()),
    ("diagonal", lambda: F.diagonal_gaussian(2)),
    ("full", lambda: F.full_covariance_gaussian(2)),
    ("mixture", lambda: F.gaussian_mixture(2, 2)),
])
def test_distribution_of_bf16_params_computes_in_float32(name, make):
    # bf16 parameters used to give a bf16 distribution (bf16 log-densities and Cholesky).
    family = make()
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), family.init(jax.random.key(0)))
    q = family.distribution(params)
    x = jnp.zeros(family.event_shape, jnp.bfloat16)
    # distrax promotes the bf16 point to the float32 parameters implicitly (its code, not
    # jaxkl's, so the suite's strict dtype promotion is lifted for this call).
    with jax.numpy_dtype_promotion("standard"):
        assert q.log_prob(x).dtype == jnp.float32


def test_mixture_family_log_prob_of_a_sample_batch_in_strict_mode():
    # The family's q was a plain MixtureSameFamily, whose log_prob of [n, ...] points
    # raises under jax_numpy_rank_promotion="raise" (the suite's setting).
    family = F.gaussian_mixture(3)
    q = family.distribution(family.init(jax.random.key(0)))
    assert isinstance(q, mixtures.GaussianMixture)
    assert q.log_prob(jnp.zeros(5)).shape == (5,)


# ----------------------------------------------------------------------------------------
# reference: "batch dimensions broadcast" failed under strict rank promotion when q and p
# had different batch ranks.
# ----------------------------------------------------------------------------------------


def test_mixture_approximations_broadcast_batch_against_a_single_mixture():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 3))
    q = mixtures.gaussian_mixture_1d(means, np.ones((4, 3)))
    p = mixtures.gaussian_mixture_1d([0.0, 1.0], [1.0, 0.5])
    batched = mixture_kl_approximations(q, p)
    assert batched.upper.shape == (4,)
    for i in range(4):
        single = mixture_kl_approximations(mixtures.gaussian_mixture_1d(means[i], np.ones(3)), p)
        for a, b in zip(batched, single, strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-6)
    with pytest.raises(ValueError, match="batch shapes"):
        mixture_kl_approximations(q, mixtures.gaussian_mixture_1d(np.zeros((3, 2)),
                                                                  np.ones((3, 2))))


def test_quadrature_tolerance_arguments_are_validated():
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 1.0)
    with pytest.raises(ValueError, match="`rtol`"):
        quadrature_kl(q, p, rtol=-1.0)
    with pytest.raises(ValueError, match="`atol`"):
        quadrature_kl(q, p, atol=float("nan"))
    with pytest.raises(ValueError, match="`max_cells`"):
        quadrature_kl(q, p, max_cells=0)
    with pytest.raises(TypeError, match="`rtol`"):
        reference_kl(q, p, rtol="tight")
