"""The estimator sweep reproduces DESIGN.md's closed forms on the location family."""

import distrax
import jax
import numpy as np
import pytest

from experiments import estimator_sweep as sweep


@pytest.mark.parametrize("true_kl", [0.02, 0.5])
def test_location_family_matches_closed_forms(true_kl):
    mu = float(np.sqrt(2 * true_kl))
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(mu, 1.0)
    point = sweep.sweep_point(q, p, true_kl, key=jax.random.key(3), num_samples=2**13,
                              replicates=8)
    closed = sweep.location_closed_form(mu)
    for name in sweep.ESTIMATORS:
        e = point[name]
        expected_mean = true_kl * (1 + closed[name]["bias_rel"])
        # cv*'s lambda is estimated from the same samples: an O(1/n) bias, far below 5 se.
        assert abs(e["mean"] - expected_mean) <= 5 * e["bias_se"], name
        expected_std = true_kl * closed[name]["std_rel"]
        assert abs(e["std"] - expected_std) <= 5 * e["std_se"], name


def test_hill_estimator_recovers_a_pareto_tail_index():
    # log r of a Pareto(alpha) variable is Exponential with rate alpha.
    rng = np.random.default_rng(0)
    alpha = 1.5
    log_ratio = rng.exponential(1 / alpha, size=2**16)
    estimate, se = sweep.hill_tail_index(log_ratio, 256)
    assert abs(estimate - alpha) <= 5 * se
    assert sweep.verdict(1.2, 0.05) == "heavy" and sweep.verdict(3.0, 0.1) == "finite"


def test_family_pairs_hit_their_target_kl():
    targets = np.array([1e-2, 1.0])
    for name in ("location", "scale_narrower", "scale_wider", "bimodal"):
        for target, (_, q, p) in zip(targets, sweep.family_pairs(name, targets), strict=True):
            kl = sweep.reference_kl(q, p).value
            assert abs(kl - target) <= 1e-3 * target, name
