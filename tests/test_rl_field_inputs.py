"""jaxkl.rl at inputs from the field (issue 14): clamped and extreme tokens, -inf
log-probabilities, masks applied only after token_kl, forward mode.

Each expected value comes from the definitions, independently of jaxkl: the gradient of
``w * k(l)`` with respect to ``logprobs`` is ``w (k(l) - k'(l))`` (``-w l`` for k3), of
a straight-through token ``-l``, of a natural one ``-k'(l)``; a clamped token carries
no gradient (the documented choice). Values with an exponential are computed with
50-digit ``decimal`` arithmetic (tests/_reference.py).
"""

import decimal
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkl import rl
from jaxkl.rl import audit
from tests import _reference as ref_

DTYPES = [jnp.bfloat16, jnp.float32, jnp.float64]
ESTIMATORS = ["k1", "k2", "k3", "abs"]


def _run(fn, jit, *args):
    return (jax.jit(fn) if jit else fn)(*args)


def _k3_decimal(l: float) -> float:
    return float(ref_.k3(decimal.Decimal(l)))


@pytest.fixture(params=DTYPES, ids=["bf16", "f32", "f64"])
def dtype(request):
    with jax.enable_x64(request.param == jnp.float64):
        yield request.param


# ---- 1. importance-weighted k3: -w l, no cancellation, 0 at a clamped token ----

LOGP = [-30.0, -30.0, -30.0]
REF = [-5.0, -11.0, -27.0]  # l = 25, 19, 3


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    "kwargs, want",
    [
        ({}, [0.0, -19.0, -3.0]),  # l = 25 is beyond the default clamp at 20
        ({"log_ratio_clip": None}, [-25.0, -19.0, -3.0]),
        ({"value_clip": 10.0}, [0.0, 0.0, 0.0]),  # every k3 > 10: all value-clamped
        ({"value_clip": 2e8}, [0.0, -19.0, -3.0]),  # k3(19) = 1.8e8 is below the clamp
    ],
)
def test_importance_weighted_k3_gradient_is_minus_w_l(dtype, jit, kwargs, want):
    logp, ref = jnp.array(LOGP, dtype), jnp.array(REF, dtype)
    grad = _run(jax.grad(lambda a: rl.token_kl(
        a, ref, gradient="importance_weighted", **kwargs).sum()), jit, logp)
    assert grad.dtype == dtype
    np.testing.assert_array_equal(np.asarray(grad, np.float64), want)


@pytest.mark.parametrize("jit", [False, True])
def test_importance_weighted_k3_off_policy_and_through_grpo_loss(dtype, jit):
    logp, ref = jnp.array(LOGP, dtype), jnp.array(REF, dtype)
    old = logp - jnp.asarray(0.25, dtype)  # w = e^0.25, exact inputs in every dtype
    l = np.array(REF) - np.array(LOGP)
    w = float(decimal.Decimal(0.25).exp())
    want = np.where(l > 20, 0.0, -w * l)  # l = 25 is clamped: 0, not +6.5e8
    grad = _run(jax.grad(lambda a: rl.token_kl(
        a, ref, gradient="importance_weighted", old_logprobs=old).sum()), jit, logp)
    tol = {jnp.bfloat16: 2**-8, jnp.float32: 4e-7, jnp.float64: 1e-15}[dtype]
    np.testing.assert_allclose(np.asarray(grad, np.float64), want, rtol=tol)

    # The same through grpo_loss: zero advantages leave only beta * KL / #tokens.
    mask = jnp.ones((1, 3), bool)
    loss = lambda a: rl.grpo_loss(a, old[None], jnp.zeros(1, dtype), mask, ref_logprobs=ref[None],
                                  kl_coef=0.5, kl=rl.KLConfig(gradient="importance_weighted"))[0]
    grad = _run(jax.grad(loss), jit, logp[None])
    np.testing.assert_allclose(np.asarray(grad[0], np.float64), 0.5 * want / 3, rtol=tol)


def test_importance_weighted_gradient_of_every_estimator_without_cancellation(dtype):
    """w (k - k'): k1 w (1 - l), k2 w l (l/2 - 1), k3 -w l, abs w (|l| - sign l)."""
    l = np.array([-19.0, -3.0, -0.5, 2.0, 3.0, 19.0])
    logp = jnp.full(l.shape, -20.0, dtype)
    ref = jnp.asarray(-20.0 + l, dtype)
    want = {"k1": 1 - l, "k2": l * (l / 2 - 1), "k3": -l, "abs": np.abs(l) - np.sign(l)}
    for estimator in ESTIMATORS:
        grad = jax.grad(lambda a, e=estimator: rl.token_kl(
            a, ref, estimator=e, gradient="importance_weighted", log_ratio_clip=None).sum())(logp)
        # On-policy w = 1: the exact result (a multiple of 1/8) rounded once to the dtype.
        rounded = np.asarray(jnp.asarray(want[estimator], dtype), np.float64)
        np.testing.assert_array_equal(np.asarray(grad, np.float64), rounded, estimator)


