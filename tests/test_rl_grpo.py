"""GRPO pieces: group advantages, clipped surrogate, grpo_loss, KL controllers."""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxkl import rl


def test_group_advantages_match_numpy():
    rng = np.random.default_rng(0)
    rewards = rng.normal(0, 2, (5, 8)).astype(np.float32)
    r = rewards.astype(np.float64)
    centered = r - r.mean(-1, keepdims=True)
    std = np.sqrt((centered**2).sum(-1, keepdims=True) / 7)  # ddof = 1
    np.testing.assert_allclose(np.asarray(rl.group_advantages(rewards)), centered / (std + 1e-6),
                               rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(rl.group_advantages(rewards, scale_rewards="none")), centered, rtol=1e-5,
        atol=1e-6,
    )


def test_group_advantages_constant_group_is_zero_and_errors():
    adv = rl.group_advantages(jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]))
    np.testing.assert_array_equal(np.asarray(adv[0]), 0)
    np.testing.assert_allclose(np.asarray(adv[1]), [-1, 0, 1], rtol=1e-5)
    with pytest.raises(ValueError, match="`rewards`"):
        rl.group_advantages(jnp.zeros((4, 1)))
    with pytest.raises(TypeError, match="`rewards`"):
        rl.group_advantages(jnp.zeros((4, 2), jnp.int32))


def numpy_surrogate(logp, old, adv, low, high):
    ratio = np.exp(logp.astype(np.float64) - old)
    loss = -np.minimum(ratio * adv, np.clip(ratio, 1 - low, 1 + high) * adv)
    # TRL's clip indicator (trl/trainer/grpo_trainer.py, _compute_loss).
    clipped = ((ratio < 1 - low) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
    return loss, ratio, clipped


def random_rollout(seed, shape=(4, 6)):
    rng = np.random.default_rng(seed)
    old = -np.abs(rng.normal(0, 1, shape)).astype(np.float32)
    logp = (old + rng.normal(0, 0.3, shape)).astype(np.float32)
    ref = (old + rng.normal(0, 0.3, shape)).astype(np.float32)
    adv = rng.normal(0, 1, shape[:-1]).astype(np.float32)
    mask = rng.uniform(size=shape) < 0.8
    return logp, old, ref, adv, mask


def test_clipped_surrogate_values_flags_and_gradient():
    logp, old, _, adv, _ = random_rollout(1)
    adv_tok = np.broadcast_to(adv[:, None], logp.shape)
    out = rl.clipped_surrogate(logp, old, adv, clip_eps=0.2, clip_eps_high=0.28)
    loss, ratio, clipped = numpy_surrogate(logp, old, adv_tok, 0.2, 0.28)
    np.testing.assert_allclose(np.asarray(out.loss), loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(out.ratio), ratio, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.clipped), clipped)
    assert clipped.any() and not clipped.all()
    grad = jax.grad(lambda a: rl.clipped_surrogate(a, old, adv).loss.sum())(logp)
    _, _, clipped_sym = numpy_surrogate(logp, old, adv_tok, 0.2, 0.2)
    np.testing.assert_allclose(np.asarray(grad), np.where(clipped_sym, 0, -ratio * adv_tok),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("aggregation", rl.MODES)
def test_grpo_loss_matches_numpy_composition(aggregation):
    logp, old, ref, adv, mask = random_rollout(2)
    beta = 0.05
    loss, metrics = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=beta,
                                 aggregation=aggregation)
    adv_tok = np.broadcast_to(adv[:, None], logp.shape)
    surrogate, ratio, clipped = numpy_surrogate(logp, old, adv_tok, 0.2, 0.2)
    lr = ref.astype(np.float64) - logp
    k3 = np.expm1(lr) - lr
    per_token = surrogate + beta * k3
    m = mask.astype(np.float64)
    counts = m.sum(-1)
    rows = counts > 0
    expected = {
        "token-mean": (per_token * m).sum() / m.sum(),
        "token-sum": (per_token * m).sum(),
        "seq-mean-token-sum": (per_token * m).sum(-1)[rows].mean(),
        "seq-mean-token-mean": ((per_token * m).sum(-1)[rows] / counts[rows]).mean(),
        "seq-mean-token-sum-norm": (per_token * m).sum(-1)[rows].mean() / logp.shape[-1],
    }[aggregation]
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    token_mean = lambda x: (x * m).sum() / m.sum()
    np.testing.assert_allclose(float(metrics.kl), token_mean(k3), rtol=1e-5)
    np.testing.assert_allclose(float(metrics.policy_loss), token_mean(surrogate), rtol=1e-5)
    np.testing.assert_allclose(float(metrics.clip_fraction), token_mean(clipped), rtol=1e-6)
    np.testing.assert_allclose(float(metrics.ratio_mean), token_mean(ratio), rtol=1e-5)
    np.testing.assert_allclose(float(metrics.ratio_max), ratio[mask].max(), rtol=1e-5)


def test_grpo_loss_gradient_jit_and_masked_garbage():
    logp, old, ref, adv, mask = random_rollout(3)
    poisoned = np.where(mask, logp, -np.inf).astype(np.float32)
    old_p = np.where(mask, old, np.nan).astype(np.float32)

    def loss_fn(lp, coef):
        return rl.grpo_loss(lp, old_p, adv, mask, ref_logprobs=ref, kl_coef=coef,
                            kl=rl.KLConfig(gradient="straight_through"))

    (loss, metrics), grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(poisoned, 0.1)
    assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in metrics)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~mask] == 0)
    # Closed form of the token-mean gradient: surrogate part plus beta * k2's gradient.
    adv_tok = np.broadcast_to(adv[:, None], logp.shape)
    _, ratio, clipped = numpy_surrogate(logp, old, adv_tok, 0.2, 0.2)
    per_token = np.where(clipped, 0, -ratio * adv_tok) + 0.1 * (logp.astype(np.float64) - ref)
    expected = np.where(mask, per_token, 0) / mask.sum()
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-7)


