"""Workloads that deadlocked XLA:CPU on 2 cores through jaxlib's LAPACK kernels.

``python tests/_hang_workloads.py NAME`` runs one of them and prints ``done``; the
stress test (test_hang_stress.py) runs each in a subprocess under a watchdog. They are
the reproducer from the issue that found the deadlock (``estimate`` over a sweep of
full-covariance 2-D mixtures) and its neighbours: ``reference_kl``'s Monte Carlo path and
``fit`` with the full-covariance family, forward and reverse.
"""

import faulthandler
import sys

import jax
import numpy as np

import jaxkl
from jaxkl import families

MEANS = np.array([[-1.0, 0.0], [1.0, 0.5]])
COVARIANCES = np.array([[[0.5, 0.2], [0.2, 0.4]], [[0.3, -0.1], [-0.1, 0.6]]])
WEIGHTS = np.array([0.4, 0.6])
DIRECTION = np.array([1.0, 1.0]) / np.sqrt(2)


def _shifted(t: float):
    return jaxkl.gaussian_mixture_full(MEANS + t * DIRECTION, COVARIANCES, weights=WEIGHTS)


def estimate_sweep() -> None:
    q = _shifted(0.0)
    for i, t in enumerate(np.sqrt(np.geomspace(1e-3, 10, 7))):
        p = _shifted(float(t))
        for n in (2**14, 2**16, 2**18, 2**20):
            r = jaxkl.estimate(q, p, key=jax.random.key(i), num_samples=n,
                               estimators=("k1", "k3"))
            float(r["k3"].std)


def reference_monte_carlo() -> None:
    q = _shifted(0.0)
    for i, t in enumerate((0.3, 1.0, 3.0)):
        for n in (2**16, 2**20):
            float(jaxkl.monte_carlo_kl(q, _shifted(t), key=jax.random.key(i),
                                       num_samples=n).value)


def fit_full_covariance() -> None:
    p = _shifted(1.0)
    family = families.full_covariance_gaussian(2)
    for i, divergence in enumerate(("reverse_kl", "forward_kl", "reverse_kl")):
        result = jaxkl.fit(p, family, divergence=divergence, key=jax.random.key(i),
                           num_steps=300, num_samples=4096)
        float(result.losses[-1])


WORKLOADS = {f.__name__: f for f in (estimate_sweep, reference_monte_carlo,
                                     fit_full_covariance)}

if __name__ == "__main__":
    limit = float(sys.argv[2]) if len(sys.argv) > 2 else 120.0
    faulthandler.dump_traceback_later(limit, exit=True)  # a stall prints stacks, exits 1
    WORKLOADS[sys.argv[1]]()
    print("done")
