"""Benchmark: jaxkl.fit against blackjax, TFP-on-JAX and numpyro on the same work (issue 18.2).

The work, identical for every contender: a reparameterised reverse-KL fit of
``q = N(m, exp(rho)**2)`` (blackjax's mean-field parametrisation; jaxkl's
``gaussian(positivity="exp")``) to ``p = 0.5 N(-d/2, 1) + 0.5 N(d/2, 1)``, plain
``optax.adam(0.05)``, ``--steps`` steps of ``--samples`` draws each, starting from
``m = m0, rho = 0``, float32. Per step: ``--samples`` standard normal draws, as many
evaluations of log p and of log q, one gradient, one Adam update; every contender keeps the
per-step loss history (so none of it is dead code). Contenders:

- ``jaxkl.fit``: the public call, steady state: p and the start built once, then ``fit``
  called again (its jit cache hit; its Python argument checks included). Inside the
  batched row it is traced into the caller's ``jit``;
- ``jaxkl loss, bare scan``: ``jaxkl.fitting.make_loss`` in a hand-written ``lax.scan`` of
  optax updates (no non-finite guards);
- ``floor``: the same math written out in ``jax.numpy`` (no distrax, no checks) - what the
  objective costs without any library;
- ``blackjax``: ``blackjax.meanfield_vi`` step in a ``lax.scan`` (``stl_estimator=False``,
  so it is the same estimator; log p is a ``logsumexp`` of two normals, written in jnp);
- ``tfp``: ``tfp.vi.monte_carlo_variational_loss`` with ``tfd.Normal`` q and a
  ``tfd.MixtureSameFamily`` p in a ``lax.scan`` of optax updates;
- ``numpyro``: ``SVI(model, guide, optax adam, Trace_ELBO(num_particles, vectorized))``,
  ``svi.update`` in a ``lax.scan`` (``numpyro.optim.optax_to_numpyro``).

Rows: ``single`` - one jitted fit at d = 4; ``batched`` - ``jit(vmap(vmap(fit)))`` over
``--separations`` values of d in [0, 10] and ``--starts`` starting locations each.
Every contender is timed once per round, interleaved (scripts/_timing.py); the medians and the
ratios to blackjax are printed. The peers live in a separate environment (never CI's)::

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -c constraints.txt -e . blackjax numpyro tfp-nightly
    timeout 900 .venv-bench/bin/python scripts/bench_fit.py [--steps 2000] [--samples 64]
        [--separations 64] [--starts 16] [--repeats 15] [--batched-repeats 3]

A peer that is not installed is skipped with a message.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import platform

import jax
import jax.numpy as jnp
import optax
from _timing import interleaved_medians, time_once

from jaxkl import families
from jaxkl.fitting import fit, make_loss
from jaxkl.mixtures import gaussian_mixture_1d

LEARNING_RATE = 0.05
FAMILY = families.gaussian(positivity="exp")
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def jaxkl_target(d):
    return gaussian_mixture_1d(jnp.stack([-d / 2, d / 2]), jnp.ones(2), weights=jnp.full(2, 0.5))


def jnp_log_p(x, d):
    """log p for the peers that take a log density: the mixture in jax.numpy."""
    components = jnp.stack([-0.5 * (x + d / 2) ** 2, -0.5 * (x - d / 2) ** 2], axis=-1)
    return jax.nn.logsumexp(components, axis=-1) + math.log(0.5) - HALF_LOG_2PI


def _scan(step, carry, key, steps):
    return jax.lax.scan(step, carry, jax.random.split(key, steps))


def _optax_scan(loss, params, optimizer, key, steps, has_aux=False):
    """``steps`` optimiser updates of ``params`` on ``loss(params, k)``, one key per step;
    returns the final params and the loss of each step (its auxiliary value with
    ``has_aux``, which is how jaxkl's ``make_loss`` reports it)."""

    def step(carry, k):
        params, state = carry
        out, grads = jax.value_and_grad(loss, has_aux=has_aux)(params, k)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), out[1] if has_aux else out

    (params, _), losses = _scan(step, (params, optimizer.init(params)), key, steps)
    return params, losses


