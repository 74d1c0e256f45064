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