# ---- 2. k3 with value_clip and no log_ratio_clip: gradient 0, not NaN ----


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_value_clamped_token_has_zero_gradient_even_where_exp_overflows(dtype, jit, estimator):
    logp, ref = jnp.array([-100.0, -1.0], dtype), jnp.array([0.0, -1.5], dtype)
    fn = lambda a: rl.token_kl(a, ref, estimator=estimator, log_ratio_clip=None,
                               value_clip=10.0)
    value = _run(fn, jit, logp)
    grad = _run(jax.grad(lambda a: fn(a).sum()), jit, logp)
    assert abs(float(value[0])) == 10.0  # |k(100)| > 10 for every estimator: clamped
    assert float(grad[0]) == 0.0
    # The unclamped token keeps -k'(l) at l = -0.5.
    dk = {"k1": -1.0, "k2": -0.5, "k3": math.expm1(-0.5), "abs": -1.0}[estimator]
    tol = {jnp.bfloat16: 2**-8, jnp.float32: 3e-7, jnp.float64: 1e-15}[dtype]
    np.testing.assert_allclose(float(grad[1]), -dk, rtol=tol)
    # ... and through grpo_loss (natural KL gradient, zero advantages).
    loss = lambda a: rl.grpo_loss(a[None], a[None], jnp.zeros(1, dtype), jnp.ones((1, 2), bool),
                                  ref_logprobs=ref[None], kl_coef=1.0,
                                  kl=rl.KLConfig(estimator, log_ratio_clip=None,
                                                 value_clip=10.0))[0]
    grad = _run(jax.grad(loss), jit, logp)
    assert float(grad[0]) == 0.0 and np.isfinite(np.asarray(grad, np.float64)).all()


# ---- 3. straight-through with a -inf reference log-probability ----


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_minus_inf_reference_gives_the_clamped_value_under_every_option(dtype, jit, estimator):
    logp = jnp.array([[-0.2]], dtype)
    ref = jnp.array([[-jnp.inf]], dtype)
    clamped = {"k1": 20.0, "k2": 200.0, "k3": _k3_decimal(-20.0), "abs": 20.0}[estimator]
    for gradient in rl.GRADIENTS:
        fn = lambda a, g=gradient: rl.token_kl(a, ref, estimator=estimator, gradient=g)
        value = _run(fn, jit, logp)
        grad = _run(jax.grad(lambda a, f=fn: f(a).sum()), jit, logp)
        np.testing.assert_allclose(float(value[0, 0]), clamped, rtol=1e-7)
        assert float(grad[0, 0]) == 0.0, gradient  # a clamped token: no gradient


def test_minus_inf_reference_without_clamp_is_the_exact_limit():
    """log_ratio_clip=None: the values are +inf (the exact KL contribution), the
    straight-through gradient -l = +inf (verl's k3+), k3's natural gradient 1 - e^l = 1."""
    logp, ref = jnp.array([-0.2]), jnp.array([-jnp.inf])
    for gradient, want in (("natural", 1.0), ("straight_through", np.inf)):
        fn = lambda a, g=gradient: rl.token_kl(a, ref, gradient=g, log_ratio_clip=None).sum()
        assert np.isposinf(float(fn(logp)))
        assert float(jax.grad(fn)(logp)[0]) == want


# ---- 4. audit_categorical with a -inf logit ----


def _numpy_audit(logits, ref_logits, config):
    """Exact expected gradient of one configuration, from the definitions, in float64."""
    log_pi = logits - np.log(np.sum(np.exp(logits)))
    log_ref = ref_logits - np.log(np.sum(np.exp(ref_logits)))
    pi = np.exp(log_pi)
    k = {"k1": lambda l: -l, "k2": lambda l: l * l / 2, "k3": lambda l: np.expm1(l) - l,
         "abs": np.abs}[config.estimator]
    dk = {"k1": lambda l: -np.ones_like(l), "k2": lambda l: l, "k3": np.expm1,
          "abs": np.sign}[config.estimator]
    grad = np.zeros_like(logits)
    for y in np.flatnonzero(pi > 0):  # a token pi cannot sample has weight 0
        l = np.clip(log_ref[y] - log_pi[y], -20, 20)
        if config.placement == "reward":
            d_logp = k(l)  # sg(K) grad log pi; on-policy pi / pi_old has the same gradient
        elif config.gradient == "natural":
            d_logp = -dk(l)
        elif config.gradient == "straight_through":
            d_logp = -l
        else:
            d_logp = k(l) - dk(l)  # w = 1 on-policy
        grad += pi[y] * d_logp * (np.eye(len(logits))[y] - pi)
    return grad


