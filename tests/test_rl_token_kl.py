"""jaxkl.rl.token_kl and kl_penalized_rewards: values, clamps, gradient options, masks."""

import decimal
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkl import rl
from tests import _reference as ref_

ESTIMATORS = ["k1", "k2", "k3", "abs"]


def numpy_estimator(name, lr):
    """Float64 NumPy formulas, written from the definitions."""
    return {
        "k1": -lr,
        "k2": 0.5 * lr**2,
        "k3": np.expm1(lr) - lr,
        "abs": np.abs(lr),
    }[name]


def random_logprobs(seed, shape, scale=2.0):
    rng = np.random.default_rng(seed)
    logp = -np.abs(rng.normal(0, scale, shape)).astype(np.float32)
    ref = -np.abs(rng.normal(0, scale, shape)).astype(np.float32)
    return logp, ref


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_values_match_numpy_float64(estimator):
    logp, ref = random_logprobs(0, (8, 64))
    lr = ref.astype(np.float64) - logp.astype(np.float64)
    expected = numpy_estimator(estimator, lr)
    got = rl.token_kl(logp, ref, estimator=estimator, log_ratio_clip=None)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-12)


def test_k3_accurate_for_tiny_log_ratios():
    logp = np.full(5, -1.0, np.float32)
    ref = logp + np.array([1e-3, -1e-4, 3e-5, 1e-6, 0.0], np.float32)
    lr = ref.astype(np.float64) - logp.astype(np.float64)
    expected = lr**2 / 2 + lr**3 / 6 + lr**4 / 24
    got = np.asarray(rl.token_kl(logp, ref))
    np.testing.assert_allclose(got, expected, rtol=3e-7, atol=0)


def test_clamped_low_var_kl_reproduces_verl():
    rng = np.random.default_rng(1)
    logp = rng.uniform(-60, 0, 512).astype(np.float32)
    ref = rng.uniform(-60, 0, 512).astype(np.float32)
    # verl's low_var_kl (verl/trainer/ppo/core_algos.py, kl_penalty_forward) in float64.
    kl = np.clip(ref.astype(np.float64) - logp, -20, 20)
    expected = np.clip(np.exp(kl) - kl - 1, -10, 10)
    got = rl.token_kl(logp, ref, estimator="k3", log_ratio_clip=20, value_clip=10)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-12)
    assert np.any(np.abs(ref - logp) > 20) and np.any(expected == 10)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_natural_gradient_matches_closed_form(estimator):
    logp, ref = random_logprobs(2, (32,))
    lr = ref.astype(np.float64) - logp.astype(np.float64)
    # d/dlogp of k(l) with dl/dlogp = -1, d/dref = +1.
    dk_dl = {"k1": -np.ones_like(lr), "k2": lr, "k3": np.expm1(lr), "abs": np.sign(lr)}[estimator]
    grad_logp, grad_ref = jax.grad(
        lambda a, b: rl.token_kl(a, b, estimator=estimator).sum(), argnums=(0, 1)
    )(logp, ref)
    np.testing.assert_allclose(np.asarray(grad_logp), -dk_dl, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grad_ref), dk_dl, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_straight_through_has_estimator_value_and_k2_gradient(estimator):
    logp, ref = random_logprobs(3, (4, 16))
    st = lambda a, b: rl.token_kl(a, b, estimator=estimator, gradient="straight_through")
    np.testing.assert_array_equal(
        np.asarray(st(logp, ref)), np.asarray(rl.token_kl(logp, ref, estimator=estimator))
    )
    grad_logp, grad_ref = jax.grad(lambda a, b: st(a, b).sum(), argnums=(0, 1))(logp, ref)
    k2_logp, k2_ref = jax.grad(
        lambda a, b: (0.5 * (a - b) ** 2).sum(), argnums=(0, 1)
    )(logp, ref)
    np.testing.assert_allclose(np.asarray(grad_logp), np.asarray(k2_logp), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad_ref), np.asarray(k2_ref), rtol=1e-6)


# ---- expected gradients by exact enumeration over a small vocabulary (float64) ----

VOCAB = 6


def _policy(theta):
    return jax.nn.log_softmax(theta)


