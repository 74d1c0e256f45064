"""jaxkl: estimating, fitting and regularising with KL divergences from samples, in JAX.

The public API is re-exported here; see DESIGN.md and the README for the science.
"""

from jaxkl.estimators import (
    F_DIVERGENCES,
    control_variate,
    csiszar,
    forward_kl,
    k1,
    k2,
    k3,
    optimal_cv_lambda,
)
from jaxkl import stats
from jaxkl.montecarlo import estimate
from jaxkl.stats import Interval, Stats, describe, relative_error

__version__ = "0.1.0"

__all__ = [
    "F_DIVERGENCES",
    "Interval",
    "Stats",
    "describe",
    "estimate",
    "relative_error",
    "stats",
    "control_variate",
    "csiszar",
    "forward_kl",
    "k1",
    "k2",
    "k3",
    "optimal_cv_lambda",
]