def test_grpo_loss_importance_weighted_kl_uses_old_logprobs():
    logp, old, ref, adv, mask = random_rollout(4)
    _, metrics = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1,
                              kl=rl.KLConfig(gradient="importance_weighted"))
    lr = ref.astype(np.float64) - logp
    weighted = np.exp(logp.astype(np.float64) - old) * (np.expm1(lr) - lr)
    np.testing.assert_allclose(float(metrics.kl), weighted[mask].mean(), rtol=1e-5)


def test_grpo_loss_without_kl_and_errors():
    logp, old, ref, adv, mask = random_rollout(5)
    loss, metrics = rl.grpo_loss(logp, old, adv, mask)
    assert float(metrics.kl) == 0.0
    np.testing.assert_allclose(float(loss), float(metrics.policy_loss), rtol=1e-6)
    with pytest.raises(ValueError, match="`ref_logprobs`"):
        rl.grpo_loss(logp, old, adv, mask, kl_coef=0.1)
    # A traced coefficient may be nonzero: the message says why a traced 0 still asks.
    with pytest.raises(ValueError, match="a traced `kl_coef`"):
        jax.jit(lambda b: rl.grpo_loss(logp, old, adv, mask, kl_coef=b)[0])(0.0)
    with pytest.raises(ValueError, match="`advantages`"):
        rl.grpo_loss(logp, old, adv[:2], mask)
    with pytest.raises(ValueError, match="`mask`"):
        rl.grpo_loss(logp, old, adv, mask[:, :3])
    with pytest.raises(ValueError, match="`old_logprobs`"):
        rl.grpo_loss(logp, old[:, :3], adv, mask)
    with pytest.raises(ValueError, match="`mode`"):
        rl.grpo_loss(logp, old, adv, mask, aggregation="mean")
    with pytest.raises(ValueError, match="`kl.estimator`"):
        rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1, kl=rl.KLConfig("k5"))


def python_adaptive_kl(coef, kls, target, horizon, n_steps, *, compounded=True):
    """The rule of Ziegler et al. (2019) in plain Python floats: their first-order factor
    1 + e n / H, or compounded, exp(e n / H)."""
    out = []
    for kl in kls:
        error = min(max(kl / target - 1, -0.2), 0.2)
        step = error * n_steps / horizon
        coef *= math.exp(step) if compounded else 1 + step
        out.append(coef)
    return out


def test_adaptive_kl_controller_matches_python_rule_under_scan():
    kls = [0.0, 0.05, 0.1, 0.5, 3.0, 0.12, 0.09]
    ctrl = rl.adaptive_kl_controller(0.2, target=0.1, horizon=1000)

    def step(state, kl):
        state = ctrl.update(state, kl, n_steps=64)
        return state, state.coef

    _, coefs = jax.lax.scan(step, ctrl.init(), jnp.asarray(kls))
    expected = python_adaptive_kl(0.2, kls, 0.1, 1000, 64)
    np.testing.assert_allclose(np.asarray(coefs), expected, rtol=1e-6)
    # Ziegler's first-order factor differs by at most (e n / H)^2 = 1.6e-4 per step here.
    linear = python_adaptive_kl(0.2, kls, 0.1, 1000, 64, compounded=False)
    np.testing.assert_allclose(np.asarray(coefs), linear, rtol=len(kls) * (0.2 * 64 / 1000)**2)
    jitted = jax.jit(ctrl.update)(ctrl.init(), 0.5, 64)
    np.testing.assert_allclose(float(jitted.coef), 0.2 * math.exp(0.2 * 64 / 1000),
                               rtol=1e-6)


def test_fixed_controller_and_bad_arguments():
    ctrl = rl.fixed_kl_controller(0.04)
    state = ctrl.update(ctrl.init(), 10.0)
    np.testing.assert_allclose(float(state.coef), 0.04, rtol=1e-7)
    with pytest.raises(ValueError, match="`target`"):
        rl.adaptive_kl_controller(0.1, target=0.0, horizon=10)
    with pytest.raises(ValueError, match="`horizon`"):
        rl.adaptive_kl_controller(0.1, target=0.1, horizon=-5)
    with pytest.raises(ValueError, match="`coef`"):
        rl.fixed_kl_controller(-1.0)


# ==== The KL controller stays positive and can recover; advantages of any magnitude
# (issue 15, formerly tests/test_rl_grpo_robust.py).

# ----------------------------------------------------------------------------------------
# Adaptive KL controller.


def test_issue_inputs_stay_positive():
    # Before: coef -1.9 (n_steps=1000) and exactly 0 (n_steps=50), never to recover.
    ctrl = rl.adaptive_kl_controller(0.1, target=1.0, horizon=10)
    for n_steps in (50, 1000):
        state = ctrl.update(ctrl.init(), 0.0, n_steps=n_steps)
        expected = 0.1 * math.exp(-0.2 * n_steps / 10)
        np.testing.assert_allclose(float(state.coef), expected, rtol=1e-6)
        # A KL above the target raises it again.
        assert float(ctrl.update(state, 2.0, n_steps=n_steps).coef) > float(state.coef)


_KL = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                st.sampled_from([0.0, -1.0, 1e30, float("inf"), float("nan")]))


@settings(max_examples=200, deadline=None)
@given(init_coef=st.floats(1e-6, 1e3), target=st.floats(1e-3, 1e2),
       horizon=st.floats(1.0, 1e5), max_error=st.floats(0.01, 2.0),
       history=st.lists(st.tuples(_KL, st.integers(0, 10**9)), max_size=25))