def _enumerated_gradient(per_token_loss, theta, sampling_logprobs):
    """sum_y q(y) grad_theta loss(theta, y), q = exp(sampling_logprobs) (held fixed)."""
    weights = jnp.exp(sampling_logprobs)

    def expected(th):
        return jnp.sum(weights * per_token_loss(_policy(th)))

    return np.asarray(jax.grad(expected)(theta))


def _closed_forms(theta, ref_logits):
    pi = np.exp(np.asarray(_policy(theta)))
    ref = np.exp(np.asarray(jax.nn.log_softmax(ref_logits)))
    a = np.log(pi) - np.log(ref)
    reverse = pi * (a - np.sum(pi * a))  # grad_theta KL(pi || ref)
    forward = pi - ref  # grad_theta KL(ref || pi)
    return reverse, forward


@pytest.fixture
def problem(x64):
    rng = np.random.default_rng(4)
    theta = jnp.asarray(rng.normal(0, 1, VOCAB))
    ref_logits = jnp.asarray(rng.normal(0, 1, VOCAB))
    return theta, ref_logits, jax.nn.log_softmax(ref_logits)


def test_on_policy_expected_gradients_by_enumeration(problem):
    theta, ref_logits, ref = problem
    reverse, forward = _closed_forms(theta, ref_logits)
    on_policy = jax.lax.stop_gradient(_policy(theta))

    def expected_grad(**kwargs):
        return _enumerated_gradient(
            lambda logp: rl.token_kl(logp, ref, log_ratio_clip=None, **kwargs), theta, on_policy
        )

    np.testing.assert_allclose(expected_grad(estimator="k1"), 0, atol=1e-15)
    np.testing.assert_allclose(expected_grad(estimator="k2"), reverse, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(expected_grad(estimator="k3"), forward, rtol=1e-12, atol=1e-15)
    for estimator in ESTIMATORS:
        st = expected_grad(estimator=estimator, gradient="straight_through")
        np.testing.assert_allclose(st, reverse, rtol=1e-12, atol=1e-15)
    for estimator in ("k1", "k3"):
        iw = expected_grad(estimator=estimator, gradient="importance_weighted")
        np.testing.assert_allclose(iw, reverse, rtol=1e-12, atol=1e-15)


def test_off_policy_importance_weighting_gives_reverse_kl_gradient(problem):
    theta, ref_logits, ref = problem
    reverse, _ = _closed_forms(theta, ref_logits)
    old = jax.nn.log_softmax(theta + jnp.linspace(-1.0, 1.0, VOCAB))  # pi_old != pi
    for estimator in ("k1", "k3"):
        grad = _enumerated_gradient(
            lambda logp, e=estimator: rl.token_kl(
                logp, ref, estimator=e, gradient="importance_weighted", old_logprobs=old
            ),
            theta,
            old,
        )
        np.testing.assert_allclose(grad, reverse, rtol=1e-12, atol=1e-15)


def test_kl_in_reward_score_function_gradient_is_reverse_kl(problem):
    theta, ref_logits, ref = problem
    reverse, _ = _closed_forms(theta, ref_logits)
    beta = 0.3
    on_policy = jax.lax.stop_gradient(_policy(theta))

    def reinforce_loss(logp):
        # One-token sequences: the reward of token y is -beta * k1(y); REINFORCE loss.
        rewards = rl.kl_penalized_rewards(
            jnp.zeros(VOCAB), logp[:, None], ref[:, None], jnp.ones((VOCAB, 1), bool),
            kl_coef=beta,
        )[:, 0]
        return -rewards * logp

    grad = _enumerated_gradient(reinforce_loss, theta, on_policy)
    np.testing.assert_allclose(grad, beta * reverse, rtol=1e-12, atol=1e-15)


# ---- robustness ----


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("gradient", rl.GRADIENTS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_finite_values_and_gradients_at_extreme_log_ratios(estimator, gradient, dtype):
    logp = jnp.array([-100.0, 0.0, -100.0, -3.0], dtype)
    ref = jnp.array([0.0, -100.0, -100.0, -3.0], dtype)
    fn = lambda a, b: rl.token_kl(a, b, estimator=estimator, gradient=gradient)
    value = fn(logp, ref)
    grads = jax.grad(lambda a, b: fn(a, b).sum(), argnums=(0, 1))(logp, ref)
    assert value.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(value)))
    for g in grads:
        assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))


