r"""Ground truth for KL(q||p): analytic, quadrature, mixture bounds, Monte Carlo.

.. math:: KL(q \| p) = \int q(x) \left(\log q(x) - \log p(x)\right) dx.

:func:`reference_kl` returns the most accurate value available with an error estimate and
the method that produced it (:class:`ReferenceKL`):

========================  ==================================================  =====================
method                    applies to                                          ``error`` is
========================  ==================================================  =====================
``"analytic"``            pairs with a KL registered in distrax               float64 rounding
``"quadrature"``          1-D and 2-D densities (Gaussian mixtures included)  abs. error bound
``"bounds"``              Gaussian mixtures, any dimension                    half the bound gap
``"variational"``         Gaussian mixtures (Hershey & Olsen 2007)            distance to a bound
``"product"``             Gaussian mixtures (Hershey & Olsen 2007)            distance to a bound
``"monte_carlo"``         anything that samples q and evaluates p             one standard error
========================  ==================================================  =====================

For the mixture methods, ``value +- error`` is guaranteed to contain the truth, because both
approximations lie between the Durrieu-Thiran-Kelly lower and upper bounds. For quadrature
between Gaussian mixtures, the cells resolve every component and kink and the tails are
bounded, and ``error`` bounded the true error on 300 random pairs checked against scipy
(scales 1e-4 to 1e2, ``tests/test_reference_quadrature.py``); where quadrature cannot meet
its tolerance, ``converged`` is False. No method returns a negative KL or, from a sample,
an error of 0.

Everything here runs eagerly in float64 (the distributions' parameters are converted to
float64 under ``jax.enable_x64`` locally), whatever the input dtype: these are references
for tests and experiments, not functions to call inside ``jit``. The conversion starts from
the stored parameters, so the value and ``error`` are those of the distributions as
stored: a float32 parameter (JAX's default) is already rounded (``6.001`` is stored as
``6.000999927``), which can move the KL by far more than ``error``; build the
distributions with ``jax_enable_x64`` on when the written values are the ones meant.
The exceptions to the eager float64 rule are :func:`exact_kl` and
:func:`mixture_kl_approximations`, which are pure JAX.
"""

from jaxkl._src.reference.analytic import exact_kl
from jaxkl._src.reference.dispatch import METHODS, reference_kl
from jaxkl._src.reference.mixture_bounds import (
    MixtureKLApproximations,
    mixture_kl_approximations,
)
from jaxkl._src.reference.monte_carlo import MIN_MONTE_CARLO_SAMPLES, monte_carlo_kl
from jaxkl._src.reference.quadrature import quadrature_kl
from jaxkl._src.reference.result import ReferenceKL

__all__ = [
    "exact_kl",
    "METHODS",
    "MIN_MONTE_CARLO_SAMPLES",
    "mixture_kl_approximations",
    "MixtureKLApproximations",
    "monte_carlo_kl",
    "quadrature_kl",
    "reference_kl",
    "ReferenceKL",
]