@pytest.mark.parametrize("jit", [False, True])
def test_audit_categorical_with_a_minus_inf_logit_is_finite_and_exact(dtype, jit):
    logits = jnp.array([0.0, -jnp.inf, 1.0], dtype)
    out = _run(lambda a, b: audit.audit_categorical(a, b), jit, logits, jnp.zeros(3, dtype))
    assert np.isfinite(np.asarray(out.gradients)).all()
    tol = {jnp.bfloat16: 1e-6, jnp.float32: 1e-6, jnp.float64: 1e-14}[dtype]
    logits64, zeros = np.array([0.0, -np.inf, 1.0]), np.zeros(3)
    for config, got in zip(audit.CONFIGS, out.gradients, strict=True):
        np.testing.assert_allclose(np.asarray(got, np.float64),
                                   _numpy_audit(logits64, zeros, config), rtol=tol, atol=tol,
                                   err_msg=config.name)
    # k2 straight-through is the reverse-KL gradient pi (a - KL) = [-0.197, 0, 0.197].
    st = out.gradients[audit.CONFIGS.index(audit.KLConfig("k2", "loss", "straight_through"))]
    pi = np.exp(logits64 - np.log(np.sum(np.exp(logits64))))
    a = np.where(pi > 0, np.log(np.where(pi > 0, pi, 1)) + np.log(3), 0)
    np.testing.assert_allclose(np.asarray(st, np.float64), pi * (a - np.sum(pi * a)),
                               rtol=tol, atol=tol)


# ---- 5. masking in aggregate only ----


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("gradient", rl.GRADIENTS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_mask_in_aggregate_only_keeps_nan_out_of_the_gradient(dtype, jit, gradient, estimator):
    lp = jnp.array([[-0.5, -jnp.inf, -jnp.inf, jnp.nan]], dtype)
    rf = jnp.array([[-0.7, -jnp.inf, -1.0, -1.0]], dtype)
    m = jnp.array([[True, False, False, False]])
    loss = lambda a: rl.aggregate(rl.token_kl(a, rf, estimator=estimator, gradient=gradient), m)
    grad = np.asarray(_run(jax.grad(loss), jit, lp), np.float64)
    l = float(np.asarray(rf, np.float64)[0, 0] - np.asarray(lp, np.float64)[0, 0])
    k = {"k1": -l, "k2": l * l / 2, "k3": math.expm1(l) - l, "abs": abs(l)}[estimator]
    dk = {"k1": -1.0, "k2": l, "k3": math.expm1(l), "abs": math.copysign(1.0, l)}[estimator]
    want = {"natural": -dk, "straight_through": -l, "importance_weighted": k - dk}[gradient]
    tol = {jnp.bfloat16: 2**-8, jnp.float32: 3e-7, jnp.float64: 1e-15}[dtype]
    np.testing.assert_allclose(grad[0, 0], want, rtol=tol)
    np.testing.assert_array_equal(grad[0, 1:], 0.0)


def test_readme_rl_snippet_masks_safely():
    """The README's path, token_kl without a mask then aggregate with one: [[0.181, 0]]."""
    lp, rf = jnp.array([[-0.5, -jnp.inf]]), jnp.array([[-0.7, -jnp.inf]])
    m = jnp.array([[True, False]])
    grad = jax.grad(lambda a: rl.aggregate(rl.token_kl(a, rf), m))(lp)
    np.testing.assert_allclose(np.asarray(grad), [[-math.expm1(-0.2), 0.0]], rtol=3e-7)


# ---- 6. forward mode through token_kl and full_kl ----


def test_forward_mode_and_second_derivatives_of_token_kl(x64):
    logp, ref = jnp.array([-30.0, -30.0, -1.0]), jnp.array([-5.0, -11.0, -1.5])
    l = np.asarray(ref - logp)
    for gradient, want in (("natural", -np.expm1(l)), ("straight_through", -l),
                           ("importance_weighted", -l)):
        fn = lambda a, g=gradient: rl.token_kl(a, ref, gradient=g, log_ratio_clip=None)
        _, tangent = jax.jvp(fn, (logp,), (jnp.ones(3),))
        np.testing.assert_allclose(np.asarray(tangent), want, rtol=1e-15)
        np.testing.assert_allclose(np.diag(np.asarray(jax.jacfwd(fn)(logp))), want, rtol=1e-15)
    # d^2 k3 / dlogp^2 = e^l (natural gradient differentiated again).
    hess = jax.hessian(lambda a: rl.token_kl(a, ref, log_ratio_clip=None).sum())(logp)
    np.testing.assert_allclose(np.diag(np.asarray(hess)), np.exp(l), rtol=1e-14)


@pytest.mark.parametrize("gradient", rl.GRADIENTS)
def test_vmap_of_the_gradient_equals_the_row_by_row_gradient(gradient):
    """The custom JVP batches: vmap over rows (clamped, -inf and plain tokens mixed)."""
    logp = jnp.array([[-30.0, -1.0, -0.2], [-30.0, -2.0, -jnp.inf]])
    ref = jnp.array([[-5.0, -1.5, -jnp.inf], [-27.0, -1.0, -1.0]])
    old = logp - 0.25
    iw = gradient == "importance_weighted"

    def grad_row(a, b, o):
        return jax.grad(lambda x: rl.token_kl(x, b, gradient=gradient,
                                              old_logprobs=o if iw else None).sum())(a)

    batched = np.asarray(jax.vmap(grad_row)(logp, ref, old))
    rows = zip(logp, ref, old, strict=True)
    looped = np.stack([np.asarray(grad_row(a, b, o)) for a, b, o in rows])
    np.testing.assert_array_equal(batched, looped)
    assert np.isfinite(batched).all()
