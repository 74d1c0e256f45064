"""reference_kl's Monte Carlo path never reports a sample's error as certainty (issue 15)."""

import math

import jax
import numpy as np
import pytest

import jaxkl
from jaxkl.reference import MIN_MONTE_CARLO_SAMPLES, monte_carlo_kl, reference_kl

# Diagonal mixtures in 3-D: no quadrature; the bounds and Monte Carlo compete.
Q3 = dict(means=np.array([[0.0, 0.0, 0.0], [1.5, -1.0, 0.5]]),
          scales=np.array([[1.0, 0.5, 1.0], [0.7, 1.0, 0.3]]), weights=np.array([0.3, 0.7]))
P3 = dict(means=np.array([[0.5, 0.0, -0.5], [-1.0, 1.0, 1.0]]),
          scales=np.array([[1.2, 1.0, 0.8], [0.5, 0.5, 2.0]]), weights=np.array([0.6, 0.4]))


def _pair():
    return jaxkl.gaussian_mixture_diag(**Q3), jaxkl.gaussian_mixture_diag(**P3)


@pytest.mark.parametrize("num_samples", [1, 2, MIN_MONTE_CARLO_SAMPLES - 1])
def test_too_few_samples_are_refused(num_samples):
    q, p = _pair()
    # Before: num_samples=1 gave a one-sample estimate with error 0.0.
    with pytest.raises(ValueError, match="`num_samples`"):
        reference_kl(q, p, key=jax.random.key(0), num_samples=num_samples)
    with pytest.raises(ValueError, match="`num_samples`"):
        reference_kl(q, p, method="monte_carlo", key=jax.random.key(0),
                     num_samples=num_samples)
    with pytest.raises(ValueError, match="`num_samples`"):
        monte_carlo_kl(q, p, key=jax.random.key(0), num_samples=num_samples)


def test_auto_prefers_the_guaranteed_bounds_unless_monte_carlo_is_tighter():
    q, p = _pair()
    bounds = reference_kl(q, p)  # no key: the bounds' midpoint
    assert bounds.method == "bounds" and 0 < bounds.error < math.inf
    # A large run of k1 (unbiased, finite variance) as the reference value.
    truth = monte_carlo_kl(q, p, key=jax.random.key(1), num_samples=2**22)
    assert abs(truth.value - bounds.value) <= bounds.error  # the bounds are guaranteed
    for num_samples in (MIN_MONTE_CARLO_SAMPLES, 2**20):
        r = reference_kl(q, p, key=jax.random.key(2), num_samples=num_samples)
        assert 0 < r.error <= bounds.error
        if r.method == "monte_carlo":
            mc = monte_carlo_kl(q, p, key=jax.random.key(2), num_samples=num_samples)
            assert r == mc and mc.error < bounds.error
            # Seeded: 5 standard errors of the difference of two independent estimates.
            assert abs(r.value - truth.value) <= 5 * math.hypot(r.error, truth.error)
        else:
            assert r == bounds
    # With 2**20 samples the standard error (~1e-3) is far below the bounds' half-gap.
    assert reference_kl(q, p, key=jax.random.key(2), num_samples=2**20).method == "monte_carlo"


def test_a_sample_without_spread_reports_an_infinite_error():
    q, _ = _pair()
    # q against itself: every log-ratio is exactly 0, so the sample std is 0.
    r = monte_carlo_kl(q, q, key=jax.random.key(0), num_samples=4096)
    assert r.value == 0.0 and r.error == math.inf
    auto = reference_kl(q, q, key=jax.random.key(0), num_samples=4096)
    assert auto.method == "bounds" and auto.error < math.inf
