"""Benchmark: the separation sweep as one compiled JAX call vs the usual PyTorch loop.

The work: p = 0.5 N(-d/2, 1) + 0.5 N(d/2, 1) for D separations d in [0, 10], S random
starts each, T Adam steps of a reparameterised reverse-KL fit of q = N(m, softplus(r)^2)
with N samples per step, learning rate 0.05 with cosine decay to 1% (optax's
``cosine_decay_schedule`` and torch's ``CosineAnnealingLR`` follow the same formula).

- JAX: ``jit(vmap(fit_multistart))`` over d, the experiment's own function (compile time
  reported separately; the steady-state time is the median of repeated calls);
- PyTorch: a Python loop over fits, one ``torch.optim.Adam`` per fit, the same steps,
  samples and schedule. It is slow, so a subset of fits is timed and extrapolated
  linearly to all D x S fits (each fit does identical work, so time is linear in fits).

Usage: ``.venv/bin/python scripts/bench_separation_sweep.py [--separations 64]
[--starts 16] [--steps 2000] [--samples 32] [--torch-fits 16]``. torch is optional
(``pip install torch==2.13.0``); without it the PyTorch side is skipped with a message.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import jax
import numpy as np

from experiments.separation_sweep import make_sweep

LEARNING_RATE, FINAL_FRACTION = 0.05, 0.01


def time_jax(separations, starts, steps, samples, repeats):
    d = jax.numpy.linspace(0.0, 10.0, separations)
    keys = jax.random.split(jax.random.key(0), separations)
    sweep = make_sweep(starts, steps, samples)
    start = time.perf_counter()
    compiled = sweep.lower(d, keys).compile()
    compile_s = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = compiled(d, keys)
        jax.block_until_ready(out)
        runs.append(time.perf_counter() - start)
    return compile_s, statistics.median(runs), out


def time_torch(num_fits, separations, steps, samples):
    import torch

    torch.manual_seed(0)
    generator = np.random.default_rng(0)
    d_values = np.linspace(0.0, 10.0, separations)
    log_half = math.log(0.5)
    log_norm = 0.5 * math.log(2 * math.pi)
    start = time.perf_counter()
    final = []
    for i in range(num_fits):
        d = float(d_values[i % separations])
        loc = torch.tensor(generator.uniform(-(d / 2 + 1), d / 2 + 1), requires_grad=True)
        scale0 = math.exp(generator.uniform(math.log(0.5), math.log(3.0)))
        raw = torch.tensor(math.log(math.expm1(scale0)), requires_grad=True)
        optimizer = torch.optim.Adam([loc, raw], lr=LEARNING_RATE)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=steps, eta_min=FINAL_FRACTION * LEARNING_RATE)
        centres = torch.tensor([-d / 2, d / 2])
        for _ in range(steps):
            optimizer.zero_grad()
            scale = torch.nn.functional.softplus(raw)
            eps = torch.randn(samples)
            x = loc + scale * eps
            log_q = -0.5 * eps**2 - torch.log(scale) - log_norm
            log_p = torch.logsumexp(-0.5 * (x[:, None] - centres) ** 2, dim=1) + log_half \
                - log_norm
            loss = (log_q - log_p).mean()
            loss.backward()
            optimizer.step()
            schedule.step()
        final.append((float(loc.detach()), float(torch.nn.functional.softplus(raw.detach()))))
    return time.perf_counter() - start, final, torch.__version__, torch.get_num_threads()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--separations", type=int, default=64)
    parser.add_argument("--starts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--torch-fits", type=int, default=16,
                        help="fits timed in PyTorch (extrapolated to all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    total_fits = args.separations * args.starts
    print(f"work: {args.separations} separations x {args.starts} starts = {total_fits} fits, "
          f"{args.steps} Adam steps, {args.samples} samples/step")
    print(f"machine: {platform.processor() or platform.machine()}, jax {jax.__version__} "
          f"on {jax.devices()[0].platform}")
    compile_s, jax_s, out = time_jax(args.separations, args.starts, args.steps,
                                     args.samples, args.repeats)
    print(f"JAX  one jit(vmap) call: compile {compile_s:.2f} s, run {jax_s:.3f} s "
          f"(median of {args.repeats}); {int(np.sum(~np.asarray(out.starts.finite)))} "
          "non-finite fits")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("PyTorch not installed: skipping the comparison "
              "(pip install torch==2.13.0 to run it).")
        return 0
    torch_s, final, version, threads = time_torch(args.torch_fits, args.separations,
                                                  args.steps, args.samples)
    per_fit = torch_s / args.torch_fits
    extrapolated = per_fit * total_fits
    print(f"PyTorch {version} ({threads} threads), Python loop, one Adam per fit: "
          f"{args.torch_fits} fits in {torch_s:.2f} s = {per_fit:.3f} s/fit; extrapolated "
          f"linearly to {total_fits} fits: {extrapolated:.1f} s")
    print(f"speed-up (PyTorch extrapolated / JAX run): {extrapolated / jax_s:.0f}x; "
          f"including JAX's compile: {extrapolated / (jax_s + compile_s):.0f}x")
    sanity = [abs(abs(m) - 0.0) < 0.3 or abs(abs(m) - d / 2) < 0.3 for (m, _), d in zip(
        final, np.linspace(0.0, 10.0, args.separations), strict=False)]
    print(f"PyTorch fits on a branch (|m| ~ 0 or ~ d/2): {sum(sanity)}/{len(sanity)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