def test_coefficient_stays_positive_and_can_always_recover(init_coef, target, horizon,
                                                           max_error, history):
    ctrl = rl.adaptive_kl_controller(init_coef, target=target, horizon=horizon,
                                     max_error=max_error)
    state = ctrl.init()
    for kl, n_steps in history:
        previous = float(state.coef)
        state = ctrl.update(state, kl, n_steps=n_steps)
        coef = float(state.coef)
        assert state.coef.dtype == jnp.float32
        assert 0 < coef < math.inf
        if math.isnan(kl):
            assert coef == previous
    # Recovery: a KL above the target by more than max_error, 5 / max_error horizons at a
    # time, multiplies the coefficient by e^5 (up to the float32 maximum) until it is back
    # above where it started, from wherever the history left it.
    span = math.log(float(np.finfo(np.float32).max)) - math.log(float(np.finfo(np.float32).tiny))
    n_steps = math.ceil(5 * horizon / max_error)
    for _ in range(math.ceil(span / 5) + 1):
        before = float(state.coef)
        state = ctrl.update(state, target * (2 + max_error), n_steps=n_steps)
        assert float(state.coef) > before or before == np.finfo(np.float32).max
        if float(state.coef) >= np.float32(init_coef):
            break
    assert float(state.coef) >= np.float32(init_coef)


def test_controller_under_jit_scan_and_x64(x64):
    ctrl = rl.adaptive_kl_controller(0.5, target=1.0, horizon=4)

    def step(state, kl):
        state = ctrl.update(state, kl, n_steps=100)
        return state, state.coef

    kls = jnp.array([0.0, 0.0, jnp.nan, 5.0, 5.0])
    _, coefs = jax.jit(lambda s: jax.lax.scan(step, s, kls))(ctrl.init())
    assert coefs.dtype == jnp.float32
    expected, coef = [], 0.5
    for kl in np.asarray(kls):
        if not np.isnan(kl):
            coef = max(coef * math.exp(min(max(kl - 1, -0.2), 0.2) * 25),
                       float(np.finfo(np.float32).tiny))
        expected.append(coef)
    np.testing.assert_allclose(np.asarray(coefs), expected, rtol=1e-5)


@pytest.mark.parametrize("call, match", [
    (lambda c, s: c.update(s, jnp.array([0.1, 0.2])), "`current_kl`"),
    (lambda c, s: c.update(s, "high"), "`current_kl`"),
    (lambda c, s: c.update(s, 0.1, n_steps=jnp.array([1, 2])), "`n_steps`"),
    (lambda c, s: c.update(s, 0.1, n_steps=-1), "`n_steps`"),
])
def test_controller_update_rejects_bad_arguments(call, match):
    ctrl = rl.adaptive_kl_controller(0.1, target=1.0, horizon=10)
    with pytest.raises((TypeError, ValueError), match=match):
        call(ctrl, ctrl.init())


# ----------------------------------------------------------------------------------------
# Group advantages of any magnitude.


def _advantages_exact(group, eps):
    """(r - mean) / (std_ddof1 + eps) in exact rational arithmetic (sqrt in float64)."""
    values = [Fraction(float(v)) for v in group]
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    std = math.sqrt(variance) if variance else 0.0
    if variance == 0:
        return [0.0] * len(values)
    return [float(v - mean) / (std + eps) for v in values]


@pytest.mark.parametrize("dtype, big", [(jnp.float32, 1e20), (jnp.float32, 3e38),
                                        (jnp.bfloat16, 1e20), (jnp.float64, 1e200)])
def test_huge_rewards_give_the_closed_form(dtype, big):
    if dtype == jnp.float64:
        jax.config.update("jax_enable_x64", True)
    try:
        rewards = jnp.array([[big, -big, 0.0, 0.0]], dtype)
        adv = rl.group_advantages(rewards)
        # Before: [0, 0, 0, 0] (the variance overflowed). Closed form: +-sqrt(3/2), 0, 0.
        np.testing.assert_allclose(np.asarray(adv, np.float64),
                                   [[math.sqrt(1.5), -math.sqrt(1.5), 0.0, 0.0]], rtol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_advantages_match_exact_arithmetic_across_scales():
    rng = np.random.default_rng(0)
    for scale in (1e-30, 1e-6, 1.0, 1e6, 1e18, 1e30, 1e37):
        rewards = (rng.normal(size=(6, 5)) * scale).astype(np.float32)
        for eps in (0.0, 1e-6):
            got = np.asarray(rl.group_advantages(rewards, eps=eps), np.float64)
            want = np.array([_advantages_exact(g, eps) for g in rewards])
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6 * np.max(np.abs(want)))
        centered = np.asarray(rl.group_advantages(rewards, scale_rewards="none"), np.float64)
        want = rewards.astype(np.float64) - rewards.astype(np.float64).mean(-1, keepdims=True)
        np.testing.assert_allclose(centered, want, rtol=1e-5, atol=1e-6 * scale)


