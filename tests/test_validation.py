"""Input-validation audit of the public API (issue 9).

One row per (function, bad input): the call must raise TypeError or ValueError whose
message names the offending argument (in backticks, the convention of
``jaxkl._validation``) — never return a silent NaN or a shape-broadcast surprise.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from jaxkl import families, rl, sharding

F = jnp.ones((2, 3))
KEY = jax.random.key(0)
N01 = distrax.Normal(0.0, 1.0)
LOGITS = jnp.zeros((2, 5))

CASES = {
    # estimators
    "k1 int": (lambda: jaxkl.k1(jnp.arange(3)), "log_ratio"),
    "k2 bool": (lambda: jaxkl.k2(jnp.array([True])), "log_ratio"),
    "k3 int list": (lambda: jaxkl.k3(np.array([1, 2])), "log_ratio"),
    "forward_kl str": (lambda: jaxkl.forward_kl("x"), "log_ratio"),
    "control_variate lam shape": (lambda: jaxkl.control_variate(F, jnp.ones(3)), "lam"),
    "optimal_cv_lambda int": (lambda: jaxkl.optimal_cv_lambda(jnp.arange(4)), "log_ratio"),
    "csiszar divergence": (lambda: jaxkl.csiszar(F, divergence="hellinger"), "divergence"),
    "csiszar alpha missing": (lambda: jaxkl.csiszar(F, divergence="amari_alpha"), "alpha"),
    # Monte Carlo and statistics
    "estimate num_samples": (lambda: jaxkl.estimate(N01, N01, key=KEY, num_samples=0),
                             "num_samples"),
    "estimate estimator": (lambda: jaxkl.estimate(N01, N01, key=KEY, num_samples=10,
                                                  estimators=("k9",)), "estimator"),
    "estimate q": (lambda: jaxkl.estimate(object(), N01, key=KEY, num_samples=10), "q"),
    "estimate p": (lambda: jaxkl.estimate(N01, 3.0, key=KEY, num_samples=10), "p"),
    "estimate key": (lambda: jaxkl.estimate(N01, N01, key=0, num_samples=10), "key"),
    "estimate chunk_size": (lambda: jaxkl.estimate(N01, N01, key=KEY, num_samples=10,
                                                   chunk_size=-1), "chunk_size"),
    "describe int": (lambda: jaxkl.describe(jnp.arange(3)), "x"),
    "relative_error level": (
        lambda: jaxkl.relative_error(jaxkl.describe(jnp.ones(3)), 1.0, level=1.5), "level"),
    # ground truth and mixtures
    "exact_kl unregistered": (
        lambda: jaxkl.exact_kl(N01, jaxkl.gaussian_mixture_1d([0.0, 1.0], [1.0, 1.0])), "Normal"),
    "reference_kl method": (lambda: jaxkl.reference_kl(N01, N01, method="magic"), "method"),
    "mixture weights negative": (
        lambda: jaxkl.gaussian_mixture_1d([0.0, 1.0], [1.0, 1.0], weights=[1.5, -0.5]),
        "weights"),
    "mixture weights sum": (
        lambda: jaxkl.gaussian_mixture_1d([0.0, 1.0], [1.0, 1.0], weights=[0.5, 0.6]),
        "weights"),
    "mixture scales": (lambda: jaxkl.gaussian_mixture_1d([0.0, 1.0], [1.0, -1.0]), "scales"),
    "mixture shapes": (lambda: jaxkl.gaussian_mixture_1d([0.0, 1.0], [1.0, 1.0, 1.0]), "scales"),
    "mixture covariance": (
        lambda: jaxkl.gaussian_mixture_full(jnp.zeros((2, 2)),
                                            jnp.array([[[1.0, 2.0], [2.0, 1.0]]] * 2)),
        "covariances"),
    # fitting
    "fit divergence": (lambda: jaxkl.fit(N01, families.gaussian(), divergence="kl", key=KEY,
                                         num_steps=5, num_samples=4), "divergence"),
    "fit num_steps": (lambda: jaxkl.fit(N01, families.gaussian(), divergence="reverse_kl",
                                        key=KEY, num_steps=0, num_samples=4), "num_steps"),
    "fit dimension": (
        lambda: jaxkl.fit(N01, families.diagonal_gaussian(2), divergence="reverse_kl", key=KEY,
                          num_steps=5, num_samples=4), "family"),
    # rl
    "token_kl int": (lambda: rl.token_kl(jnp.arange(3), F), "logprobs"),
    "token_kl shape": (lambda: rl.token_kl(F, jnp.ones((3, 2))), "ref_logprobs"),
    "token_kl estimator": (lambda: rl.token_kl(F, F, estimator="k4"), "estimator"),
    "token_kl gradient": (lambda: rl.token_kl(F, F, gradient="magic"), "gradient"),
    "token_kl mask": (lambda: rl.token_kl(F, F, mask=jnp.ones((3, 2), bool)), "mask"),
    "aggregate mode": (lambda: rl.aggregate(F, jnp.ones((2, 3)), mode="mean"), "mode"),
    "aggregate mask": (lambda: rl.aggregate(F, jnp.ones((2, 2))), "mask"),
    "full_kl shape": (lambda: rl.full_kl(LOGITS, jnp.zeros((2, 4))), "ref_logits"),
    "full_kl int": (lambda: rl.full_kl(jnp.zeros((2, 5), jnp.int32), LOGITS), "logits"),
    "full_kl mask": (lambda: rl.full_kl(LOGITS, LOGITS, mask=jnp.ones((3,), bool)), "mask"),
    "group_advantages int": (lambda: rl.group_advantages(jnp.arange(4)), "rewards"),
    "kl_penalized_rewards scores": (
        lambda: rl.kl_penalized_rewards(jnp.ones(3), F, F, jnp.ones((2, 3), bool), kl_coef=0.1),
        "scores"),
    # sharding
    "estimate_sharded mesh": (
        lambda: sharding.estimate_sharded(N01, N01, key=KEY, num_samples=10, mesh="mesh"), "mesh"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_raises_an_error_naming_the_argument(name):
    call, argument = CASES[name]
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert argument in str(info.value), f"{name}: message does not name {argument!r}: {info.value}"


# ----------------------------------------------------------------------------------------
# Issue 15, item 13: None for an array argument, sizes, empty axes, scalars that are not.

A = jnp.ones((2, 3))
MASK = jnp.ones((2, 3), bool)
SEQ = jnp.ones(2)

NONE_CASES = {
    "k1": (lambda: jaxkl.k1(None), "log_ratio"),
    "k2": (lambda: jaxkl.k2(None), "log_ratio"),
    "k3": (lambda: jaxkl.k3(None), "log_ratio"),
    "forward_kl": (lambda: jaxkl.forward_kl(None), "log_ratio"),
    "csiszar": (lambda: jaxkl.csiszar(None), "log_ratio"),
    "control_variate log_ratio": (lambda: jaxkl.control_variate(None, 1.0), "log_ratio"),
    "control_variate lam": (lambda: jaxkl.control_variate(A, None), "lam"),
    "optimal_cv_lambda": (lambda: jaxkl.optimal_cv_lambda(None), "log_ratio"),
    "describe": (lambda: jaxkl.describe(None), "x"),
    "relative_error stats": (lambda: jaxkl.relative_error(None, 1.0), "stats"),
    "relative_error true_value": (
        lambda: jaxkl.relative_error(jaxkl.describe(jnp.ones(3)), None), "true_value"),
    "stats.from_samples": (lambda: jaxkl.stats.from_samples(None), "x"),
    "stats.from_features": (lambda: jaxkl.stats.from_features(None), "features"),
    "gaussian_mixture_1d means": (lambda: jaxkl.gaussian_mixture_1d(None, [1.0]), "means"),
    "gaussian_mixture_1d scales": (lambda: jaxkl.gaussian_mixture_1d([0.0], None), "scales"),
    "gaussian_mixture_diag": (lambda: jaxkl.gaussian_mixture_diag([[0.0]], None), "scales"),
    "gaussian_mixture_full": (lambda: jaxkl.gaussian_mixture_full([[0.0]], None),
                              "covariances"),
    "mixture_moments": (lambda: jaxkl.mixture_moments(None), "d"),
    "mixture_kl_approximations": (lambda: jaxkl.mixture_kl_approximations(N01, None), "p"),
    "exact_kl": (lambda: jaxkl.exact_kl(None, N01), "q"),
    "reference_kl": (lambda: jaxkl.reference_kl(N01, None), "p"),
    "estimate key": (lambda: jaxkl.estimate(N01, N01, key=None, num_samples=10), "key"),
    "token_kl": (lambda: rl.token_kl(A, None), "ref_logprobs"),
    "kl_penalized_rewards scores": (
        lambda: rl.kl_penalized_rewards(None, A, A, MASK, kl_coef=0.1), "scores"),
    "kl_penalized_rewards mask": (
        lambda: rl.kl_penalized_rewards(SEQ, A, A, None, kl_coef=0.1), "mask"),
    "aggregate values": (lambda: rl.aggregate(None, MASK), "values"),
    "aggregate mask": (lambda: rl.aggregate(A, None), "mask"),
    "full_kl": (lambda: rl.full_kl(None, A), "logits"),
    "group_advantages": (lambda: rl.group_advantages(None), "rewards"),
    "clipped_surrogate": (lambda: rl.clipped_surrogate(A, A, None), "advantages"),
    "grpo_loss logprobs": (lambda: rl.grpo_loss(None, A, SEQ, MASK), "logprobs"),
    "grpo_loss mask": (lambda: rl.grpo_loss(A, A, SEQ, None), "mask"),
    "audit_categorical": (lambda: rl.audit_categorical(None, LOGITS), "logits"),
    "encode loc": (lambda: families.gaussian().encode(loc=None, scale=1.0), "loc"),
    "encode scale": (lambda: families.gaussian().encode(loc=0.0, scale=None), "scale"),
    "encode weights": (
        lambda: families.gaussian_mixture(2).encode(weights=None, locs=jnp.zeros(2),
                                                    scales=jnp.ones(2)), "weights"),
}

SIZE_CASES = {
    "fit num_steps 2**63": (
        lambda: jaxkl.fit(N01, families.gaussian(), divergence="reverse_kl", key=KEY,
                          num_steps=2**63, num_samples=4), "num_steps"),
    "fit num_samples 2**63": (
        lambda: jaxkl.fit(N01, families.gaussian(), divergence="reverse_kl", key=KEY,
                          num_steps=5, num_samples=2**63), "num_samples"),
    "fit num_samples 2**40": (
        lambda: jaxkl.fit(N01, families.gaussian(), divergence="reverse_kl", key=KEY,
                          num_steps=5, num_samples=2**40), "num_samples"),
    "mixture fit num_samples": (  # per component: 2**29 x 4 components x 2 dims
        lambda: jaxkl.fitting.make_loss(
            jaxkl.gaussian_mixture_diag(jnp.zeros((1, 2)), jnp.ones((1, 2))),
            families.gaussian_mixture(4, 2), divergence="reverse_kl",
            num_samples=2**29), "num_samples"),
    "full_kl empty vocabulary": (lambda: rl.full_kl(jnp.zeros((2, 0)), jnp.zeros((2, 0))),
                                 "logits"),
    "controller vector KL": (
        lambda: rl.adaptive_kl_controller(0.1, target=1.0, horizon=10).update(
            rl.KLControllerState(jnp.float32(0.1)), jnp.ones(3)), "current_kl"),
    "token_kl vector log_ratio_clip": (
        lambda: rl.token_kl(A, A, log_ratio_clip=jnp.ones(2)), "log_ratio_clip"),
    "token_kl traced log_ratio_clip": (
        lambda: jax.jit(lambda c: rl.token_kl(A, A, log_ratio_clip=c))(20.0),
        "log_ratio_clip"),
    "grpo_loss traced kl.log_ratio_clip": (
        lambda: jax.jit(lambda c: rl.grpo_loss(A, A, SEQ, MASK, ref_logprobs=A, kl_coef=0.1,
                                               kl=rl.KLConfig(log_ratio_clip=c)))(20.0),
        "kl.log_ratio_clip"),
    "describe scalar": (lambda: jaxkl.describe(1.0), "x"),
    "describe axis": (lambda: jaxkl.describe(jnp.ones(3), axis=1), "axis"),
    "grad of estimate": (
        lambda: jax.grad(lambda m: jaxkl.estimate(distrax.Normal(m, 1.0), N01, key=KEY,
                                                  num_samples=100)["k1"].mean)(0.0),
        "fitting.make_loss"),
}


@pytest.mark.parametrize("name", list(NONE_CASES) + list(SIZE_CASES))
def test_issue15_inputs_raise_naming_the_argument(name):
    call, argument = {**NONE_CASES, **SIZE_CASES}[name]
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert argument in str(info.value), f"{name}: message does not name {argument!r}: {info.value}"
    assert "None is not a valid value" not in str(info.value)


def test_grad_of_estimate_under_jit_and_vmap_still_runs():
    # The guard only fires under differentiation.
    means = jax.vmap(lambda m: jaxkl.estimate(distrax.Normal(m, 1.0), N01, key=KEY,
                                               num_samples=1000)["k1"].mean)(jnp.zeros(2))
    assert means.shape == (2,)
    with pytest.raises(TypeError, match="not differentiable"):
        jax.jacfwd(lambda m: jaxkl.estimate(distrax.Normal(m, 1.0), N01, key=KEY,
                                             num_samples=100)["k1"].mean)(0.0)


def test_zero_length_sequences_get_empty_rewards():
    # Defined result (documented): no token, so no reward to place the score on.
    rewards = rl.kl_penalized_rewards(jnp.ones(2), jnp.zeros((2, 0)), jnp.zeros((2, 0)),
                                      jnp.zeros((2, 0), bool), kl_coef=0.1)
    assert rewards.shape == (2, 0) and rewards.dtype == jnp.float32


@pytest.mark.parametrize("zero", [0, 0.0, np.float32(0.0), jnp.array(0.0), jnp.float32(0)])
def test_concrete_zero_kl_coef_drops_the_kl_term(zero):
    # Before: a 0-d array 0 counted as non-zero and demanded ref_logprobs.
    loss, metrics = rl.grpo_loss(A, A, SEQ, MASK, kl_coef=zero)
    reference, _ = rl.grpo_loss(A, A, SEQ, MASK)
    assert float(loss) == float(reference) and float(metrics.kl) == 0.0
    with pytest.raises(ValueError, match="`ref_logprobs`"):
        rl.grpo_loss(A, A, SEQ, MASK, kl_coef=jnp.array(0.1))
    # A traced coefficient keeps the KL term (its value is unknown at trace time).
    traced = jax.jit(lambda c: rl.grpo_loss(A, A, SEQ, MASK, ref_logprobs=A - 0.5,
                                            kl_coef=c)[1].kl)(jnp.float32(0.0))
    assert float(traced) > 0