def test_unclamped_k3_overflows_as_the_exact_value_does():
    value = rl.token_kl(jnp.array([-100.0]), jnp.array([0.0]), log_ratio_clip=None)
    assert bool(jnp.isinf(value[0]))


def test_mask_hides_inf_and_nan_from_values_and_gradients():
    logp = jnp.array([[-1.0, -jnp.inf, jnp.nan], [-0.5, -2.0, -jnp.inf]])
    ref = jnp.array([[-1.2, -0.3, -0.1], [jnp.nan, -1.0, -jnp.inf]])
    mask = jnp.array([[True, False, False], [False, True, False]])
    for gradient in rl.GRADIENTS:
        fn = lambda a, b, g=gradient: rl.token_kl(a, b, gradient=g, mask=mask).sum()
        value = fn(logp, ref)
        grad_logp, grad_ref = jax.grad(fn, argnums=(0, 1))(logp, ref)
        expected = rl.token_kl(jnp.array([-1.0, -2.0]), jnp.array([-1.2, -1.0])).sum()
        np.testing.assert_allclose(float(value), float(expected), rtol=1e-6)
        for g in (grad_logp, grad_ref):
            assert bool(jnp.all(jnp.isfinite(g)))
            assert bool(jnp.all(jnp.where(mask, True, g == 0)))


def test_bfloat16_inputs_are_computed_in_float32():
    logp, ref = random_logprobs(5, (64,))
    logp16, ref16 = jnp.asarray(logp, jnp.bfloat16), jnp.asarray(ref, jnp.bfloat16)
    lr = np.asarray(ref16, np.float64) - np.asarray(logp16, np.float64)
    got = rl.token_kl(logp16, ref16)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.expm1(lr) - lr, rtol=1e-6, atol=1e-12)


def test_float64_under_x64(x64):
    logp, ref = random_logprobs(6, (16,))
    logp, ref = logp.astype(np.float64) - 1e-3, ref.astype(np.float64)
    got = rl.token_kl(logp, ref)
    assert got.dtype == jnp.float64
    lr = ref - logp
    np.testing.assert_allclose(np.asarray(got), np.expm1(lr) - lr, rtol=1e-13)


def test_jit_and_vmap_agree_with_eager():
    logp, ref = random_logprobs(7, (3, 10))
    fn = lambda a, b: rl.token_kl(a, b, estimator="k3", gradient="straight_through")
    eager = fn(logp, ref)
    np.testing.assert_array_equal(np.asarray(jax.jit(fn)(logp, ref)), np.asarray(eager))
    np.testing.assert_array_equal(np.asarray(jax.vmap(fn)(logp, ref)), np.asarray(eager))


def test_kl_penalized_rewards_values():
    logp, ref = random_logprobs(8, (3, 5))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    scores = np.array([1.0, -2.0, 5.0], np.float32)
    got = rl.kl_penalized_rewards(scores, logp, ref, mask, kl_coef=0.1)
    expected = -0.1 * (logp.astype(np.float64) - ref) * mask
    expected[0, 2] += 1.0
    expected[1, 4] += -2.0
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-7)
    grad = jax.grad(lambda a: rl.kl_penalized_rewards(scores, a, ref, mask, kl_coef=0.1).sum())
    np.testing.assert_array_equal(np.asarray(grad(logp)), 0)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_kl_penalized_rewards_finite_at_extreme_log_ratios(estimator):
    """The "auto" clamp keeps every estimator's reward finite at |l| = 100 (k3's exp(100)
    overflows float32), and leaves k1's penalty unclamped: it sums to log pi - log pi_ref."""
    logp = jnp.array([[-100.0, 0.0, -3.0]])
    ref = jnp.array([[0.0, -100.0, -1.0]])
    mask = jnp.ones((1, 3), bool)
    rewards = rl.kl_penalized_rewards(jnp.zeros(1), logp, ref, mask, kl_coef=1.0,
                                      estimator=estimator)
    assert np.all(np.isfinite(np.asarray(rewards)))
    if estimator == "k1":
        np.testing.assert_allclose(float(rewards.sum()), float((ref - logp).sum()))
    if estimator == "k3":  # clamped at 20: exp(20) - 21
        np.testing.assert_allclose(float(rewards[0, 0]), -(np.exp(20.0) - 21), rtol=1e-6)
    explicit = rl.kl_penalized_rewards(jnp.zeros(1), logp, ref, mask, kl_coef=1.0,
                                       estimator=estimator, log_ratio_clip=None)
    if estimator == "k3":
        assert np.isneginf(float(explicit[0, 0]))  # the exact formula, as asked for