def test_scaled_advantages_jit_vmap_and_grad():
    rewards = jnp.array([[1e20, -1e20, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
    eager = rl.group_advantages(rewards)
    # jit fuses the scaling differently: the same values up to float32 rounding.
    for transformed in (jax.jit(rl.group_advantages), jax.vmap(rl.group_advantages)):
        np.testing.assert_allclose(np.asarray(transformed(rewards)), np.asarray(eager),
                                   rtol=1e-6, atol=1e-7)
    weights = jnp.broadcast_to(jnp.arange(4.0), rewards.shape)
    grad = jax.grad(lambda r: jnp.sum(rl.group_advantages(r) * weights))(rewards)
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert np.all(np.asarray(grad[1]) == 0)  # constant group: zero advantage, zero gradient


# ==== Regressions from the review of jaxkl.rl (formerly tests/test_review_rlshard.py):
# constant groups, controller dtypes and validation, scalar coefficients.

# ---- group_advantages: constant groups


@pytest.mark.parametrize("value", [0.1, 0.2, 0.7, 1 / 3])
@pytest.mark.parametrize("group_size", [3, 7, 16])
def test_constant_group_gets_exactly_zero_advantage(value, group_size):
    """sum/G of G equal float32 rewards need not round back to the reward: the residual
    (~1e-8) divided by the equally tiny std used to give advantages of ~0.1."""
    rewards = jnp.full((2, group_size), value, jnp.float32).at[1, 0].set(value + 1.0)
    for scale_rewards in ("group", "none"):
        adv = np.asarray(rl.group_advantages(rewards, scale_rewards=scale_rewards))
        np.testing.assert_array_equal(adv[0], 0)
        assert np.all(adv[1] != 0)


def test_constant_group_with_zero_eps_is_zero_not_nan_and_gradient_is_finite():
    rewards = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(np.asarray(rl.group_advantages(rewards, eps=0.0)[0]), 0)
    np.testing.assert_allclose(np.asarray(rl.group_advantages(rewards, eps=0.0)[1]),
                               [-1, 0, 1], rtol=1e-6)
    grad = jax.grad(lambda r: (rl.group_advantages(r) * jnp.arange(3.0)[None]).sum())(rewards)
    assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_array_equal(np.asarray(grad[0]), 0)


def test_group_advantages_rejects_bad_eps():
    with pytest.raises(ValueError, match="`eps`"):
        rl.group_advantages(jnp.zeros((2, 3)), eps=-1e-6)
    with pytest.raises(ValueError, match="`eps`"):
        rl.group_advantages(jnp.zeros((2, 3)), eps=float("nan"))
    with pytest.raises(TypeError, match="`eps`"):
        rl.group_advantages(jnp.zeros((2, 3)), eps="1e-6")


# ---- KL controllers


def test_adaptive_controller_keeps_its_dtype_under_x64_scan(x64):
    """A float64 KL used to promote the float32 coefficient: lax.scan then rejected the
    carry (float32 in, float64 out)."""
    ctrl = rl.adaptive_kl_controller(0.2, target=0.1, horizon=1000)
    kls = jnp.asarray([0.05, 0.5, 0.1], jnp.float64)
    final, coefs = jax.lax.scan(lambda s, kl: (ctrl.update(s, kl, n_steps=64),) * 2,
                                ctrl.init(), kls)
    assert final.coef.dtype == jnp.float32
    expected, coef = [], 0.2
    for kl in np.asarray(kls):
        coef *= math.exp(min(max(kl / 0.1 - 1, -0.2), 0.2) * 64 / 1000)  # compounded rule
        expected.append(coef)
    np.testing.assert_allclose(np.asarray(coefs.coef), expected, rtol=1e-6)


def test_fixed_controller_validation():
    np.testing.assert_allclose(float(rl.fixed_kl_controller(np.float32(0.04)).init().coef),
                               0.04, rtol=1e-7)
    assert float(rl.fixed_kl_controller(0).init().coef) == 0.0
    with pytest.raises(ValueError, match="`coef`"):
        rl.fixed_kl_controller(float("nan"))
    with pytest.raises(ValueError, match="`coef`"):
        rl.fixed_kl_controller(-0.1)
    with pytest.raises(TypeError, match="`coef`"):
        rl.fixed_kl_controller("0.1")


# ---- silent broadcasting of coefficients


def test_kl_coef_must_be_a_scalar():
    """A [T] coefficient used to broadcast against the per-token values without error."""
    logp = jnp.zeros((2, 3))
    mask = jnp.ones((2, 3), bool)
    with pytest.raises(ValueError, match="`kl_coef`"):
        rl.grpo_loss(logp, logp, jnp.ones(2), mask, ref_logprobs=logp - 0.1,
                     kl_coef=jnp.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="`kl_coef`"):
        rl.kl_penalized_rewards(jnp.ones(2), logp, logp - 0.1, mask,
                                kl_coef=np.array([0.1, 0.2, 0.3]))
    with pytest.raises(TypeError, match="`kl_coef`"):
        rl.grpo_loss(logp, logp, jnp.ones(2), mask, ref_logprobs=logp, kl_coef="0.1")
    # Scalars (Python, NumPy, 0-d and traced) are fine.
    for coef in (0.1, np.float32(0.1), jnp.asarray(0.1)):
        rl.grpo_loss(logp, logp, jnp.ones(2), mask, ref_logprobs=logp - 0.1, kl_coef=coef)
    traced = jax.jit(lambda c: rl.grpo_loss(logp, logp, jnp.ones(2), mask,
                                            ref_logprobs=logp - 0.1, kl_coef=c)[0])
    np.testing.assert_allclose(float(traced(0.1)),
                               float(rl.grpo_loss(logp, logp, jnp.ones(2), mask,
                                                  ref_logprobs=logp - 0.1, kl_coef=0.1)[0]))


# ---- the KL options (KLConfig) and the metrics (GRPOMetrics) are typed


def test_grpo_loss_kl_options_are_checked_naming_the_field():
    logp, old, ref, adv, mask = random_rollout(6)
    with pytest.raises(ValueError, match="`kl.gradient`"):
        rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1,
                     kl=rl.KLConfig(gradient="nope"))
    with pytest.raises(ValueError, match="`kl.value_clip`"):
        rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1,
                     kl=rl.KLConfig(value_clip=-1.0))
    with pytest.raises(ValueError, match="`kl.placement`"):
        rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1,
                     kl=rl.KLConfig("k1", "reward"))
    with pytest.raises(TypeError, match="`kl`"):
        rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1, kl="k3")


