"""jaxkl: estimating, fitting and regularising with KL divergences from samples, in JAX.

The public API is re-exported here; docs/design.md has the science, the layers and a
tour of the code, and the README the commands.
"""

from jaxkl import families, fitting, rl, sharding, stats
from jaxkl._src.version import __version__ as __version__
from jaxkl.estimators import (
    DIVERGENCE_NAMES,
    F_DIVERGENCES,
    control_variate,
    csiszar,
    csiszar_dual,
    csiszar_symmetrized,
    forward_kl,
    k1,
    k2,
    k3,
    optimal_cv_lambda,
)
from jaxkl.fitting import FitOptions, FitResult, MultiStartResult, fit, fit_multistart
from jaxkl.mixtures import (
    GaussianMixture,
    MixtureMoments,
    gaussian_mixture_1d,
    gaussian_mixture_diag,
    gaussian_mixture_full,
    mixture_moments,
    mixture_params,
)
from jaxkl.montecarlo import estimate
from jaxkl.reference import (
    MixtureKLApproximations,
    ReferenceKL,
    exact_kl,
    mixture_kl_approximations,
    monte_carlo_kl,
    quadrature_kl,
    reference_kl,
)
from jaxkl.stats import Interval, Stats, describe, relative_error

__all__ = [
    "DIVERGENCE_NAMES",
    "F_DIVERGENCES",
    "FitOptions",
    "FitResult",
    "GaussianMixture",
    "Interval",
    "MixtureKLApproximations",
    "MixtureMoments",
    "MultiStartResult",
    "ReferenceKL",
    "Stats",
    "control_variate",
    "csiszar",
    "csiszar_dual",
    "csiszar_symmetrized",
    "describe",
    "estimate",
    "exact_kl",
    "families",
    "fit",
    "fit_multistart",
    "fitting",
    "forward_kl",
    "gaussian_mixture_1d",
    "gaussian_mixture_diag",
    "gaussian_mixture_full",
    "k1",
    "k2",
    "k3",
    "mixture_kl_approximations",
    "mixture_moments",
    "mixture_params",
    "monte_carlo_kl",
    "optimal_cv_lambda",
    "quadrature_kl",
    "reference_kl",
    "relative_error",
    "rl",
    "sharding",
    "stats",
]
