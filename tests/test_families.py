"""Tests for jaxkl.families: parametrisations, round trips, shapes, dtypes and errors."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from jaxkl import families as F
from jaxkl import mixtures

ALL_FAMILIES = [
    ("gaussian", lambda **kw: F.gaussian(**kw)),
    ("diagonal", lambda **kw: F.diagonal_gaussian(3, **kw)),
    ("full", lambda **kw: F.full_covariance_gaussian(3, **kw)),
    ("mixture_1d", lambda **kw: F.gaussian_mixture(4, **kw)),
    ("mixture_2d", lambda **kw: F.gaussian_mixture(2, 2, **kw)),
]


@pytest.mark.parametrize("positivity", ["softplus", "exp"])
def test_gaussian_round_trip(positivity):
    family = F.gaussian(positivity=positivity)
    for scale in (1e-3, 0.5, 1.0, 30.0):
        q = family.distribution(family.encode(loc=-2.0, scale=scale))
        np.testing.assert_allclose(float(q.loc), -2.0)
        np.testing.assert_allclose(float(q.scale), scale, rtol=1e-6)


def test_inverse_softplus_is_accurate_for_small_and_large_scales(x64):
    family = F.gaussian()
    scales = np.array([1e-12, 1e-6, 1e-2, 1.0, 20.0, 700.0])
    raw = np.asarray(family.encode(loc=0.0, scale=jnp.asarray(scales))["raw_scale"])
    # float64 reference: log(exp(y) - 1) without cancellation for small y via log(expm1).
    np.testing.assert_allclose(raw, np.log(np.expm1(scales)), rtol=1e-13)


@pytest.mark.parametrize("positivity", ["softplus", "exp"])
def test_diagonal_round_trip(positivity):
    family = F.diagonal_gaussian(3, positivity=positivity)
    loc, scale = jnp.array([1.0, -1.0, 0.5]), jnp.array([0.1, 2.0, 3.0])
    q = family.distribution(family.encode(loc=loc, scale_diag=scale))
    assert isinstance(q, distrax.MultivariateNormalDiag)
    np.testing.assert_allclose(q.mean(), loc)
    np.testing.assert_allclose(q.stddev(), scale, rtol=1e-6)


@pytest.mark.parametrize("positivity", ["softplus", "exp"])
def test_full_covariance_round_trip(positivity):
    family = F.full_covariance_gaussian(3, positivity=positivity)
    a = np.array([[1.0, 0.2, -0.3], [0.0, 0.7, 0.5], [0.4, 0.0, 1.5]])
    covariance = a @ a.T + 0.1 * np.eye(3)
    q = family.distribution(family.encode(loc=jnp.ones(3), covariance=jnp.asarray(covariance)))
    np.testing.assert_allclose(q.covariance(), covariance, rtol=1e-5, atol=1e-6)
    tril = np.linalg.cholesky(covariance)
    q2 = family.distribution(family.encode(loc=jnp.ones(3), scale_tril=jnp.asarray(tril)))
    np.testing.assert_allclose(q2.covariance(), covariance, rtol=1e-5, atol=1e-6)


def test_full_covariance_is_valid_for_any_real_parameters():
    family = F.full_covariance_gaussian(4)
    raw = 3.0 * jax.random.normal(jax.random.key(3), (4, 4))
    q = family.distribution({"loc": jnp.zeros(4), "raw_scale_tril": raw})
    eigenvalues = np.linalg.eigvalsh(np.asarray(q.covariance(), np.float64))
    assert eigenvalues.min() > 0
    # The strict upper triangle is not used: changing it changes nothing, gradient zero.
    def log_prob(r):
        return family.distribution({"loc": jnp.zeros(4), "raw_scale_tril": r}).log_prob(
            jnp.ones(4))

    grad = jax.jit(jax.grad(log_prob))(raw)
    assert np.all(np.asarray(grad)[np.tril_indices(4)] != 0)
    np.testing.assert_array_equal(np.triu(np.asarray(grad), k=1), 0.0)


def test_mixture_moments_match_numpy():
    family = F.gaussian_mixture(3)
    weights, locs, scales = np.array([0.2, 0.5, 0.3]), np.array([-2.0, 0.0, 3.0]), np.array(
        [0.5, 1.0, 2.0])
    q = family.distribution(family.encode(weights=jnp.asarray(weights), locs=jnp.asarray(locs),
                                          scales=jnp.asarray(scales)))
    mean = np.sum(weights * locs)
    variance = np.sum(weights * (scales**2 + locs**2)) - mean**2
    np.testing.assert_allclose(float(q.mean()), mean, rtol=1e-6)
    np.testing.assert_allclose(float(q.variance()), variance, rtol=1e-5)
    np.testing.assert_allclose(q.mixture_distribution.probs, weights, rtol=1e-6)


def test_multivariate_mixture_shapes():
    family = F.gaussian_mixture(2, 3)
    q = family.distribution(family.init(jax.random.key(0)))
    assert q.event_shape == (3,)
    with jax.numpy_rank_promotion("allow"):  # distrax broadcasts internally
        sample = jax.jit(lambda q: q.sample(seed=jax.random.key(1), sample_shape=(5,)))(q)
    assert sample.shape == (5, 3)


@pytest.mark.parametrize("name,make", ALL_FAMILIES)
def test_init_shapes_and_event_shape(name, make):
    family = make()
    params = family.init(jax.random.key(0))
    q = family.distribution(params)
    assert tuple(q.event_shape) == family.event_shape
    assert q.batch_shape == ()
    @jax.jit  # one compiled call instead of many eager distrax ops
    def sample_and_log_prob(params):
        q = family.distribution(params)
        with jax.numpy_rank_promotion("allow"):  # distrax broadcasts internally
            x = q.sample(seed=jax.random.key(1), sample_shape=(7,))
            return x, q.log_prob(x)

    x, log_prob = sample_and_log_prob(params)
    assert x.shape == (7, *family.event_shape)
    assert np.all(np.isfinite(log_prob))
    # init is a pure function of the key.
    again = family.init(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, params, again)
    other = family.init(jax.random.key(1))
    assert not np.array_equal(np.asarray(params[_loc_name(params)]),
                              np.asarray(other[_loc_name(params)]))


def _loc_name(params):
    return "loc" if "loc" in params else "locs"


@pytest.mark.parametrize("name,make", ALL_FAMILIES)
def test_init_respects_scale_init_and_loc_init_std(name, make):
    family = make(loc_init_std=0.0, scale_init=2.5)
    q = family.distribution(family.init(jax.random.key(0)))
    np.testing.assert_allclose(np.asarray(q.mean()), 0.0, atol=1e-6)
    if isinstance(q, distrax.MixtureSameFamily):
        np.testing.assert_allclose(q.components_distribution.stddev(), 2.5, rtol=1e-6)
    else:
        np.testing.assert_allclose(q.stddev(), 2.5, rtol=1e-6)


@pytest.mark.parametrize("name,make", ALL_FAMILIES)
def test_family_is_a_static_pytree_and_works_under_jit_and_vmap(name, make):
    family = make()
    assert jax.tree.leaves(family) == []
    keys = jax.random.split(jax.random.key(0), 4)
    params = jax.vmap(family.init)(keys)
    log_probs = jax.jit(jax.vmap(lambda prm, k: family.distribution(prm).log_prob(
        family.distribution(prm).sample(seed=k))))(params, keys)
    assert log_probs.shape == (4,)
    passed = jax.jit(lambda f: f)(family)
    assert passed == family


def test_bf16_inputs_give_float32_params():
    family = F.gaussian()
    params = family.encode(loc=jnp.bfloat16(1.0), scale=jnp.bfloat16(2.0))
    assert params["loc"].dtype == jnp.float32
    assert params["raw_scale"].dtype == jnp.float32


def test_float64_params_under_x64(x64):
    family = F.full_covariance_gaussian(2)
    params = family.init(jax.random.key(0))
    assert params["loc"].dtype == jnp.float64
    assert family.distribution(params).log_prob(jnp.zeros(2)).dtype == jnp.float64


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="positivity"):
        F.gaussian(positivity="relu")
    with pytest.raises(ValueError, match="dim"):
        F.diagonal_gaussian(0)
    with pytest.raises(TypeError, match="dim"):
        F.full_covariance_gaussian(2.5)
    with pytest.raises(ValueError, match="num_components"):
        F.gaussian_mixture(0)
    with pytest.raises(ValueError, match="scale_init"):
        F.gaussian(scale_init=0.0)
    with pytest.raises(ValueError, match="loc_init_std"):
        F.gaussian(loc_init_std=-1.0)
    with pytest.raises(ValueError, match="scale"):
        F.gaussian().encode(loc=0.0, scale=-1.0)
    with pytest.raises(ValueError, match="scale_diag"):
        F.diagonal_gaussian(2).encode(loc=jnp.zeros(2), scale_diag=jnp.ones(3))
    with pytest.raises(ValueError, match="exactly one"):
        F.full_covariance_gaussian(2).encode(loc=jnp.zeros(2))
    with pytest.raises(ValueError, match="covariance"):
        F.full_covariance_gaussian(2).encode(loc=jnp.zeros(2), covariance=jnp.eye(3))
    with pytest.raises(ValueError, match="weights"):
        F.gaussian_mixture(2).encode(weights=jnp.ones(3) / 3, locs=jnp.zeros(2),
                                     scales=jnp.ones(2))


# ----------------------------------------------------------------------------------------
# Issue 15: encode rejects what it would otherwise silently change.


def test_full_covariance_encode_rejects_an_upper_triangular_scale():
    import scipy.linalg

    family = F.full_covariance_gaussian(2)
    covariance = np.array([[2.0, 0.6], [0.6, 1.0]])
    # Before: the upper entry 0.5 was dropped, so q had another covariance.
    with pytest.raises(ValueError, match="`scale_tril` must be lower-triangular"):
        family.encode(loc=jnp.zeros(2), scale_tril=jnp.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="lower=True"):
        family.encode(loc=jnp.zeros(2), scale_tril=scipy.linalg.cholesky(covariance))
    lower = scipy.linalg.cholesky(covariance, lower=True)
    q = family.distribution(family.encode(loc=jnp.zeros(2), scale_tril=lower))
    np.testing.assert_allclose(np.asarray(q.covariance()), covariance, rtol=1e-5)
    # Under jit the values are unknown: the documented behaviour is that the upper part
    # is ignored.
    traced = jax.jit(lambda s: family.encode(loc=jnp.zeros(2), scale_tril=s))(
        jnp.asarray(lower, jnp.float32))
    assert traced["raw_scale_tril"].shape == (2, 2)


@pytest.mark.parametrize("dim", [None, 2])
def test_mixture_family_encode_rejects_unnormalised_weights_like_the_constructor(dim):
    family = F.gaussian_mixture(2, dim)
    shape = (2,) if dim is None else (2, dim)
    with pytest.raises(ValueError, match="`weights` must sum to 1"):
        family.encode(weights=jnp.array([0.5, 0.7]), locs=jnp.zeros(shape),
                      scales=jnp.ones(shape))
    with pytest.raises(ValueError, match="`weights` must sum to 1"):
        jaxkl.gaussian_mixture_1d([0.0, 1.0], [1.0, 1.0], weights=[0.5, 0.7])
    # float32 weights that sum to 1 up to rounding are accepted.
    ten = F.gaussian_mixture(10)
    params = ten.encode(weights=jnp.full(10, 0.1, jnp.float32), locs=jnp.zeros(10),
                        scales=jnp.ones(10))
    np.testing.assert_allclose(np.exp(np.asarray(params["logits"])), 0.1, rtol=1e-6)


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
