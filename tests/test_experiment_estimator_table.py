"""The estimator table reproduces Schulman's published numbers within sampling error."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from experiments import estimator_table
from experiments._framework import Progress

# Schulman (2020), "Approximating KL Divergence": std/true and k2's bias/true as published.
PUBLISHED = {
    0.1: {"k1": 20.0, "k2": 1.42, "k3": 1.42, "k2_bias": 0.0025},
    1.0: {"k1": 2.0, "k2": 1.73, "k3": 1.70, "k2_bias": 0.25},
}


@pytest.mark.parametrize("mu", [0.1, 1.0])
def test_closed_forms_equal_published_table(mu):
    closed = estimator_table.closed_form(mu)
    for est in ("k1", "k2", "k3"):
        # The blog rounds to 2-3 significant digits.
        assert closed[est]["std_rel"] == pytest.approx(PUBLISHED[mu][est], rel=0.006)
    assert closed["k2"]["bias_rel"] == pytest.approx(PUBLISHED[mu]["k2_bias"], rel=1e-12)


def _std_rel_stderr(mu, est, n):
    """Standard error of a sample std, relative: sqrt((kurtosis - 1) / (4 n)), with the
    kurtosis of the estimator measured on an independent NumPy sample."""
    x = np.random.default_rng(1).normal(size=2_000_000)
    l = mu * x - mu * mu / 2
    k = {"k1": -l, "k2": l * l / 2, "k3": np.expm1(l) - l}[est]
    kurt = scipy.stats.kurtosis(k, fisher=False)
    return np.sqrt((kurt - 1) / (4 * n))


def test_table_reproduces_closed_forms_within_sampling_error():
    result = estimator_table.run({"seed": 0, "num_samples": 4_000_000}, Progress("t", False))
    rows = {r["case"]: r for r in result["rows"]}
    for case, mu in (("schulman_0.1", 0.1), ("schulman_1", 1.0)):
        for est in ("k1", "k2", "k3"):
            e = rows[case]["estimators"][est]
            rel_se = _std_rel_stderr(mu, est, rows[case]["num_samples"])
            assert abs(e["std_rel"] / e["closed_std_rel"] - 1) <= 5 * rel_se, (case, est)
            half_width = (e["bias_rel_high"] - e["bias_rel_low"]) / 2  # 1.96 stderr
            assert abs(e["bias_rel"] - e["closed_bias_rel"]) <= 5 / 1.96 * half_width
    note = rows["note"]
    assert abs(note["fraction_log_q_minus_log_p_negative"] - note["fraction_exact"]) <= (
        5 * note["fraction_stderr"])
    assert note["fraction_exact"] == pytest.approx(0.4801, abs=1e-4)
    assert "k2" in estimator_table.table(result)
    assert jnp.isfinite(jnp.array(note["true_kl"]))
