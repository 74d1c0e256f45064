"""jaxkl.rl.token_kl and kl_penalized_rewards: values, clamps, gradient options, masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkl import rl

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
