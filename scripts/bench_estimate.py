"""Benchmark: the note's 1e7-sample k1/k2/k3 table, timed three ways in one run.

1. jaxkl.estimate (first call including compilation, then steady state);
2. the note's PyTorch code as written (materialises 1e7 samples and each estimator);
3. an RNG-only floor: the same chunked loop drawing the same normal samples and summing
   them, nothing else (what no estimator can beat without a cheaper generator).

Prints medians of ``--repeats`` interleaved rounds and the ratios. ``--num-samples 1e9`` times the
large run and reports its peak resident memory. Usage:

    .venv/bin/python scripts/bench_estimate.py [--num-samples 1e7] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource

import distrax
import jax
import jax.numpy as jnp
from _timing import interleaved_medians, time_once

import jaxkl
from jaxkl.montecarlo import DEFAULT_CHUNK_SIZE


def rng_floor(num_samples: int, chunk: int = DEFAULT_CHUNK_SIZE):
    """Draw the same chunks of N(0.1, 1) samples and reduce them; nothing else."""

    @jax.jit
    def run(key, n):
        def body(i, acc):
            x = 0.1 + jax.random.normal(jax.random.fold_in(key, i), (chunk,))
            return acc + x.sum()

        return jax.lax.fori_loop(0, (n + chunk - 1) // chunk, body, jnp.zeros(()))

    return lambda: run(jax.random.key(0), num_samples)


def torch_note(num_samples: int):
    """The note's code, as written (torch.distributions, whole arrays)."""
    import torch
    import torch.distributions as dis

    def run():
        p = dis.Normal(loc=0, scale=1)
        q = dis.Normal(loc=0.1, scale=1)
        x = q.sample(sample_shape=(num_samples,))
        truekl = dis.kl_divergence(q, p)
        logr = p.log_prob(x) - q.log_prob(x)
        k1 = -logr
        k2 = logr**2 / 2
        k3 = (logr.exp() - 1) - logr
        return [(k.mean(), (k.mean() - truekl) / truekl, k.std() / truekl) for k in (k1, k2, k3)]

    return run, torch.__version__, torch.get_num_threads()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=float, default=1e7)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = int(args.num_samples)
    q, p = distrax.Normal(0.1, 1.0), distrax.Normal(0.0, 1.0)

    key = jax.random.key(0)
    jaxkl_run = lambda: jaxkl.estimate(q, p, key=key, num_samples=n)
    first = time_once(jaxkl_run)
    contenders = {"jaxkl": jaxkl_run, "floor": rng_floor(n)}
    torch_info = None
    if n <= 1e8:
        try:
            torch_run, version, threads = torch_note(n)
            contenders["torch"] = torch_run
            torch_info = f"{version} ({threads} threads)"
        except ImportError:
            print("torch not installed: `pip install torch==2.13.0` for the comparison")
    median = interleaved_medians(contenders, args.repeats if n <= 1e8 else 1)
    report = {
        "num_samples": n, "device": str(jax.devices()[0]), "jax": jax.__version__,
        "machine": platform.machine(), "jaxkl_first_call_s": first,
        "jaxkl_steady_s": median["jaxkl"], "rng_floor_s": median["floor"],
        "jaxkl_over_floor": median["jaxkl"] / median["floor"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if torch_info:
        report.update(torch=torch_info, torch_s=median["torch"],
                      torch_over_jaxkl=median["torch"] / median["jaxkl"])
    for k, v in report.items():
        print(f"{k:22s} {v:.4g}" if isinstance(v, float) else f"{k:22s} {v}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