def test_grpo_loss_kl_config_matches_token_kl_and_metrics_are_a_named_tuple():
    logp, old, ref, adv, mask = random_rollout(7)
    config = rl.KLConfig("k2", gradient="straight_through", log_ratio_clip=None, value_clip=0.5)
    _, metrics = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1, kl=config)
    assert isinstance(metrics, rl.GRPOMetrics)
    assert metrics._fields == ("policy_loss", "kl", "clip_fraction", "ratio_mean", "ratio_max",
                               "ratio_min", "clip_fraction_low", "clip_fraction_high",
                               "dual_clip_fraction", "ppo_kl", "entropy")
    values = rl.token_kl(logp, ref, estimator="k2", gradient="straight_through",
                         log_ratio_clip=None, value_clip=0.5)
    np.testing.assert_allclose(float(metrics.kl), np.asarray(values)[mask].mean(), rtol=1e-6)
    # The default is the former default of the separate arguments: k3, natural, clamp 20.
    default = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1)[0]
    explicit = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1,
                            kl=rl.KLConfig("k3", "loss", "natural", 20.0, None))[0]
    assert float(default) == float(explicit)


# ---- the loss layer's options (issue 17) ------------------------------------------


def test_dual_clip_bounds_the_loss_of_negative_advantages():
    """Ratio 5, advantage -1: with verl's clip_ratio_c = 3 the loss is 3 and its gradient
    0 (Ye et al. 2020); without the dual clip, loss 5 and gradient 5."""
    logp, old, adv = jnp.log(jnp.array([5.0])), jnp.zeros(1), jnp.array([-1.0])

    def loss(x, c):
        return rl.clipped_surrogate(x, old, adv, clip_ratio_c=c).loss.sum()

    np.testing.assert_allclose(float(loss(logp, 3.0)), 3.0, rtol=1e-6)
    assert float(jax.grad(loss)(logp, 3.0)[0]) == 0.0
    np.testing.assert_allclose(float(loss(logp, None)), 5.0, rtol=1e-6)
    np.testing.assert_allclose(float(jax.grad(loss)(logp, None)[0]), 5.0, rtol=1e-6)
    # Positive advantages and ratios under c are untouched.
    logp2, old2, adv2 = random_rollout(21)[0], random_rollout(21)[1], random_rollout(21)[3]
    plain = rl.clipped_surrogate(logp2, old2, adv2)
    dual = rl.clipped_surrogate(logp2, old2, adv2, clip_ratio_c=3.0)
    np.testing.assert_array_equal(np.asarray(plain.loss), np.asarray(dual.loss))
    assert not np.asarray(dual.dual_clipped).any()
    _, metrics = rl.grpo_loss(logp, old, adv, jnp.ones(1, bool), clip_ratio_c=3.0)
    assert float(metrics.dual_clip_fraction) == 1.0
    with pytest.raises(ValueError, match="`clip_ratio_c` must be greater than 1"):
        rl.clipped_surrogate(logp, old, adv, clip_ratio_c=1.0)


def test_flat_rewards_with_group_size_are_normalised_per_group():
    """Peers pass [num_groups * G] rewards: two uniform groups get zeros (treated as one
    group of four they got +-0.866)."""
    flat = jnp.array([1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(rl.group_advantages(flat, group_size=2)), 0)
    assert np.all(np.asarray(rl.group_advantages(flat)) != 0)  # one group, documented
    rewards = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)
    for scale in ("group", "batch", "none"):
        np.testing.assert_array_equal(
            np.asarray(rl.group_advantages(rewards.reshape(-1), group_size=4,
                                           scale_rewards=scale)).reshape(6, 4),
            np.asarray(rl.group_advantages(rewards, scale_rewards=scale)))
    for bad in (3, 1, 5):
        with pytest.raises(ValueError, match="`group_size`"):
            rl.group_advantages(jnp.zeros(8), group_size=bad)
    with pytest.raises(ValueError, match="`scale_rewards`"):
        rl.group_advantages(jnp.zeros((2, 4)), scale_rewards="std")


def test_batch_scaling_divides_by_the_std_of_all_rewards():
    """TRL's scale_rewards="batch": group-centred rewards over the batch's reward std."""
    rewards = np.random.default_rng(4).normal(0, 3, (5, 8)).astype(np.float32)
    r = rewards.astype(np.float64)
    want = (r - r.mean(-1, keepdims=True)) / (r.std(ddof=1) + 1e-4)
    got = rl.group_advantages(rewards, scale_rewards="batch", eps=1e-4)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


MODES_WITH_COUNT = ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean",
                    "seq-mean-token-sum-norm"]


@pytest.mark.parametrize("mode", MODES_WITH_COUNT)
def test_micro_batches_with_the_global_count_add_up_to_the_full_batch(mode):
    """Gradient accumulation: split [8, 6] into micro-batches of 3, 3 and 2 rows; each
    divides by the whole batch's count; the sum of their losses and gradients equals the
    full batch's to 1e-6. Plain micro-batch means do not (the counts differ)."""
    logp, old, ref, adv, mask = random_rollout(31, shape=(8, 6))
    mask[2] = False  # an empty row: not a sequence of the seq-mean modes
    per_row = mode.startswith("seq-")
    count = float(mask.any(-1).sum()) if per_row else float(mask.sum())
    kwargs = dict(ref_logprobs=ref, kl_coef=0.05, aggregation=mode)

    def loss(x, rows, global_count=None):
        return rl.grpo_loss(x, old[rows], adv[rows], mask[rows], **kwargs | {
            "ref_logprobs": ref[rows]}, global_count=global_count)[0]

    full_rows = slice(0, 8)
    full, full_grad = jax.value_and_grad(loss)(logp, full_rows)
    parts = [slice(0, 3), slice(3, 6), slice(6, 8)]
    values, grads = zip(*(jax.value_and_grad(loss)(logp[rows], rows, count) for rows in parts),
                        strict=True)
    np.testing.assert_allclose(sum(float(v) for v in values), float(full), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.concatenate(grads), np.asarray(full_grad), rtol=1e-6,
                               atol=1e-8)
    local_mean = np.mean([float(loss(logp[rows], rows)) for rows in parts])
    assert abs(local_mean - float(full)) > 1e-4
    values = jnp.asarray(np.random.default_rng(5).normal(size=(8, 6)), jnp.float32)
    direct = rl.aggregate(values, mask, mode=mode)
    summed = sum(rl.aggregate(values[rows], mask[rows], mode=mode, global_count=count)
                 for rows in parts)
    np.testing.assert_allclose(float(summed), float(direct), rtol=1e-6)