# Every contender: fn(d, key, m0) -> (m, rho, losses[steps]).


def make_jaxkl_fit(steps, samples, optimizer):
    def run(d, key, m0):
        init = {"loc": m0, "raw_scale": jnp.zeros_like(m0)}
        result = fit(jaxkl_target(d), FAMILY, divergence="reverse_kl", key=key,
                     num_steps=steps, num_samples=samples, optimizer=optimizer,
                     init_params=init)
        return result.params["loc"], result.params["raw_scale"], result.losses

    return run


def make_jaxkl_bare(steps, samples, optimizer):
    def run(d, key, m0):
        loss = make_loss(jaxkl_target(d), FAMILY, divergence="reverse_kl", num_samples=samples)
        params, losses = _optax_scan(loss, {"loc": m0, "raw_scale": jnp.zeros_like(m0)},
                                     optimizer, key, steps, has_aux=True)
        return params["loc"], params["raw_scale"], losses

    return run


def make_floor(steps, samples, optimizer):
    def loss(params, k, d):
        m, rho = params
        eps = jax.random.normal(k, (samples,))
        x = m + jnp.exp(rho) * eps
        log_q = -0.5 * eps**2 - rho - HALF_LOG_2PI  # log q(x), x = m + e^rho eps
        return jnp.mean(log_q - jnp_log_p(x, d))

    def run(d, key, m0):
        params, losses = _optax_scan(lambda params, k: loss(params, k, d),
                                     (m0, jnp.zeros_like(m0)), optimizer, key, steps)
        return params[0], params[1], losses

    return run


def make_blackjax(steps, samples, optimizer):
    import blackjax
    from blackjax.vi.meanfield_vi import MFVIState

    def run(d, key, m0):
        vi = blackjax.meanfield_vi(lambda x: jnp_log_p(x, d), optimizer, num_samples=samples,
                                   stl_estimator=False)
        rho0 = jnp.zeros_like(m0)
        state = MFVIState(m0, rho0, optimizer.init((m0, rho0)))

        def step(state, k):
            state, info = vi.step(k, state)
            return state, info.elbo

        state, losses = _scan(step, state, key, steps)
        return state.mu, state.rho, losses

    return run


def make_tfp(steps, samples, optimizer):
    from tensorflow_probability.substrates import jax as tfp

    tfd = tfp.distributions

    def run(d, key, m0):
        p = tfd.MixtureSameFamily(tfd.Categorical(probs=jnp.full(2, 0.5)),
                                  tfd.Normal(jnp.stack([-d / 2, d / 2]), jnp.ones(2)))

        def loss(params, k):
            q = tfd.Normal(params[0], jnp.exp(params[1]))
            return tfp.vi.monte_carlo_variational_loss(p.log_prob, q, sample_size=samples,
                                                       seed=k)

        params, losses = _optax_scan(loss, (m0, jnp.zeros_like(m0)), optimizer, key, steps)
        return params[0], params[1], losses

    return run


def make_numpyro(steps, samples, optimizer):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import optax_to_numpyro

    def run(d, key, m0):
        def model():
            numpyro.sample("x", dist.MixtureSameFamily(
                dist.Categorical(probs=jnp.full(2, 0.5)),
                dist.Normal(jnp.stack([-d / 2, d / 2]), jnp.ones(2))))

        def guide():
            m = numpyro.param("m", m0)
            rho = numpyro.param("rho", jnp.zeros_like(m0))
            numpyro.sample("x", dist.Normal(m, jnp.exp(rho)))

        svi = SVI(model, guide, optax_to_numpyro(optimizer),
                  Trace_ELBO(num_particles=samples, vectorize_particles=True))
        init_key, loop_key = jax.random.split(key)
        state = svi.init(init_key)

        def step(state, _):
            state, value = svi.update(state)
            return state, value

        state, losses = jax.lax.scan(step, state, None, length=steps)
        params = svi.get_params(state)
        return params["m"], params["rho"], losses

    return run


