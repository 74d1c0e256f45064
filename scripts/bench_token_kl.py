"""Benchmark: jaxkl.rl.token_kl + aggregate (jitted) vs PyTorch eager vs a memory floor.

The same work three ways in one run, on the same inputs:

- jaxkl: ``aggregate(token_kl(logp, ref), mask)`` (k3, log-ratio clamp 20, token-mean),
  jitted; and its value and gradient with respect to ``logp``;
- PyTorch eager: the same formulas as verl's ``low_var_kl`` + masked mean, with
  ``loss.backward()`` for the gradient (skipped with a message if torch is absent);
- floor: one jitted fused read of the same inputs (``sum(where(mask, logp + ref, 0))``),
  the least memory traffic any implementation needs. For value and gradient two floors:
  ``(sum(where(mask, logp + ref, 0)), where(mask, logp - ref, 0))`` reads the inputs once
  and returns a scalar and an array of the gradient's size, which is what
  ``value_and_grad`` must return; the write-only floor ``where(mask, logp - ref, 0)``
  (the only value+grad floor before 2026-11-29) returns no scalar, and XLA:CPU's
  reduction of a masked array costs one more pass over it, so it understates the
  cheapest possible value+grad program there. Both floors are XLA programs, so they
  include what XLA:CPU does with a masked reduction (it writes the masked array out and
  reads it back); the bandwidth floor ``sum(logp + ref)`` reads the two float arrays in
  one pass at memory speed and skips the mask, a lower bound no masked program reaches.

Times are medians over repetitions after a warm-up, the candidates interleaved; ratios
are what to compare, since absolute times on a shared machine are noise.

    python scripts/bench_token_kl.py [--batch 1024] [--length 2048] [--reps 20]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved_medians

from jaxkl import rl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    shape = (args.batch, args.length)
    rng = np.random.default_rng(0)
    logp_np = -np.abs(rng.normal(0, 2, shape)).astype(np.float32)
    ref_np = -np.abs(rng.normal(0, 2, shape)).astype(np.float32)
    mask_np = rng.uniform(size=shape) < 0.9
    logp, ref, mask = map(jax.device_put, (logp_np, ref_np, mask_np))
    print(f"{shape[0] * shape[1]:,} tokens {shape}, float32 log-probs, bool mask, "
          f"device {jax.devices()[0].device_kind}, {args.reps} reps (median)")

    loss = jax.jit(lambda a, b, m: rl.aggregate(rl.token_kl(a, b), m))
    objective = lambda a, b, m: rl.aggregate(rl.token_kl(a, b), m)
    loss_and_grad = jax.jit(jax.value_and_grad(objective))
    floor = jax.jit(lambda a, b, m: jnp.where(m, a + b, 0).sum())
    floor_grad = jax.jit(lambda a, b, m: (jnp.where(m, a + b, 0).sum(), jnp.where(m, a - b, 0)))
    floor_write = jax.jit(lambda a, b, m: jnp.where(m, a - b, 0))
    bandwidth = jax.jit(lambda a, b: (a + b).sum())

    # The two agree before anything is timed.
    value = float(loss(logp, ref, mask))
    lr = ref_np.astype(np.float64) - logp_np
    expected = (np.expm1(lr) - lr)[mask_np].mean()
    assert abs(value / expected - 1) < 1e-5, (value, expected)

    candidates = {
        "jaxkl forward": lambda: loss(logp, ref, mask).block_until_ready(),
        "floor forward": lambda: floor(logp, ref, mask).block_until_ready(),
        "jaxkl value+grad": lambda: jax.block_until_ready(loss_and_grad(logp, ref, mask)),
        "floor value+grad": lambda: jax.block_until_ready(floor_grad(logp, ref, mask)),
        "floor write-only": lambda: floor_write(logp, ref, mask).block_until_ready(),
        "bandwidth floor": lambda: bandwidth(logp, ref).block_until_ready(),
    }
    try:
        import torch
    except ImportError:
        torch = None
        print("torch is not installed: skipping the PyTorch eager comparison "
              "(pip install torch==2.13.0).")
    if torch is not None:
        tlogp, tref, tmask = (torch.from_numpy(x) for x in (logp_np, ref_np, mask_np))

        def torch_loss(a):
            kl = torch.clamp(tref - a, min=-20, max=20)
            kld = torch.exp(kl) - kl - 1
            m = tmask.to(kld.dtype)
            return (kld * m).sum() / m.sum()

        def torch_forward():
            with torch.no_grad():
                return torch_loss(tlogp).item()

        def torch_value_and_grad():
            a = tlogp.clone().requires_grad_(True)
            out = torch_loss(a)
            out.backward()
            return out.item(), a.grad

        assert abs(torch_forward() / expected - 1) < 1e-4
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t = interleaved_medians(candidates, args.reps)
    if torch is not None:
        # Timed in their own block: PyTorch's OpenMP workers keep spinning for a while
        # after each op and would slow down whatever XLA runs right after them.
        t.update(interleaved_medians(
            {"torch eager forward": torch_forward, "torch eager value+grad": torch_value_and_grad},
            args.reps,
        ))

    for name, seconds in t.items():
        print(f"  {name:<24s} {seconds * 1e3:9.2f} ms")
    print("ratios (> 1 means jaxkl is faster / slower than the floor by that factor):")
    for kind in ("forward", "value+grad"):
        ours = t[f"jaxkl {kind}"]
        print(f"  {kind:<10s} jaxkl / floor = {ours / t[f'floor {kind}']:.2f}")
        if kind == "value+grad":
            print(f"  {kind:<10s} jaxkl / write-only floor = {ours / t['floor write-only']:.2f}")
        else:
            print(f"  {kind:<10s} jaxkl / bandwidth floor = {ours / t['bandwidth floor']:.2f}")
        if f"torch eager {kind}" in t:
            print(f"  {kind:<10s} torch eager / jaxkl = {t[f'torch eager {kind}'] / ours:.2f}")


if __name__ == "__main__":
    main()
