"""Benchmark: the note's 1e7-sample k1/k2/k3 table, timed against the RNG floor in one run.

Contenders, interleaved round by round:

1. ``jaxkl.estimate`` (k1, k2, k3 mean and std) with a key of each PRNG implementation
   (``jax.random.key(0, impl=...)``: ``threefry2x32``, JAX's default and the one the
   documented sample values use, ``rbg`` and ``unsafe_rbg``); the first call's time
   (with compilation) is reported for the default key;
2. the RNG floor of each implementation: the same chunked loop (``fold_in(key, i)``,
   chunks of ``DEFAULT_CHUNK_SIZE``) drawing the same normal samples and summing them,
   nothing else, compiled as one loop: what no estimator can beat without a cheaper
   generator;
3. PyTorch, if installed: the note's code as written (it materialises the samples and
   each estimator), and torch's own RNG floor, ``torch.randn`` of the same count in
   chunks of the same size, summed.

Prints medians of ``--repeats`` interleaved rounds and the ratios. ``--num-samples 1e9``
times the large run once and reports its peak resident memory. Usage:

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

IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


def rng_floor(num_samples: int, chunk: int = DEFAULT_CHUNK_SIZE):
    """Draw the same chunks of N(0.1, 1) samples and reduce them; nothing else."""

    @jax.jit
    def run(key, n):
        def body(i, acc):
            x = 0.1 + jax.random.normal(jax.random.fold_in(key, i), (chunk,))
            return acc + x.sum()

        return jax.lax.fori_loop(0, (n + chunk - 1) // chunk, body, jnp.zeros(()))

    return run


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


def torch_rng_floor(num_samples: int, chunk: int = DEFAULT_CHUNK_SIZE):
    """torch's generator alone: ``randn`` of the same count in chunks, summed."""
    import torch

    generator = torch.Generator().manual_seed(0)
    buffer = torch.empty(chunk)

    def run():
        total = torch.zeros(())
        for _ in range(0, num_samples, chunk):
            total += torch.randn(chunk, generator=generator, out=buffer).sum()
        return float(total)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=float, default=1e7)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = int(args.num_samples)
    q, p = distrax.Normal(0.1, 1.0), distrax.Normal(0.0, 1.0)

    contenders = {}
    first = None
    for impl in IMPLS:
        key = jax.random.key(0, impl=impl)
        run = lambda key=key: jaxkl.estimate(q, p, key=key, num_samples=n)
        if first is None:
            first = time_once(run)
        contenders[f"jaxkl {impl}"] = run
        floor = rng_floor(n)
        contenders[f"floor {impl}"] = lambda key=key, f=floor: f(key, n)
    torch_info = None
    torch_contenders = {}
    if n <= 1e8:
        try:
            torch_run, version, threads = torch_note(n)
            torch_contenders = {"torch note": torch_run, "torch randn floor": torch_rng_floor(n)}
            torch_info = f"{version} ({threads} threads)"
        except ImportError:
            print("torch not installed: `pip install torch==2.13.0` for the comparison")
    repeats = args.repeats if n <= 1e8 else 1
    median = interleaved_medians(contenders, repeats)
    if torch_contenders:
        # Their own block: PyTorch's OpenMP workers spin for a while after each op and
        # would slow down whatever XLA runs right after them.
        median.update(interleaved_medians(torch_contenders, repeats))
    report = {
        "num_samples": n, "device": str(jax.devices()[0]), "jax": jax.__version__,
        "machine": platform.machine(), "jaxkl_first_call_s": first,
    }
    for name, seconds in median.items():
        report[name.replace(" ", "_") + "_s"] = seconds
    for impl in IMPLS:
        report[f"jaxkl_{impl}_over_its_floor"] = median[f"jaxkl {impl}"] / median[f"floor {impl}"]
    for impl in IMPLS:
        report[f"jaxkl_{impl}_over_threefry_floor"] = (median[f"jaxkl {impl}"]
                                                       / median["floor threefry2x32"])
    if torch_info:
        report.update(torch=torch_info,
                      torch_note_over_jaxkl=median["torch note"] / median["jaxkl threefry2x32"],
                      torch_randn_over_threefry_floor=(median["torch randn floor"]
                                                       / median["floor threefry2x32"]))
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for k, v in report.items():
        print(f"{k:36s} {v:.4g}" if isinstance(v, float) else f"{k:36s} {v}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
