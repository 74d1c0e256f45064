"""The Csiszar family against TFP's JAX substrate, on TFP's own test inputs (issue 14).

TFP's ``tfp.vi`` functions return ``f(u)`` (``self_normalized=False``); jaxkl returns
the tangent form ``f(u) - f(1) - f'(1)(u - 1)``. The translation is computed from TFP
itself: ``f(1)`` is TFP's function at ``log u = 0`` and ``f'(1)`` its derivative in
``log u`` there (``d f(e^x)/dx = u f'(u)``), by ``jax.grad`` of TFP's function; for the
two functions with a kink at ``u = 1`` (``total_variation``, ``log1p_abs``) it is 0, the
subgradient jaxkl documents (JAX's derivative of ``|x|`` at 0 is 1, one end of it).
jaxkl's ``jensen_shannon`` is the divergence itself, half of TFP's function. The inputs
are those of TFP's vi/csiszar_divergence_test.py: ``log u = linspace(-10, 10, 100)``,
alpha in (-2, -1, -0.5, 0.5, 2), t in (-0.1, 0.5, 1.1), and ``log u = 0``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorflow_probability.substrates import jax as tfp

import jaxkl

LOGU = np.linspace(-10.0, 10.0, 100)

# jaxkl name -> (TFP function of logu, factor applied to TFP's tangent form).
TFP = {
    "reverse_kl": (tfp.vi.kl_reverse, 1.0),
    "forward_kl": (tfp.vi.kl_forward, 1.0),
    "jensen_shannon": (tfp.vi.jensen_shannon, 0.5),
    "squared_hellinger": (tfp.vi.squared_hellinger, 1.0),
    "total_variation": (tfp.vi.total_variation, 1.0),
    "pearson_chi2": (tfp.vi.pearson, 1.0),
    "chi_square": (tfp.vi.chi_square, 1.0),
    "triangular": (tfp.vi.triangular, 1.0),
    "log1p_abs": (tfp.vi.log1p_abs, 1.0),
    "jeffreys": (tfp.vi.jeffreys, 1.0),
    "arithmetic_geometric": (tfp.vi.arithmetic_geometric, 1.0),
    "modified_gan": (tfp.vi.modified_gan, 1.0),
}
CASES = [(name, None) for name in TFP]
CASES += [("amari_alpha", a) for a in (-2.0, -1.0, -0.5, 0.5, 2.0)]
CASES += [("t_power", t) for t in (-0.1, 0.5, 1.1)]
IDS = [f"{n}-{p}" for n, p in CASES]


def _tfp_function(name, param):
    if name == "amari_alpha":
        return lambda x: tfp.vi.amari_alpha(x, alpha=param), 1.0
    if name == "t_power":
        return lambda x: tfp.vi.t_power(x, t=jnp.asarray(param, x.dtype)), 1.0
    return TFP[name]


def _kwargs(name, param):
    return {} if param is None else {"alpha" if name == "amari_alpha" else "t": param}


KINKED = ("total_variation", "log1p_abs")


def tfp_tangent_form(f, logu, kinked=False):
    """TFP's f(u) - f(1) - f'(1)(u - 1) in float64, with f(1), f'(1) from TFP."""
    x = jnp.asarray(logu, jnp.float64)
    zero = jnp.zeros((), jnp.float64)
    f1, slope = jax.value_and_grad(lambda z: f(z))(zero)
    slope = 0.0 if kinked else slope
    return np.asarray(f(x) - f1 - slope * jnp.expm1(x))


@pytest.mark.parametrize("name, param", CASES, ids=IDS)
def test_matches_tfp_on_tfp_test_inputs(name, param, x64):
    f, factor = _tfp_function(name, param)
    want = factor * tfp_tangent_form(f, LOGU, kinked=name in KINKED)
    got64 = np.asarray(jaxkl.csiszar(jnp.asarray(LOGU), divergence=name, **_kwargs(name, param)))
    # TFP evaluates the naive formulas (f(u) and the tangent subtracted in float64 here):
    # agreement to 1e-10 relative is what their rounding allows at |log u| = 10.
    np.testing.assert_allclose(got64, want, rtol=1e-10, atol=1e-14)
    with jax.enable_x64(False):
        got32 = jaxkl.csiszar(jnp.asarray(LOGU, jnp.float32), divergence=name,
                              **_kwargs(name, param))
        assert got32.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got32, np.float64), want, rtol=3e-6, atol=1e-12)