def test_global_count_errors():
    v, m = jnp.ones((2, 3)), jnp.ones((2, 3), bool)
    with pytest.raises(ValueError, match="`global_count` has no meaning"):
        rl.aggregate(v, m, mode="token-sum", global_count=4)
    with pytest.raises(ValueError, match="`global_count` must be positive"):
        rl.aggregate(v, m, global_count=0)
    with pytest.raises(ValueError, match="`global_count` must be a scalar"):
        rl.aggregate(v, m, global_count=jnp.ones(2))


def test_kl_metric_is_reported_when_the_kl_is_not_optimised():
    """kl_coef = 0 with ref_logprobs: the metric is the true mean k3 (it read 0.0)."""
    logp, old, ref, adv, mask = random_rollout(6)
    ref = ref - 1.0
    loss0, metrics = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref)
    lr = ref.astype(np.float64) - logp
    want = (np.expm1(lr) - lr)[mask].mean()
    assert want > 0.1
    np.testing.assert_allclose(float(metrics.kl), want, rtol=1e-5)
    no_ref, _ = rl.grpo_loss(logp, old, adv, mask)
    assert float(loss0) == float(no_ref)  # logged, not optimised


def test_on_policy_old_logprobs_default_to_the_detached_logprobs():
    logp, _, ref, adv, mask = random_rollout(7)

    def loss(x, old):
        return rl.grpo_loss(x, old, adv, mask, ref_logprobs=ref, kl_coef=0.1)[0]

    on_policy = jax.value_and_grad(lambda x: loss(x, None))(logp)
    detached = jax.value_and_grad(lambda x: loss(x, jax.lax.stop_gradient(x)))(logp)
    np.testing.assert_allclose(float(on_policy[0]), float(detached[0]), rtol=1e-7)
    np.testing.assert_allclose(np.asarray(on_policy[1]), np.asarray(detached[1]), rtol=1e-7)
    # Ratio 1: the policy gradient is -A / count on each valid token.
    _, metrics = rl.grpo_loss(logp, None, adv, mask)
    assert float(metrics.ratio_min) == float(metrics.ratio_max) == 1.0


