"""Regression tests for the review of jaxkl.rl and jaxkl.sharding (reviewer: rlshard)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkl import rl

# ---- group_advantages: constant groups


@pytest.mark.parametrize("value", [0.1, 0.2, 0.7, 1 / 3])
@pytest.mark.parametrize("group_size", [3, 7, 16])
def test_constant_group_gets_exactly_zero_advantage(value, group_size):
    """sum/G of G equal float32 rewards need not round back to the reward: the residual
    (~1e-8) divided by the equally tiny std used to give advantages of ~0.1."""
    rewards = jnp.full((2, group_size), value, jnp.float32).at[1, 0].set(value + 1.0)
    for normalize_std in (True, False):
        adv = np.asarray(rl.group_advantages(rewards, normalize_std=normalize_std))
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


def test_normalizer_must_be_a_positive_scalar():
    """An array normalizer used to turn the scalar loss into an array."""
    v, m = jnp.ones((2, 3)), jnp.ones((2, 3))
    mode = "seq-mean-token-sum-norm"
    with pytest.raises(ValueError, match="`normalizer`"):
        rl.aggregate(v, m, mode=mode, normalizer=jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="`normalizer`"):
        rl.aggregate(v, m, mode=mode, normalizer=np.float32(-1.0))
    with pytest.raises(TypeError, match="`normalizer`"):
        rl.aggregate(v, m, mode=mode, normalizer="4")
    assert float(rl.aggregate(v, m, mode=mode, normalizer=np.int64(6))) == 0.5
