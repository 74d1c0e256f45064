"""Benchmark: jaxkl.rl.full_kl vs the naive log_softmax way vs a fused read of the inputs.

At one current LLM shape (2048 tokens x 152,064 vocabulary, bf16 logits by default):

- time: ``full_kl`` forward (and the vocabulary-chunk loop, the CPU default before
  2026-11-30, and the row loop over all rows at once, which for 16-bit inputs copied
  them whole before its loop), and forward + gradient with respect to both logit arrays, against one
  jitted fused read of both inputs (``sum(z + w)`` in float32; for the gradient, an
  elementwise pass that reads both and writes two arrays of their size), against the
  exp roofline (one fused pass computing ``exp(z) + exp(w)``, the two exps per element
  any forward pass needs, summed to a scalar and per row) and against the naive
  ``log_softmax`` formula;
- memory beyond the inputs: XLA's compiled temporary buffer size
  (``jax.jit(f).lower(...).compile().memory_analysis().temp_size_in_bytes``); for the
  backward pass this is the memory beyond the gradient arrays (they are outputs).

Times are medians over interleaved repetitions after a warm-up.

    python scripts/bench_full_kl.py [--tokens 2048] [--vocab 152064] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved_medians

from jaxkl import rl
from jaxkl._src.rl import full_kl as full_kl_module
from jaxkl._src.rl.full_kl import auto_chunk_size


def naive_full_kl(z, w):
    log_p = jax.nn.log_softmax(z.astype(jnp.float32))
    log_r = jax.nn.log_softmax(w.astype(jnp.float32))
    return (jnp.exp(log_p) * (log_p - log_r)).sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=152064)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="the forward pass's vocabulary chunk (default: full_kl's automatic "
                             "choice for the platform)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--skip-naive-timing", action="store_true")
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    shape = (args.tokens, args.vocab)
    input_bytes = 2 * args.tokens * args.vocab * dtype.itemsize
    print(f"{shape} {dtype.name} logits x 2 = {input_bytes / 2**30:.2f} GiB of inputs, "
          f"chunk_size {args.chunk_size or 'auto'}, device {jax.devices()[0].device_kind}")

    ours = lambda z, w: rl.full_kl(z, w, chunk_size=args.chunk_size)
    grad = lambda f: jax.grad(lambda z, w: f(z, w).sum(), argnums=(0, 1))
    cpu_chunk = auto_chunk_size(args.tokens, args.vocab, "cpu")
    functions = {
        "full_kl forward": ours,
        # The vocabulary-chunk loop, the CPU default before 2026-11-30 (now rows).
        "chunked forward": lambda z, w: rl.full_kl(z, w, chunk_size=cpu_chunk),
        # The CPU row loop over all rows at once, as before 2026-11-30 (evening): for 16-bit
        # inputs it copies both whole inputs (as uint16) before the loop.
        "one-block row loop": lambda z, w: full_kl_module._finish(
            *full_kl_module._row_loop(z, w, (z.dtype, w.dtype)))[0],
        "naive forward": naive_full_kl,
        "full_kl forward+backward": grad(ours),
        "naive forward+backward": grad(naive_full_kl),
        "fused read": lambda z, w: (z.astype(jnp.float32) + w.astype(jnp.float32)).sum(),
        # The exp roofline: one fused pass computing the two exps per element a forward
        # pass needs, reduced to a scalar (XLA:CPU's fastest form) and per row.
        "exp pass": lambda z, w: (jnp.exp(z.astype(jnp.float32) - 30)
                                  + jnp.exp(w.astype(jnp.float32) - 30)).sum(),
        "exp pass per row": lambda z, w: (jnp.exp(z.astype(jnp.float32) - 30)
                                          + jnp.exp(w.astype(jnp.float32) - 30)).sum(-1),
        "fused read+write": lambda z, w: (w - z, z - w),
    }
    spec = jax.ShapeDtypeStruct(shape, dtype)
    compiled = {name: jax.jit(f).lower(spec, spec).compile() for name, f in functions.items()}
    print("memory beyond the inputs (XLA temporaries; backward: beyond the gradients):")
    for name in ("full_kl forward", "one-block row loop", "chunked forward", "naive forward",
                 "full_kl forward+backward", "naive forward+backward"):
        temp = compiled[name].memory_analysis().temp_size_in_bytes
        print(f"  {name:<26s} {temp / 2**20:10.1f} MiB = {100 * temp / input_bytes:6.2f}% "
              "of the inputs")

    key_z, key_w = jax.random.split(jax.random.key(0))
    z = (3 * jax.random.normal(key_z, shape, jnp.float32)).astype(dtype)
    w = (z.astype(jnp.float32) + jax.random.normal(key_w, shape, jnp.float32)).astype(dtype)
    z, w = jax.block_until_ready((z, w))
    sample = slice(0, 64)
    np.testing.assert_allclose(
        np.asarray(compiled["full_kl forward"](z, w))[sample],
        np.asarray(jax.jit(naive_full_kl)(z[sample], w[sample])), rtol=1e-5)

    timed = ["full_kl forward", "one-block row loop", "chunked forward", "fused read",
             "exp pass", "exp pass per row", "full_kl forward+backward", "fused read+write"]
    if not args.skip_naive_timing:
        timed += ["naive forward", "naive forward+backward"]
    t = interleaved_medians(
        {name: (lambda c=compiled[name]: jax.block_until_ready(c(z, w))) for name in timed},
        args.reps,
    )
    print("median times:")
    for name, seconds in t.items():
        print(f"  {name:<26s} {seconds * 1e3:10.1f} ms")
    print("ratios:")
    print(f"  full_kl forward / fused read            = "
          f"{t['full_kl forward'] / t['fused read']:.2f}")
    print(f"  one-block row loop / fused read         = "
          f"{t['one-block row loop'] / t['fused read']:.2f}")
    print(f"  chunked forward / fused read            = "
          f"{t['chunked forward'] / t['fused read']:.2f}")
    print(f"  exp pass / fused read                   = {t['exp pass'] / t['fused read']:.2f}")
    print(f"  exp pass per row / fused read           = "
          f"{t['exp pass per row'] / t['fused read']:.2f}")
    print(f"  full_kl forward / exp pass              = "
          f"{t['full_kl forward'] / t['exp pass']:.2f}")
    print(f"  full_kl fwd+bwd / fused read+write      = "
          f"{t['full_kl forward+backward'] / t['fused read+write']:.2f}")
    if not args.skip_naive_timing:
        print(f"  naive forward / full_kl forward         = "
              f"{t['naive forward'] / t['full_kl forward']:.2f}")
        print(f"  naive fwd+bwd / full_kl fwd+bwd         = "
              f"{t['naive forward+backward'] / t['full_kl forward+backward']:.2f}")


if __name__ == "__main__":
    main()
