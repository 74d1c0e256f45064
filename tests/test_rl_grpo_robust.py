"""The KL controller stays positive and can recover; advantages of any magnitude (issue 15)."""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxkl import rl

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
        centered = np.asarray(rl.group_advantages(rewards, normalize_std=False), np.float64)
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
