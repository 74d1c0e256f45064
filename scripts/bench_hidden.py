"""Benchmark: log-probabilities and the exact KL from hidden states, blockwise vs materialised.

Contenders, each the value and the gradient with respect to the policy's hidden states
and unembedding (a frozen reference for the KL):

- ``token_logprobs_from_hidden(h, W, y)`` against ``token_logprobs(h @ W, y)``;
- ``full_kl_from_hidden(h, W, h_ref, W_ref)`` against ``full_kl(h @ W, h_ref @ W_ref)``.

Times are medians over interleaved rounds (every contender once per round, after a
warm-up); memory is XLA's compiled temporary buffer size beyond the inputs and the
gradients (``jax.jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes``).
Before timing, the blockwise results are checked against the materialised ones.

    python scripts/bench_hidden.py [--tokens 2048] [--dim 256] [--vocab 32768]
        [--dtype float32] [--block-tokens N] [--block-vocab N] [--reps 3]
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
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--block-tokens", type=int, default=None)
    parser.add_argument("--block-vocab", type=int, default=None)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    n, d, v = args.tokens, args.dim, args.vocab
    blocks = dict(block_tokens=args.block_tokens, block_vocab=args.block_vocab)
    logits_bytes = n * v * 4
    print(f"{n} tokens x D={d} x V={v}, {dtype.name} inputs (float32 logits would be "
          f"{logits_bytes / 2**20:.0f} MiB), blocks {args.block_tokens or 'default'} x "
          f"{args.block_vocab or 'default'}, device {jax.devices()[0].device_kind}")

    def value_and_grad(f):
        return jax.value_and_grad(lambda h, w, *rest: f(h, w, *rest).sum(), argnums=(0, 1))

    functions = {
        "logprobs blockwise": value_and_grad(
            lambda h, w, h_ref, w_ref, y: rl.token_logprobs_from_hidden(h, w, y, **blocks)),
        "logprobs materialised": value_and_grad(
            lambda h, w, h_ref, w_ref, y: rl.token_logprobs(h @ w, y)),
        "full_kl blockwise": value_and_grad(
            lambda h, w, h_ref, w_ref, y: rl.full_kl_from_hidden(h, w, h_ref, w_ref, **blocks)),
        "full_kl materialised": value_and_grad(
            lambda h, w, h_ref, w_ref, y: rl.full_kl(h @ w, h_ref @ w_ref)),
    }
    specs = (jax.ShapeDtypeStruct((n, d), dtype), jax.ShapeDtypeStruct((d, v), dtype),
             jax.ShapeDtypeStruct((n, d), dtype), jax.ShapeDtypeStruct((d, v), dtype),
             jax.ShapeDtypeStruct((n,), jnp.int32))
    compiled = {name: jax.jit(f).lower(*specs).compile() for name, f in functions.items()}
    print("memory beyond the inputs and gradients (XLA temporaries):")
    for name, c in compiled.items():
        temp = c.memory_analysis().temp_size_in_bytes
        print(f"  {name:<24s} {temp / 2**20:10.1f} MiB = {100 * temp / logits_bytes:7.2f}% "
              "of the float32 logits")

    keys = jax.random.split(jax.random.key(0), 5)
    h = jax.random.normal(keys[0], (n, d), jnp.float32)
    w = jax.random.normal(keys[1], (d, v), jnp.float32) * (2 / np.sqrt(d))
    h_ref = h + 0.3 * jax.random.normal(keys[2], (n, d), jnp.float32)
    w_ref = w + 0.3 * jax.random.normal(keys[3], (d, v), jnp.float32) / np.sqrt(d)
    y = jax.random.randint(keys[4], (n,), 0, v)
    inputs = jax.block_until_ready((h.astype(dtype), w.astype(dtype), h_ref.astype(dtype),
                                    w_ref.astype(dtype), y))

    print("blockwise vs materialised, max abs difference (of the largest |entry|): summed "
          "value, d hidden, d unembedding:")
    for kind in ("logprobs", "full_kl"):
        (a, (ga_h, ga_w)) = compiled[f"{kind} blockwise"](*inputs)
        (b, (gb_h, gb_w)) = compiled[f"{kind} materialised"](*inputs)
        diffs = [float(jnp.abs(x.astype(jnp.float32) - z.astype(jnp.float32)).max())
                 for x, z in ((a, b), (ga_h, gb_h), (ga_w, gb_w))]
        scale = [float(jnp.abs(z.astype(jnp.float32)).max()) for z in (b, gb_h, gb_w)]
        print(f"  {kind:<9s} " + ", ".join(f"{x:.2e} (of {s:.2e})"
                                           for x, s in zip(diffs, scale, strict=True)))

    t = interleaved_medians(
        {name: (lambda c=c: jax.block_until_ready(c(*inputs))) for name, c in compiled.items()},
        args.reps,
    )
    print(f"median times over {args.reps} interleaved rounds (value and gradient):")
    for name, seconds in t.items():
        print(f"  {name:<24s} {seconds * 1e3:10.1f} ms")
    print("ratios (blockwise / materialised):")
    for kind in ("logprobs", "full_kl"):
        print(f"  {kind:<9s} {t[f'{kind} blockwise'] / t[f'{kind} materialised']:.2f}")


if __name__ == "__main__":
    main()