@pytest.mark.parametrize("name, param", CASES, ids=IDS)
def test_zero_at_logu_zero_as_tfp_tests(name, param):
    """TFP's test_at_zero: every self-normalised function is 0 at u = 1 (jaxkl's
    modified_gan too: TFP's is log 2 there, jaxkl subtracts f(1))."""
    assert float(jaxkl.csiszar(jnp.zeros(()), divergence=name, **_kwargs(name, param))) == 0.0


@pytest.mark.parametrize("name", ["jensen_shannon", "arithmetic_geometric",
                                  "squared_hellinger", "triangular", "jeffreys"])
def test_symmetric_divergences_equal_their_symmetrization(name, x64):
    """TFP's test_symmetric: these f satisfy f(u) = u f(1/u)."""
    l = jnp.asarray(LOGU)
    np.testing.assert_allclose(np.asarray(jaxkl.csiszar_symmetrized(l, name)),
                               np.asarray(jaxkl.csiszar(l, divergence=name)), rtol=1e-13)


def test_dual_and_symmetrized_match_tfp(x64):
    """TFP's DualCsiszarFunctionTest / SymmetrizedCsiszarFunctionTest, plus the general
    transforms of TFP's functions (translated to the tangent form) for every name."""
    l = jnp.asarray(LOGU)
    np.testing.assert_allclose(np.asarray(jaxkl.csiszar_dual(l, "forward_kl")),
                               np.asarray(jaxkl.csiszar(l, divergence="reverse_kl")), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(jaxkl.csiszar_dual(l, "reverse_kl")),
                               np.asarray(jaxkl.csiszar(l, divergence="forward_kl")), rtol=1e-13)
    for f in ("reverse_kl", "forward_kl"):
        np.testing.assert_allclose(np.asarray(jaxkl.csiszar_symmetrized(l, f)),
                                   np.asarray(jaxkl.csiszar(l, divergence="jeffreys")),
                                   rtol=1e-13)
    for name, param in CASES:
        f, factor = _tfp_function(name, param)
        kw = _kwargs(name, param)
        kinked = name in KINKED
        dual = factor * tfp_tangent_form(
            lambda x, f=f: tfp.vi.dual_csiszar_function(x, f), LOGU, kinked)
        sym = factor * tfp_tangent_form(
            lambda x, f=f: tfp.vi.symmetrized_csiszar_function(x, f), LOGU, kinked)
        np.testing.assert_allclose(np.asarray(jaxkl.csiszar_dual(l, name, **kw)), dual,
                                   rtol=1e-10, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(np.asarray(jaxkl.csiszar_symmetrized(l, name, **kw)), sym,
                                   rtol=1e-10, atol=1e-14, err_msg=name)


def test_user_supplied_csiszar_functions(x64):
    """A callable f(log u) (TFP's convention) is tangent-subtracted by autodiff: TFP's
    js2 from its symmetrized test gives twice jaxkl's Jensen-Shannon once symmetrized."""

    def js2(logu):
        return 2.0 * (jnp.exp(logu) * (logu - jax.nn.softplus(logu)))

    l = jnp.asarray(LOGU)
    np.testing.assert_allclose(np.asarray(jaxkl.csiszar_symmetrized(l, js2)),
                               2 * np.asarray(jaxkl.csiszar(l, divergence="jensen_shannon")),
                               rtol=1e-10)
    np.testing.assert_allclose(np.asarray(jaxkl.csiszar(l, divergence=tfp.vi.triangular)),
                               np.asarray(jaxkl.csiszar(l, divergence="triangular")), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(jaxkl.csiszar_dual(l, tfp.vi.kl_forward)),
                               np.asarray(jaxkl.csiszar(l, divergence="reverse_kl")), rtol=1e-10)


def test_dual_limits_and_overflow():
    """At l = -inf the dual of a named divergence is its limit f'(inf) - f'(1); large l
    overflows only where the exact value does (dual of reverse_kl = forward_kl)."""
    l = jnp.array([-jnp.inf, -50.0, 0.0, 84.0, 88.0, jnp.inf])
    np.testing.assert_allclose(np.asarray(jaxkl.csiszar_dual(l, "reverse_kl")),
                               np.asarray(jaxkl.csiszar(l, divergence="forward_kl")), rtol=3e-6)
    assert float(jaxkl.csiszar_dual(jnp.array(-jnp.inf), "jensen_shannon")) == pytest.approx(
        np.log(2) / 2)
