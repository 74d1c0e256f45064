"""Reference KL values: analytic, quadrature, mixture approximations/bounds, Monte Carlo."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jaxkl import mixtures
from jaxkl.reference import (
    exact_kl,
    mixture_kl_approximations,
    monte_carlo_kl,
    quadrature_kl,
    reference_kl,
)

GAUSSIAN_PAIRS_1D = [
    (0.0, 1.0, 0.045, 1.0),  # KL ~ 1e-3
    (0.0, 1.0, 3.0, 0.2),  # p much narrower: KL ~ 123
    (0.0, 1.0, 0.0, 100.0),  # p much wider
    (1.5, 0.3, -1.0, 2.5),
]


def _gaussian_kl_1d(m_q, s_q, m_p, s_p):
    """Textbook closed form in float64, independent of distrax."""
    return np.log(s_p / s_q) + (s_q**2 + (m_q - m_p) ** 2) / (2 * s_p**2) - 0.5


@pytest.mark.parametrize("m_q, s_q, m_p, s_p", GAUSSIAN_PAIRS_1D)
def test_quadrature_matches_closed_form_1d(m_q, s_q, m_p, s_p):
    q, p = distrax.Normal(m_q, s_q), distrax.Normal(m_p, s_p)
    # The distributions hold float32 parameters: compare with the KL of those exact values.
    args = [float(np.float32(a)) for a in (m_q, s_q, m_p, s_p)]
    truth = _gaussian_kl_1d(*args)
    r = quadrature_kl(q, p)
    assert r.method == "quadrature"
    assert abs(r.value - truth) <= 1e-6 * truth
    assert abs(r.value - truth) <= r.error + 1e-13 * truth
    analytic = reference_kl(q, p)
    assert analytic.method == "analytic"
    assert abs(analytic.value - truth) <= 1e-12 * truth


def test_quadrature_matches_distrax_analytic_2d(x64):
    # Built in float64, so distrax's analytic KL is a float64 reference.
    q = distrax.MultivariateNormalFullCovariance(
        jnp.zeros(2), jnp.array([[1.0, 0.8], [0.8, 1.0]]))
    p = distrax.MultivariateNormalDiag(jnp.array([1.0, -1.0]), jnp.array([0.3, 2.0]))
    truth = float(q.kl_divergence(p))
    r = quadrature_kl(q, p)
    assert abs(r.value - truth) <= 1e-6 * truth
    assert abs(r.value - truth) <= r.error + 1e-12 * truth
    assert abs(reference_kl(q, p, method="analytic").value - truth) <= 1e-12 * truth


def test_quadrature_of_non_gaussian_matches_scipy_quad():
    q, p = distrax.Laplace(0.3, 1.0), distrax.Normal(0.0, 2.0)

    def integrand(x):
        lq = stats.laplace.logpdf(x, 0.3, 1.0)
        return np.exp(lq) * (lq - stats.norm.logpdf(x, 0.0, 2.0))

    # Beyond +-60 the Laplace density is below e^-59: negligible at this tolerance.
    truth = sum(integrate.quad(integrand, a, b, epsabs=1e-14, epsrel=1e-13, limit=200)[0]
                for a, b in [(-60.0, 0.3), (0.3, 60.0)])
    r = quadrature_kl(q, p)
    assert abs(r.value - truth) <= 1e-6 * truth


def _random_1d_mixtures(rng, batch, components):
    """Arguments of gaussian_mixture_1d for `batch` random mixtures."""
    return dict(
        means=rng.normal(scale=2.0, size=(batch, components)),
        scales=np.exp(rng.uniform(np.log(0.3), np.log(2.0), size=(batch, components))),
        weights=rng.dirichlet(np.ones(components), size=batch),
    )


def _random_2d_mixtures(rng, batch, components):
    a = rng.normal(scale=0.8, size=(batch, components, 2, 2))
    return dict(
        means=rng.normal(scale=2.0, size=(batch, components, 2)),
        covariances=a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(2),
        weights=rng.dirichlet(np.ones(components), size=batch),
    )


def _check_bounds_hold(make, q_args, p_args):
    # One batched call for the closed forms; quadrature pair by pair.
    approx = mixture_kl_approximations(make(**q_args), make(**p_args))
    batch = len(q_args["weights"])
    assert approx.lower.shape == (batch,)
    for i in range(batch):
        q = make(**{k: v[i] for k, v in q_args.items()})
        p = make(**{k: v[i] for k, v in p_args.items()})
        truth = quadrature_kl(q, p)
        slack = truth.error + 1e-12 * (1 + truth.value)
        assert approx.lower[i] <= truth.value + slack, i
        assert truth.value <= approx.upper[i] + slack, i
    # Both approximations lie between the bounds (by construction of the formulas).
    for value in (approx.variational, approx.product):
        assert np.all(approx.lower <= value + 1e-12) and np.all(value <= approx.upper + 1e-12)


def test_bounds_hold_on_200_random_1d_mixture_pairs(x64):
    rng = np.random.default_rng(0)
    _check_bounds_hold(mixtures.gaussian_mixture_1d, _random_1d_mixtures(rng, 200, 3),
                       _random_1d_mixtures(rng, 200, 2))


def test_bounds_hold_on_random_2d_mixture_pairs(x64):
    rng = np.random.default_rng(1)
    _check_bounds_hold(mixtures.gaussian_mixture_full, _random_2d_mixtures(rng, 16, 3),
                       _random_2d_mixtures(rng, 16, 2))


def test_variational_is_exact_for_single_gaussians(x64):
    # With one component each, D_var reduces to KL(q||p) (Hershey & Olsen, 2007).
    q, p = distrax.Normal(0.3, 0.7), distrax.Normal(-1.0, 1.9)
    approx = mixture_kl_approximations(q, p)
    np.testing.assert_allclose(approx.variational, _gaussian_kl_1d(0.3, 0.7, -1.0, 1.9),
                               rtol=1e-12)


def test_product_approximation_matches_overlap_formula_1d(x64):
    # D_prod(q||p) = log z_qq - log t_qp for single Gaussians, with Gaussian overlaps.
    q, p = distrax.Normal(0.3, 0.7), distrax.Normal(-1.0, 1.9)
    log_z = stats.norm.logpdf(0.3, 0.3, np.sqrt(2 * 0.7**2))
    log_t = stats.norm.logpdf(0.3, -1.0, np.sqrt(0.7**2 + 1.9**2))
    np.testing.assert_allclose(mixture_kl_approximations(q, p).product, log_z - log_t,
                               rtol=1e-12)


def test_approximations_jit_vmap_and_float32():
    rng = np.random.default_rng(2)
    q = mixtures.gaussian_mixture_1d(**_random_1d_mixtures(rng, 4, 3))
    p = mixtures.gaussian_mixture_1d(**_random_1d_mixtures(rng, 4, 2))
    eager = mixture_kl_approximations(q, p)
    jitted = jax.jit(mixture_kl_approximations)(q, p)
    vmapped = jax.vmap(mixture_kl_approximations)(q, p)
    assert eager.upper.dtype == jnp.float32
    for a, b, c in zip(eager, jitted, vmapped, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
        np.testing.assert_allclose(a, c, rtol=1e-5)


def test_monte_carlo_99_interval_covers_quadrature():
    q = mixtures.gaussian_mixture_1d([-1.0, 1.5], [0.5, 0.8], weights=[0.4, 0.6])
    p = mixtures.gaussian_mixture_1d([0.0, 2.0], [1.0, 0.5], weights=[0.7, 0.3])
    truth = quadrature_kl(q, p)
    mc = monte_carlo_kl(q, p, key=jax.random.key(0), num_samples=1_000_000)
    assert mc.method == "monte_carlo"
    assert abs(mc.value - truth.value) <= 2.576 * mc.error
    mc_auto = reference_kl(q, p, method="monte_carlo", key=jax.random.key(1),
                           num_samples=500_000)
    assert abs(mc_auto.value - truth.value) <= 2.576 * mc_auto.error


def test_auto_dispatch_and_mixture_methods():
    q1 = mixtures.gaussian_mixture_1d([-1.0, 1.0], [0.5, 0.5])
    p1 = mixtures.gaussian_mixture_1d([0.0], [1.5])
    assert reference_kl(distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 1.0)).method == "analytic"
    assert reference_kl(q1, p1).method == "quadrature"
    truth = reference_kl(q1, p1).value
    for method in ("bounds", "variational", "product"):
        r = reference_kl(q1, p1, method=method)
        # The mixture methods' error is a guaranteed half-width around their value.
        assert r.method == method and abs(r.value - truth) <= r.error
    q3 = mixtures.gaussian_mixture_diag(np.zeros((2, 3)), np.ones((2, 3)))
    p3 = mixtures.gaussian_mixture_diag(np.ones((1, 3)), np.ones((1, 3)))
    assert reference_kl(q3, p3).method == "bounds"


def test_exact_kl_and_its_error():
    assert float(exact_kl(distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 1.0))) == 0.5
    q = mixtures.gaussian_mixture_1d([-1.0, 1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="GaussianMixture.*Normal.*reference_kl"):
        exact_kl(q, distrax.Normal(0.0, 1.0))


def test_bad_inputs_raise():
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 1.0)
    with pytest.raises(ValueError, match="method"):
        reference_kl(q, p, method="simpson")
    with pytest.raises(ValueError, match="key"):
        reference_kl(q, p, method="monte_carlo")
    with pytest.raises(ValueError, match="Gaussian"):
        reference_kl(distrax.Laplace(0.0, 1.0), p, method="bounds")
    with pytest.raises(ValueError, match="batch shape"):
        reference_kl(distrax.Normal(jnp.zeros(2), 1.0), p)
    with pytest.raises(ValueError, match="event shape"):
        quadrature_kl(q, distrax.MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)))
    with pytest.raises(ValueError, match="dimension 3"):
        quadrature_kl(distrax.MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3)),
                      distrax.MultivariateNormalDiag(jnp.ones(3), jnp.ones(3)))
    with pytest.raises(ValueError, match="bounds"):
        quadrature_kl(q, p, bounds=[[1.0, -1.0]])


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


def test_value_and_error_are_for_the_stored_parameters():
    """With float32 parameters (JAX's default) the reference is the KL of the rounded
    values (README's example): equal to the float64 reference of those rounded values,
    and far from the float64 reference of the written ones by more than `error`."""
    means_q, means_p, scales = [0.0, 6.0], [0.0, 6.001], [1.0, 1e-3]
    got = reference_kl(mixtures.gaussian_mixture_1d(means_q, scales),
                       mixtures.gaussian_mixture_1d(means_p, scales))
    with jax.enable_x64(True):
        def reference(dtype):
            q = mixtures.gaussian_mixture_1d(np.array(means_q, dtype).astype(np.float64),
                                             np.array(scales, dtype).astype(np.float64))
            p = mixtures.gaussian_mixture_1d(np.array(means_p, dtype).astype(np.float64),
                                             np.array(scales, dtype).astype(np.float64))
            return reference_kl(q, p)
        rounded, written = reference(np.float32), reference(np.float64)
    assert abs(got.value - rounded.value) <= got.error + rounded.error
    assert abs(got.value - written.value) > 1e6 * got.error
    # The narrow pair dominates: w (d / s)^2 / 2 with w = 1/2, d = 1e-3, s = 1e-3 in float64
    # (the wide components are identical); the float32-rounded d is 0.99993e-3.
    np.testing.assert_allclose(written.value, 0.25, rtol=2e-8)
    d32 = float(np.float32(6.001)) - 6.0
    s32 = float(np.float32(1e-3))
    np.testing.assert_allclose(rounded.value, 0.25 * (d32 / s32) ** 2, rtol=2e-7)
    assert round(got.value, 7) == 0.2499637 and round(written.value, 10) == 0.2499999974


def test_one_component_mixtures_use_the_closed_form():
    """A one-component Gaussian mixture is a Gaussian: "auto" takes the closed form
    (before, a near-singular 2-D pair fell to the bounds' midpoint, 6.49 +- 0.38)."""
    rho = 0.999999
    cov = np.array([[1.0, rho], [rho, 1.0]])
    with jax.enable_x64(True):  # float64 parameters: stored as written
        q = mixtures.gaussian_mixture_full(np.zeros((1, 2)), cov[None])
        p = mixtures.gaussian_mixture_full(np.zeros((1, 2)), np.eye(2)[None])
        got = reference_kl(q, p)
    # KL(N(0, C) || N(0, I)) = (tr C - d - log det C) / 2, det C = 1 - rho^2 exactly.
    want = 0.5 * (2.0 - 2 - np.log1p(-rho) - np.log1p(rho))
    assert got.method == "analytic"
    # log det of a matrix with condition number 2e6 loses ~1e6 ulps in the factorisation:
    # the error bar must cover that (64 ulps of the value did not: 5.5e-12 against 1e-13).
    assert abs(got.value - want) <= got.error < 1e-5
    for rho in (0.0, 0.9, 1 - 1e-10):
        cov = np.array([[1.0, rho], [rho, 1.0]])
        with jax.enable_x64(True):
            r = reference_kl(mixtures.gaussian_mixture_full(np.zeros((1, 2)), cov[None]), p)
        assert abs(r.value - 0.5 * (-np.log1p(-rho) - np.log1p(rho))) <= r.error
    one_d = reference_kl(mixtures.gaussian_mixture_1d([0.0], [1.0]),
                         mixtures.gaussian_mixture_1d([1.0], [2.0]))
    assert one_d.method == "analytic"
    np.testing.assert_allclose(one_d.value, np.log(2) + (1 + 1) / 8 - 0.5, rtol=1e-14)
