"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def time_once(fn: Callable[[], object]) -> float:
    """Seconds for one call of ``fn``, waiting for JAX's asynchronous results."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def interleaved_medians(candidates: dict[str, Callable[[], object]], reps: int,
                        *, warmup: bool = True) -> dict[str, float]:
    """Median seconds per candidate, timing each once per round over ``reps`` rounds so
    that load drifts on a shared machine hit every contender alike.

    Round ``r`` starts at the ``r``-th candidate (a rotation), so that no contender always
    runs right after the same neighbour. What a call finds depends on what ran before it:
    on this 2-core machine the Python part of a plain ``jaxkl.fit`` call took 1.1 ms right
    after another fit and 3.1 ms after a further 20 ms sleep (BENCHMARKS.md, issue 18.2).
    """
    if warmup:
        for fn in candidates.values():
            time_once(fn)  # compilation, allocator warm-up
    names = list(candidates)
    times = {name: [] for name in names}
    for r in range(reps):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            times[name].append(time_once(candidates[name]))
    return {name: statistics.median(ts) for name, ts in times.items()}