def test_metrics_match_numpy():
    logp, old, _, adv, mask = random_rollout(8)
    # Ratios 0.5 and 1.6 on alternate tokens: clipped at both ends for either sign of A.
    logp = old + np.log(np.where(np.arange(6) % 2, 1.6, 0.5)).astype(np.float32)
    _, metrics = rl.grpo_loss(logp, old, adv, mask, clip_eps=0.2, clip_eps_high=0.28)
    adv_tok = np.broadcast_to(adv[:, None], logp.shape)
    loss, ratio, clipped = numpy_surrogate(logp, old, adv_tok, 0.2, 0.28)
    low = (ratio < 0.8) & (adv_tok < 0)
    high = (ratio > 1.28) & (adv_tok > 0)
    assert low[mask].any() and high[mask].any()
    np.testing.assert_allclose(float(metrics.clip_fraction_low), low[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(float(metrics.clip_fraction_high), high[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(float(metrics.ratio_min), ratio[mask].min(), rtol=1e-6)
    np.testing.assert_allclose(float(metrics.ratio_max), ratio[mask].max(), rtol=1e-6)
    np.testing.assert_allclose(float(metrics.ppo_kl), (old - logp.astype(np.float64))[mask].mean(),
                               rtol=1e-5)


def test_peer_names_mean_what_the_peers_mean():
    """verl's/tunix's estimator names and TRL's/tunix's aggregation names (vocabulary);
    names that differ between peers are refused with an explanation."""
    logp, old, ref, adv, mask = random_rollout(9)

    def kl_values(estimator, gradient="natural"):
        fn = lambda x: rl.token_kl(x, ref, estimator=estimator, gradient=gradient, mask=mask)
        return fn(logp), jax.grad(lambda x: fn(x).sum())(logp)

    for alias, name in (("kl", "k1"), ("mse", "k2"), ("mse_kl", "k2"), ("low_var_kl", "k3")):
        for got, want in zip(kl_values(alias), kl_values(name), strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for got, want in zip(kl_values("k3+"), kl_values("k3", "straight_through"), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ValueError, match="rl.full_kl"):
        rl.token_kl(logp, ref, estimator="full")
    with pytest.raises(ValueError, match="conflicts with `gradient`"):
        rl.token_kl(logp, ref, estimator="k3+", gradient="importance_weighted",
                    old_logprobs=old)
    config = rl.KLConfig("low_var_kl+")
    a = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1, kl=config)[0]
    b = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1,
                     kl=rl.KLConfig("k3", gradient="straight_through"))[0]
    assert float(a) == float(b)

    values = jnp.asarray(np.random.default_rng(10).normal(size=mask.shape), jnp.float32)
    for alias, mode in (("grpo", "seq-mean-token-mean"), ("bnpo", "token-mean"),
                        ("dapo", "token-mean"), ("dr_grpo", "seq-mean-token-sum-norm"),
                        ("sequence-mean-token-scale", "seq-mean-token-sum-norm")):
        assert float(rl.aggregate(values, mask, mode=alias)) == float(
            rl.aggregate(values, mask, mode=mode))
    with pytest.raises(ValueError, match="tunix's 'sequence-mean-token-sum-norm'"):
        rl.aggregate(values, mask, mode="sequence-mean-token-sum-norm")
    with pytest.raises(ValueError, match="Unknown `mode`"):
        rl.grpo_loss(logp, old, adv, mask, aggregation="mean")


def test_sequence_level_importance_ratio_is_gspo():
    """TRL's importance_sampling_level="sequence" (GSPO): s_i = exp(mean_t (logp - old))
    over valid tokens; loss -min(s_i A_i, clip(s_i) A_i) on each valid token; the gradient
    of an unclipped sequence is -A_i s_i / n_i per valid token (token-mean: / count)."""
    logp, old, _, adv, mask = random_rollout(13)
    loss_fn = lambda x: rl.grpo_loss(x, old, adv, mask, importance_sampling_level="sequence")[0]
    loss, grad = jax.value_and_grad(loss_fn)(logp)
    lr = np.where(mask, logp.astype(np.float64) - old, 0)
    n = mask.sum(-1)
    s = np.exp(lr.sum(-1) / np.maximum(n, 1))
    per_seq = -np.minimum(s * adv, np.clip(s, 0.8, 1.2) * adv)
    per_token = np.where(mask, per_seq[:, None], 0)
    np.testing.assert_allclose(float(loss), per_token.sum() / mask.sum(), rtol=1e-5)
    clipped = np.clip(s, 0.8, 1.2) * adv < s * adv
    coefficient = np.where(clipped, 0, -adv * s / np.maximum(n, 1))
    want = np.where(mask, (coefficient * n)[:, None], 0) / mask.sum()
    np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="`importance_sampling_level`"):
        rl.grpo_loss(logp, old, adv, mask, importance_sampling_level="seq")


@pytest.mark.parametrize("name", ["verl", "trl", "tunix"])
def test_presets_are_grpo_loss_options(name):
    """Each preset runs through grpo_loss and group_advantages and equals the same options
    spelled out; verl's carries the dual clip (ratio 5, advantage -1: loss 3)."""
    preset = getattr(rl.presets, name)()
    logp, old, ref, _, mask = random_rollout(14, shape=(8, 6))
    rewards = np.random.default_rng(15).normal(size=8).astype(np.float32)
    adv = rl.group_advantages(rewards, group_size=4, **preset.advantage_kwargs())
    loss, metrics = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, **preset.loss_kwargs())
    explicit, _ = rl.grpo_loss(
        logp, old, adv, mask, ref_logprobs=ref, kl_coef=preset.kl_coef, kl=preset.kl,
        clip_eps=preset.clip_eps, clip_eps_high=preset.clip_eps_high,
        clip_ratio_c=preset.clip_ratio_c, log_ratio_clip=preset.log_ratio_clip,
        aggregation=preset.aggregation)
    assert float(loss) == float(explicit) and np.isfinite(float(metrics.kl))
    assert preset.source.split()[0] in ("verl", "trl", "google-tunix")
    dual, _ = rl.grpo_loss(jnp.log(jnp.array([[5.0]])), jnp.zeros((1, 1)), jnp.array([-1.0]),
                           jnp.ones((1, 1), bool), **preset._replace(kl_coef=0.0).loss_kwargs())
    np.testing.assert_allclose(float(dual), 3.0 if name == "verl" else 5.0, rtol=1e-6)


# ---- the exact full-vocabulary KL as the KL term; the entropy metric -----------------


def _rollout_with_logits(seed, shape=(3, 5), vocab=7, dtype=np.float32):
    """Logits of a policy and a reference, tokens sampled from the policy, a ragged mask."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (*shape, vocab)).astype(dtype)
    ref_logits = (logits + rng.normal(0, 0.7, logits.shape)).astype(dtype)
    tokens = rng.integers(0, vocab, shape)
    adv = rng.normal(0, 1, shape[:-1]).astype(np.float32)
    mask = np.arange(shape[-1]) < rng.integers(1, shape[-1] + 1, shape[:-1])[..., None]
    return logits, ref_logits, tokens, adv, mask


def _log_softmax64(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_full_kl_term_is_the_exact_vocabulary_kl_in_value_and_gradient():
    logits, ref_logits, tokens, adv, mask = _rollout_with_logits(0)
    beta = 0.3

    def loss_fn(z):
        logp = rl.token_logprobs(z, jnp.asarray(tokens))
        return rl.grpo_loss(logp, None, adv, mask, logits=z, ref_logits=ref_logits,
                            kl_coef=beta, kl=rl.KLConfig("full"))

    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(logits))

    # Independent float64 reference: on-policy surrogate (ratio 1, loss -A per token) plus
    # beta * sum_v p (log p - log r), token mean over the mask, differentiated by hand:
    # d/dz_v [-A log p_y] = -A ([v = y] - p_v); d KL / dz_v = p_v (log p_v - log r_v - KL).
    log_p, log_r = _log_softmax64(logits), _log_softmax64(ref_logits)
    p = np.exp(log_p)
    kl = (p * (log_p - log_r)).sum(-1)
    adv_tok = np.broadcast_to(adv[:, None].astype(np.float64), mask.shape)
    n = mask.sum()
    np.testing.assert_allclose(float(loss), ((-adv_tok + beta * kl) * mask).sum() / n,
                               rtol=1e-5)
    one_hot = np.eye(logits.shape[-1])[tokens]
    expected = (-adv_tok[..., None] * (one_hot - p)
                + beta * p * (log_p - log_r - kl[..., None])) * mask[..., None] / n
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(metrics.kl), (kl * mask).sum() / n, rtol=1e-5)
    entropy = -(p * log_p).sum(-1)
    np.testing.assert_allclose(float(metrics.entropy), (entropy * mask).sum() / n, rtol=1e-5)


def test_full_kl_term_under_jit_vmap_bf16_and_garbage_in_masked_rows():
    logits, ref_logits, tokens, adv, mask = _rollout_with_logits(1, shape=(2, 3, 4))
    # Masked rows of garbage: an infinite KL (the reference gives the tokens no mass)
    # and huge logits; neither may reach the loss or the gradient.
    ref_logits[~mask] = -np.inf
    logits[~mask] = 1e4 * np.sign(logits[~mask])
    kl = rl.KLConfig("full")

    def loss_fn(z, w, m):
        logp = rl.token_logprobs(z, jnp.asarray(tokens[0]))
        return rl.grpo_loss(logp, None, adv[0], m, logits=z, ref_logits=w, kl_coef=0.1,
                            kl=kl)[0]

    z, w, m = (jnp.asarray(x) for x in (logits, ref_logits, mask))
    grads = jax.jit(jax.vmap(jax.grad(loss_fn)))(z, w, m)
    assert np.isfinite(np.asarray(grads)).all()
    np.testing.assert_array_equal(np.asarray(grads)[~mask], 0)
    single = jax.grad(loss_fn)(z[1], w[1], m[1])
    np.testing.assert_allclose(np.asarray(grads[1]), np.asarray(single), rtol=1e-6, atol=1e-8)

    bf16 = [x.astype(jnp.bfloat16) for x in (z, w)]
    loss_bf16 = loss_fn(bf16[0][1], bf16[1][1], m[1])
    loss_f32 = loss_fn(bf16[0][1].astype(jnp.float32), bf16[1][1].astype(jnp.float32), m[1])
    assert loss_bf16.dtype == jnp.float32
    np.testing.assert_allclose(float(loss_bf16), float(loss_f32), rtol=1e-6)


def test_entropy_metric_without_logits_is_the_sampled_estimate():
    logp, old, ref, adv, mask = random_rollout(3)
    _, metrics = rl.grpo_loss(logp, old, adv, mask, ref_logprobs=ref, kl_coef=0.1)
    expected = -(logp.astype(np.float64) * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(metrics.entropy), expected, rtol=1e-6)


def test_full_kl_term_errors_name_the_argument():
    logits, ref_logits, tokens, adv, mask = _rollout_with_logits(2)
    logp = rl.token_logprobs(logits, tokens)
    full = rl.KLConfig("full")
    with pytest.raises(ValueError, match="`ref_logits`.*required"):
        rl.grpo_loss(logp, None, adv, mask, logits=logits, kl_coef=0.1, kl=full)
    with pytest.raises(ValueError, match="`logits`.*required"):
        rl.grpo_loss(logp, None, adv, mask, ref_logits=ref_logits, kl_coef=0.1, kl=full)
    with pytest.raises(ValueError, match="`ref_logprobs`.*not used"):
        rl.grpo_loss(logp, None, adv, mask, logits=logits, ref_logits=ref_logits,
                     ref_logprobs=logp, kl_coef=0.1, kl=full)
    with pytest.raises(ValueError, match="`ref_logits`.*only"):
        rl.grpo_loss(logp, None, adv, mask, logits=logits, ref_logits=ref_logits,
                     ref_logprobs=logp, kl_coef=0.1)
    with pytest.raises(ValueError, match="`logits`.*shape"):
        rl.grpo_loss(logp, None, adv, mask, logits=logits[:, :-1], ref_logits=ref_logits,
                     kl_coef=0.1, kl=full)
    with pytest.raises(ValueError, match="`ref_logits`.*shape"):
        rl.grpo_loss(logp, None, adv, mask, logits=logits, ref_logits=ref_logits[..., :-1],
                     kl_coef=0.1, kl=full)
    with pytest.raises(TypeError, match="`logits`"):
        rl.grpo_loss(logp, None, adv, mask, logits=tokens, ref_logits=ref_logits,
                     kl_coef=0.1, kl=full)
    for bad, field in [(full._replace(gradient="straight_through"), "kl.gradient"),
                       (full._replace(value_clip=10.0), "kl.value_clip"),
                       (full._replace(log_ratio_clip=5.0), "kl.log_ratio_clip")]:
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            rl.grpo_loss(logp, None, adv, mask, logits=logits, ref_logits=ref_logits,
                         kl_coef=0.1, kl=bad)
    # Per-token estimators cannot give the exact KL: the message says what can.
    with pytest.raises(ValueError, match="grpo_loss"):
        rl.token_kl(logp, logp, estimator="full")
    # kl_coef 0 with the full KL: no logits needed, and the KL metric reads 0.
    _, metrics = rl.grpo_loss(logp, None, adv, mask, kl_coef=0.0, kl=full)
    assert float(metrics.kl) == 0.0


def test_full_kl_metric_is_reported_when_kl_coef_is_zero():
    logits, ref_logits, tokens, adv, mask = _rollout_with_logits(4)
    logp = rl.token_logprobs(logits, tokens)
    _, metrics = rl.grpo_loss(logp, None, adv, mask, logits=logits, ref_logits=ref_logits,
                              kl=rl.KLConfig("full"))
    expected = float(rl.full_kl(logits, ref_logits, mask=mask).sum()) / mask.sum()
    np.testing.assert_allclose(float(metrics.kl), expected, rtol=1e-6)
    assert float(metrics.kl) > 0.05
