r"""Streamed Monte Carlo estimation of KL and f-divergences from samples of q.

:func:`estimate` draws ``num_samples`` samples of q in fixed-size chunks inside one
compiled loop. Each chunk computes one log-ratio per sample, every requested estimator
from it (one fused pass), and merges the chunk's moments into a running total with the
stable update of :mod:`jaxkl.stats`. Memory is that of one chunk, whatever
``num_samples``; ``num_samples`` is a traced value, so changing it does not recompile.

Chunk ``i`` draws from ``jax.random.fold_in(key, i)``: the samples depend only on the key
and the chunk size, not on how chunks are scheduled (the sharded path uses the same keys).
"""

from jaxkl._src.montecarlo.engine import DEFAULT_CHUNK_SIZE
from jaxkl._src.montecarlo.estimate import estimate, sample_log_ratios

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "estimate",
    "sample_log_ratios",
]
