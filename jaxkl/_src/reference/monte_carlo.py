"""KL(q||p) from samples of q with its standard error (:func:`monte_carlo_kl`)."""

from __future__ import annotations

import math

import distrax
import jax

from jaxkl._src.montecarlo.estimate import estimate
from jaxkl._src.reference.result import ReferenceKL
from jaxkl._src.validation import check_choice, check_positive_int

# The standard error is estimated from the same samples as the value. Below ~1000 samples
# its own relative error exceeds ~2% even for a Gaussian log-ratio (sqrt(1 / (2(n - 1)))),
# and far more for heavier tails: a smaller sample cannot support the error it reports.
MIN_MONTE_CARLO_SAMPLES = 1000


def monte_carlo_kl(
    q: distrax.DistributionLike,
    p: distrax.DistributionLike,
    *,
    key: jax.Array,
    num_samples: int = 2**22,
    estimator: str = "k1",
) -> ReferenceKL:
    r"""KL(q||p) from ``num_samples`` samples of q, with its standard error.

    .. math:: \widehat{KL} = \frac1n \sum_i k(\log p(x_i) - \log q(x_i)), \quad
              x_i \sim q, \qquad \mathrm{error} = s_k / \sqrt n.

    The default estimator k1 (``-l``) is unbiased and has finite variance whenever the
    log-ratio has a second moment; k3 and ``cv*`` have lower variance near ``p = q`` but
    infinite variance when p has heavier tails than q (then their standard error is
    meaningless). Runs :func:`jaxkl.estimate` (streamed; constant memory) in the
    distributions' dtype.

    ``error`` is one standard error, which is itself estimated from the samples: at least
    :data:`MIN_MONTE_CARLO_SAMPLES` are required. A sample with no spread (every
    log-ratio equal) says nothing about the variance: its ``error`` is ``inf``, never 0.

    Args:
      q: the sampling distribution; p: the other one (needs ``log_prob``).
      key: a PRNG key.
      num_samples: number of samples (an int >= 1000).
      estimator: ``"k1"``, ``"k3"`` or ``"cv*"``.

    Returns:
      :class:`ReferenceKL` with ``method="monte_carlo"`` and ``error`` = one standard error.

    Raises:
      ValueError: ``num_samples`` below :data:`MIN_MONTE_CARLO_SAMPLES`, or an unknown
        ``estimator``.

    Reference: J. Schulman, "Approximating KL Divergence", 2020.

    Example:
      >>> import distrax, jax
      >>> from jaxkl.reference import monte_carlo_kl
      >>> r = monte_carlo_kl(distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 1.0),
      ...                    key=jax.random.key(0), num_samples=100_000)
      >>> bool(abs(r.value - 0.5) < 5 * r.error)
      True
    """
    check_choice(estimator, "estimator", ("k1", "k3", "cv*"))
    num_samples = check_monte_carlo_samples(num_samples)
    stats = estimate(q, p, key=key, num_samples=num_samples, estimators=(estimator,))[estimator]
    error = float(stats.stderr)
    return ReferenceKL(float(stats.mean), error if error > 0 else math.inf, "monte_carlo")


def check_monte_carlo_samples(num_samples: int) -> int:
    """``num_samples`` as an int, or an error when it is below the minimum."""
    num_samples = check_positive_int(num_samples, "num_samples")
    if num_samples < MIN_MONTE_CARLO_SAMPLES:
        raise ValueError(
            f"`num_samples` = {num_samples} is too few for a Monte Carlo reference: its "
            f"standard error is estimated from the same samples and needs at least "
            f"{MIN_MONTE_CARLO_SAMPLES} to mean anything."
        )
    return num_samples
