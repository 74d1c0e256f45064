r"""Streaming moments with a numerically stable merge, and the summaries built on them.

:class:`Moments` holds the count, the mean vector and the co-moment matrix
``C = sum_i (x_i - mean)(x_i - mean)^T`` of a stream of feature vectors. Two partial
results merge exactly (Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm
for computing sample variances", 1979):

.. math::
    n = n_a + n_b,\quad \delta = \bar x_b - \bar x_a,\quad
    \bar x = \bar x_a + \delta\,n_b / n,\quad
    C = C_a + C_b + \delta\delta^T n_a n_b / n.

Each chunk's own moments are sums of values shifted by a point near the mean (see
:func:`from_features`), so no sum of squares of uncentred values cancels. Merging is
associative up to rounding, so chunks can be combined in any order and on any device.
"""

from jaxkl._src.stats import (
    Interval,
    Moments,
    Stats,
    describe,
    empty,
    from_features,
    from_samples,
    merge,
    relative_error,
    summarize,
    summarize_linear,
)

__all__ = [
    "describe",
    "empty",
    "from_features",
    "from_samples",
    "Interval",
    "merge",
    "Moments",
    "relative_error",
    "Stats",
    "summarize",
    "summarize_linear",
]