# ---- bad input ----


def test_errors_name_the_argument():
    good = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="`ref_logprobs`"):
        rl.token_kl(good, jnp.zeros((2, 4)))
    with pytest.raises(TypeError, match="`logprobs`"):
        rl.token_kl(jnp.zeros((2, 3), jnp.int32), good)
    with pytest.raises(TypeError, match="`ref_logprobs`"):
        rl.token_kl(good, np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="`mask`"):
        rl.token_kl(good, good, mask=jnp.ones((3, 2), bool))
    with pytest.raises(ValueError, match="`estimator`"):
        rl.token_kl(good, good, estimator="k4")
    with pytest.raises(ValueError, match="`gradient`"):
        rl.token_kl(good, good, gradient="reinforce")
    with pytest.raises(ValueError, match="`old_logprobs`"):
        rl.token_kl(good, good, old_logprobs=good)
    with pytest.raises(ValueError, match="`old_logprobs`"):
        rl.token_kl(good, good, gradient="importance_weighted", old_logprobs=jnp.zeros(3))
    with pytest.raises(ValueError, match="`log_ratio_clip`"):
        rl.token_kl(good, good, log_ratio_clip=-1.0)
    with pytest.raises(TypeError, match="`value_clip`"):
        rl.token_kl(good, good, value_clip="10")
    with pytest.raises(ValueError, match="`scores`"):
        rl.kl_penalized_rewards(jnp.zeros(3), good, good, jnp.ones((2, 3)), kl_coef=0.1)
    with pytest.raises(ValueError, match="`log_ratio_clip`"):
        rl.kl_penalized_rewards(jnp.zeros(2), good, good, jnp.ones((2, 3)), kl_coef=0.1,
                                log_ratio_clip="automatic")


# ==== jaxkl.rl at inputs from the field (issue 14, formerly tests/test_rl_field_inputs.py).
# Each expected value comes from the definitions, independently of jaxkl: the gradient of
# ``w * k(l)`` with respect to ``logprobs`` is ``w (k(l) - k'(l))`` (``-w l`` for k3), of
# a straight-through token ``-l``, of a natural one ``-k'(l)``; a clamped token carries
# no gradient (the documented choice). Values with an exponential are computed with
# 50-digit ``decimal`` arithmetic (tests/_reference.py).

DTYPES = [jnp.bfloat16, jnp.float32, jnp.float64]


def _run(fn, jit, *args):
    return (jax.jit(fn) if jit else fn)(*args)


@pytest.fixture(params=DTYPES, ids=["bf16", "f32", "f64"])
def dtype(request):
    """bf16, f32 and f64 (under x64); tests that parametrize ``dtype`` override it."""
    with jax.enable_x64(request.param == jnp.float64):
        yield request.param



def _k3_decimal(l: float) -> float:
    return float(ref_.k3(decimal.Decimal(l)))


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


def test_kl_penalty_to_go_is_the_reverse_cumulative_penalty():
    """Against a Python loop: P_t = -beta sum_{s >= t, valid} k1(l_s); with k1 the first
    token's value is -beta (log pi(y) - log pi_ref(y)) over the valid tokens."""
    rng = np.random.default_rng(12)
    logp = -np.abs(rng.normal(size=(3, 7))).astype(np.float32)
    ref = -np.abs(rng.normal(size=(3, 7))).astype(np.float32)
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [0] * 7], bool)
    got = np.asarray(rl.kl_penalty_to_go(logp, ref, mask, kl_coef=0.1))
    want = np.zeros((3, 7))
    for i in range(3):
        total = 0.0
        for t in reversed(range(7)):
            if mask[i, t]:
                total += -0.1 * (float(logp[i, t]) - float(ref[i, t]))
                want[i, t] = total
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    sequence_kl = (logp.astype(np.float64) - ref)[0].sum()
    np.testing.assert_allclose(got[0, 0], -0.1 * sequence_kl, rtol=1e-5)
    grad = jax.grad(lambda x: rl.kl_penalty_to_go(x, ref, mask, kl_coef=0.1).sum())(logp)
    assert not np.asarray(grad).any()
