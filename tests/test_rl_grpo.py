"""GRPO pieces: group advantages, clipped surrogate, grpo_loss, KL controllers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
        np.asarray(rl.group_advantages(rewards, normalize_std=False)), centered, rtol=1e-5,
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