PEERS = {"blackjax": ("blackjax", make_blackjax), "tfp": ("tfp-nightly", make_tfp),
         "numpyro": ("numpyro", make_numpyro)}


def contenders(steps, samples):
    optimizer = optax.adam(LEARNING_RATE)
    out = {"jaxkl.fit": make_jaxkl_fit(steps, samples, optimizer),
           "jaxkl loss, bare scan": make_jaxkl_bare(steps, samples, optimizer),
           "floor (jnp, no distrax)": make_floor(steps, samples, optimizer)}
    versions = {"jax": importlib.metadata.version("jax")}
    for name, (dist_name, make) in PEERS.items():
        try:
            out[name] = make(steps, samples, optimizer)
            versions[name] = importlib.metadata.version(dist_name)
        except ImportError as e:
            print(f"skipping {name}: {e}")
    return out, versions


def report(title, medians, reference="blackjax"):
    print(f"\n{title}")
    base = medians.get(reference)
    for name, seconds in medians.items():
        ratio = f"{seconds / base:6.2f}x {reference}" if base else ""
        print(f"  {name:26s} {seconds * 1e3:10.2f} ms  {ratio}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--separations", type=int, default=64)
    parser.add_argument("--starts", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batched-repeats", type=int, default=3)
    parser.add_argument("--skip-batched", action="store_true")
    args = parser.parse_args()
    fns, versions = contenders(args.steps, args.samples)
    print(f"versions: {versions}; {platform.machine()}, {jax.devices()[0].platform}")
    print(f"work: {args.steps} steps x {args.samples} samples, adam({LEARNING_RATE}), float32")

    # Single fit: jaxkl.fit is called as users call it (its own jit cache), the others jitted.
    d, key, m0 = jnp.float32(4.0), jax.random.key(0), jnp.float32(0.5)
    # The public call as a user repeats it: p and the start built once, fit called again.
    p, start = jaxkl_target(d), {"loc": m0, "raw_scale": jnp.zeros_like(m0)}
    optimizer = optax.adam(LEARNING_RATE)
    single = {"jaxkl.fit": lambda: fit(p, FAMILY, divergence="reverse_kl", key=key,
                                       num_steps=args.steps, num_samples=args.samples,
                                       optimizer=optimizer, init_params=start).losses}
    for name, fn in fns.items():
        label = "jaxkl.fit in caller's jit" if name == "jaxkl.fit" else name
        jitted = jax.jit(fn)
        single[label] = (lambda call=jitted: call(d, key, m0)[-1])
    tails = {name: round(float(jnp.mean(call()[-100:])), 3) for name, call in single.items()}
    print("mean loss over the last 100 steps at d=4 (the same fit by each):", tails)
    report(f"single fit (median of {args.repeats} interleaved rounds)",
           interleaved_medians(single, args.repeats))

    if args.skip_batched:
        return
    ds = jnp.linspace(0.0, 10.0, args.separations)
    keys = jax.random.split(jax.random.key(1), (args.separations, args.starts))
    m0s = jax.random.uniform(jax.random.key(2), (args.separations, args.starts),
                             minval=-3.0, maxval=3.0)
    batched = {}
    for name, fn in fns.items():
        inner = jax.vmap(fn, in_axes=(None, 0, 0))
        compiled = jax.jit(jax.vmap(inner)).lower(ds, keys, m0s).compile()
        batched[name] = (lambda compiled=compiled: compiled(ds, keys, m0s))
        time_once(batched[name])
    report(f"batched: {args.separations} separations x {args.starts} starts, one jit(vmap(vmap)) "
           f"call (median of {args.batched_repeats} interleaved rounds)",
           interleaved_medians(batched, args.batched_repeats, warmup=False))


if __name__ == "__main__":
    main()
