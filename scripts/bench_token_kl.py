"""Benchmark: jaxkl.rl.token_kl + aggregate vs the same formula in plain JAX vs floors.

Issue 18 item 3: k3 with verl's clamps (log-ratio clamp 20, value clamp 10, as verl's
``low_var_kl``) and without the value clamp (jaxkl's default), masked token-mean, in
float32 and bf16, forward and value+grad with respect to ``logp``, at ``[256, 8192]`` and
``[1024, 16384]``. Per dtype, interleaved round by round in one run:

- **jaxkl**: ``aggregate(token_kl(logp, ref, value_clip=c), mask)``, jitted (and its
  ``value_and_grad``);
- **plain JAX**: the same formula written plainly (verl's ``kl_penalty`` + ``agg_loss``
  in ``jnp``): ``l = clip(ref - logp, -20, 20)``, ``k = exp(l) - l - 1``,
  ``clip(k, -10, 10)``, ``sum(k * m) / sum(m)`` with ``m`` the mask as float32, computed
  in float32 (what jaxkl computes in) and differentiated by ``jax.value_and_grad``;
- **floor** (forward): one fused read of the inputs, ``sum(where(mask, logp + ref, 0))``;
- **floor** (value+grad): that scalar and a gradient-sized write in one program,
  ``(sum(where(mask, logp + ref, 0)), where(mask, logp - ref, 0))`` in the inputs' dtype:
  the read+write floor that ``value_and_grad`` cannot go below.

Also (optional, ``--torch``) PyTorch eager, the same formula, in its own block.

Times are medians over interleaved repetitions after a warm-up; ratios are what to
compare, since absolute times on a shared machine are noise.

    python scripts/bench_token_kl.py [--shapes 256x8192 1024x16384] [--dtypes float32 bfloat16]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved_medians

from jaxkl import rl

CLAMPS = {"verl clamps": 10.0, "no value clamp": None}


def plain_loss(value_clip):
    def loss(a, b, m):
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        l = jnp.clip(b - a, -20.0, 20.0)
        k = jnp.exp(l) - l - 1
        if value_clip is not None:
            k = jnp.clip(k, -value_clip, value_clip)
        mf = m.astype(jnp.float32)
        return (k * mf).sum() / mf.sum()

    return loss


def jaxkl_loss(value_clip):
    return lambda a, b, m: rl.aggregate(rl.token_kl(a, b, value_clip=value_clip), m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["256x8192", "1024x16384"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--torch", action="store_true", help="add PyTorch eager (float32)")
    parser.add_argument("--batch", type=int, help="with --length: one shape, batch x length "
                        "(the earlier interface; scripts/device_rl_check.sh uses it)")
    parser.add_argument("--length", type=int)
    args = parser.parse_args()
    if (args.batch is None) != (args.length is None):
        parser.error("--batch and --length go together")
    if args.batch is not None:
        args.shapes = [f"{args.batch}x{args.length}"]
    print(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}, {args.reps} reps "
          "(median), k3, log-ratio clamp 20, token-mean, bool mask (90% valid)")
    for shape_text in args.shapes:
        shape = tuple(int(s) for s in shape_text.split("x"))
        rng = np.random.default_rng(0)
        logp_np = -np.abs(rng.normal(0, 2, shape)).astype(np.float32)
        ref_np = -np.abs(rng.normal(0, 2, shape)).astype(np.float32)
        mask_np = rng.uniform(size=shape) < 0.9
        for dtype_name in args.dtypes:
            dtype = jnp.dtype(dtype_name)
            logp, ref, mask = (jax.device_put(logp_np.astype(dtype)),
                               jax.device_put(ref_np.astype(dtype)), jax.device_put(mask_np))
            run_one(shape, dtype, logp, ref, mask, args.reps)
        if args.torch:
            run_torch(shape, logp_np, ref_np, mask_np, args.reps)


def run_one(shape, dtype, logp, ref, mask, reps):
    functions = {}
    for clamp_name, value_clip in CLAMPS.items():
        for who, make in (("jaxkl", jaxkl_loss), ("plain", plain_loss)):
            f = make(value_clip)
            functions[f"{who} {clamp_name} forward"] = jax.jit(f)
            functions[f"{who} {clamp_name} value+grad"] = jax.jit(jax.value_and_grad(f))
    functions["floor forward"] = jax.jit(lambda a, b, m: jnp.where(m, a + b, 0).sum(
        dtype=jnp.float32))
    functions["floor value+grad"] = jax.jit(
        lambda a, b, m: (jnp.where(m, a + b, 0).sum(dtype=jnp.float32), jnp.where(m, a - b, 0)))

    # jaxkl and plain JAX agree before anything is timed.
    for clamp_name in CLAMPS:
        ours = functions[f"jaxkl {clamp_name} value+grad"](logp, ref, mask)
        plain = functions[f"plain {clamp_name} value+grad"](logp, ref, mask)
        np.testing.assert_allclose(float(ours[0]), float(plain[0]), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(ours[1], np.float32),
                                   np.asarray(plain[1], np.float32), rtol=2e-2, atol=1e-9)

    t = interleaved_medians(
        {name: (lambda f=f: f(logp, ref, mask)) for name, f in functions.items()}, reps)
    print(f"\n{shape} {dtype.name}:")
    for name, seconds in t.items():
        print(f"  {name:<34s} {seconds * 1e3:8.3f} ms")
    print("  ratios:")
    for kind in ("forward", "value+grad"):
        floor = t[f"floor {kind}"]
        for clamp_name in CLAMPS:
            ours, plain = t[f"jaxkl {clamp_name} {kind}"], t[f"plain {clamp_name} {kind}"]
            print(f"    {kind:<10s} {clamp_name:<15s} jaxkl / plain JAX = {ours / plain:5.2f}"
                  f"   jaxkl / floor = {ours / floor:5.2f}   plain / floor = {plain / floor:5.2f}")


def run_torch(shape, logp_np, ref_np, mask_np, reps):
    try:
        import torch
    except ImportError:
        print("torch is not installed: skipping PyTorch (pip install torch==2.13.0).")
        return
    tlogp, tref, tmask = (torch.from_numpy(x) for x in (logp_np, ref_np, mask_np))

    def torch_loss(a):
        kl = torch.clamp(tref - a, min=-20, max=20)
        kld = torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)
        m = tmask.to(kld.dtype)
        return (kld * m).sum() / m.sum()

    def forward():
        with torch.no_grad():
            return torch_loss(tlogp).item()

    def value_and_grad():
        a = tlogp.clone().requires_grad_(True)
        out = torch_loss(a)
        out.backward()
        return out.item(), a.grad

    t = interleaved_medians({"forward": forward, "value+grad": value_and_grad}, reps)
    print(f"\n{shape} float32, torch {torch.__version__} eager, {torch.get_num_threads()} "
          "threads, verl clamps: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in t.items()))


if __name__ == "__main__":
    main()
