"""Subprocess side of tests/test_sharding.py (run with several devices or processes).

``python tests/_sharding_worker.py devices`` expects
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and prints one JSON object with
the sharded and the single-device results side by side; the test asserts on them, so
failures show up in pytest with their numbers.

``python tests/_sharding_worker.py distributed PORT PROCESS_ID`` is one of two processes
that join ``jax.distributed`` on 127.0.0.1:PORT (one CPU device each, gloo collectives)
and compute one sharded estimate. Exit status 3 means the platform cannot do it; the
first line of stderr then says why.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

N_SAMPLES = 100_003  # not a multiple of CHUNK * devices, for any device count used
CHUNK = 4096
ESTIMATORS = ("k1", "k2", "k3", "cv*", "forward")


def _stats(result) -> dict:
    return {name: {"mean": float(s.mean), "std": float(s.std), "stderr": float(s.stderr),
                   "count": int(s.count)} for name, s in result.items()}


def _pair():
    import distrax

    return distrax.Normal(0.0, 1.0), distrax.Normal(0.7, 1.3)


class _NotAPytree:
    """Has the distrax signature but is not a pytree (estimate closes over it)."""

    def __init__(self, loc):
        import distrax

        self._d = distrax.Normal(loc, 1.0)

    def sample(self, *, seed, sample_shape):
        return self._d.sample(seed=seed, sample_shape=sample_shape)

    def log_prob(self, x):
        return self._d.log_prob(x)


def _fit_sweep_member(separation, key, learning_rate):
    """Reverse-KL fit of a Gaussian to 0.5 N(-s, 1) + 0.5 N(s, 1): Adam under lax.scan."""
    import distrax
    import jax.numpy as jnp
    import optax

    target = distrax.MixtureSameFamily(
        distrax.Categorical(logits=jnp.zeros(2)),
        distrax.Normal(jnp.stack([-separation, separation]), jnp.ones(2)),
    )
    optimizer = optax.adam(learning_rate)

    def loss(params, step_key):
        eps = jax.random.normal(step_key, (32,))
        scale = jax.nn.softplus(params["raw_scale"])
        x = params["loc"] + scale * eps
        return jnp.mean(distrax.Normal(params["loc"], scale).log_prob(x) - target.log_prob(x))

    def step(carry, step_key):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params, step_key)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), value

    init_key, loop_key = jax.random.split(key)
    params = {"loc": jax.random.normal(init_key, ()), "raw_scale": jnp.zeros(())}
    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)),
                                       jax.random.split(loop_key, 150))
    return params, losses


def _library_fit_sweep(mesh):
    """jaxkl.fit (forward KL, Gaussian family) over 3 separations: sharded and vmapped."""
    import jax.numpy as jnp

    import jaxkl
    from jaxkl import families
    from jaxkl.mixtures import gaussian_mixture_1d
    from jaxkl.sharding import sharded_vmap

    def member(separation, key):
        p = gaussian_mixture_1d(jnp.stack([-separation, separation]), jnp.ones(2))
        result = jaxkl.fit(p, families.gaussian(), divergence="forward_kl", key=key,
                           num_steps=100, num_samples=64)
        return result.params, result.losses

    separations = jnp.array([0.0, 1.5, 3.0])
    keys = jax.random.split(jax.random.key(3), 3)
    as_lists = lambda tree: jax.tree.map(lambda x: np.asarray(x).tolist(), tree)
    return (as_lists(sharded_vmap(member, mesh=mesh)(separations, keys)),
            as_lists(jax.vmap(member)(separations, keys)))


def _placement_errors(mesh8) -> dict:
    """Whether assert_on_mesh rejects arrays that are not where it is told they are."""
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxkl.sharding import assert_on_mesh

    def rejects(tree, mesh, replicated):
        try:
            assert_on_mesh(tree, mesh, replicated=replicated)
        except AssertionError:
            return True
        return False

    split = jax.device_put(jnp.arange(8.0), NamedSharding(mesh8, P("devices")))
    copied = jax.device_put(jnp.arange(8.0), NamedSharding(mesh8, P()))
    elsewhere = jax.device_put(jnp.arange(8.0), jax.devices()[1])
    from jaxkl.sharding import device_mesh

    return {
        "split_as_replicated": rejects(split, mesh8, True),
        "split_as_split": rejects(split, mesh8, False),
        "copied_as_replicated": rejects(copied, mesh8, True),
        "one_device_on_mesh8": rejects(elsewhere, mesh8, False),
        "wrong_single_device": rejects(elsewhere, device_mesh(jax.devices()[:1]), True),
    }


def devices_mode() -> dict:
    import jax.numpy as jnp
    from jax.sharding import Mesh

    import jaxkl
    from jaxkl.sharding import device_mesh, estimate_sharded, sharded_vmap

    assert jax.device_count() == 8, jax.devices()
    out: dict = {"device_count": jax.device_count()}
    q, p = _pair()
    key = jax.random.key(11)
    meshes = {str(d): device_mesh(jax.devices()[:d]) for d in (1, 2, 3, 8)}
    meshes["2x4"] = Mesh(np.array(jax.devices()).reshape(2, 4), ("hosts", "chips"))

    out["single"] = _stats(jaxkl.estimate(q, p, key=key, num_samples=N_SAMPLES,
                                          chunk_size=CHUNK, estimators=ESTIMATORS))
    out["sharded"], out["replicated"] = {}, {}
    # 25 chunks; a small chunks_per_call makes the host loop over several blocks.
    for name, chunks_per_call in (("1", 1024), ("2", 1024), ("8", 1024), ("2x4", 2), ("3", 1)):
        mesh = meshes[name]
        res = estimate_sharded(q, p, key=key, num_samples=N_SAMPLES, chunk_size=CHUNK,
                               estimators=ESTIMATORS, mesh=mesh,
                               chunks_per_call=chunks_per_call)
        out["sharded"][name] = _stats(res)
        out["replicated"][name] = all(
            s.mean.sharding.is_fully_replicated and len(s.mean.sharding.device_set) == mesh.size
            for s in res.values())

    # Fewer chunks (2) than devices (8): six devices contribute empty moments.
    few = dict(key=key, num_samples=5000, chunk_size=CHUNK, estimators=ESTIMATORS)
    out["few_single"] = _stats(jaxkl.estimate(q, p, **few))
    out["few_sharded"] = _stats(estimate_sharded(q, p, mesh=meshes["8"], **few))

    # A raw uint32 key, a callable estimator and a q that is not a pytree.
    raw_key = jax.random.PRNGKey(5)
    odd = dict(key=raw_key, num_samples=50_001, chunk_size=1000,
               estimators={"sq": lambda log_ratio: log_ratio * log_ratio})
    q_odd = _NotAPytree(0.3)
    out["odd_single"] = _stats(jaxkl.estimate(q_odd, p, **odd))
    out["odd_sharded"] = _stats(estimate_sharded(q_odd, p, mesh=meshes["8"], **odd))

    # Under jit (placement checks skip tracers) the estimate is the same.
    jitted = jax.jit(lambda k: estimate_sharded(q, p, key=k, num_samples=N_SAMPLES,
                                                chunk_size=CHUNK, mesh=meshes["8"]))
    out["jitted"] = _stats(jitted(key))

    with jax.enable_x64(True):
        q64, p64 = _pair()
        x64 = dict(key=key, num_samples=N_SAMPLES, chunk_size=CHUNK, estimators=("k1", "k3"))
        single = jaxkl.estimate(q64, p64, **x64)
        sharded = estimate_sharded(q64, p64, mesh=meshes["8"], **x64)
        out["x64_dtype"] = str(sharded["k3"].mean.dtype)
        out["x64_single"], out["x64_sharded"] = _stats(single), _stats(sharded)
    out["kl_closed_form"] = float(q.kl_divergence(p))

    # A sweep of 5 fits (padded to 8 members), batched pytrees and keys, a shared scalar.
    separations = jnp.linspace(0.0, 3.0, 5)
    keys = jax.random.split(jax.random.key(1), 5)
    lr = jnp.asarray(0.05)
    reference = jax.vmap(_fit_sweep_member, in_axes=(0, 0, None))(separations, keys, lr)
    out["sweep_reference"] = jax.tree.map(lambda x: np.asarray(x).tolist(), reference)
    out["sweep"] = {}
    for name in ("8", "2x4"):
        sweep = sharded_vmap(_fit_sweep_member, mesh=meshes[name], in_axes=(0, 0, None))
        out["sweep"][name] = jax.tree.map(lambda x: np.asarray(x).tolist(),
                                          sweep(separations, keys, lr))
    jitted_sweep = jax.jit(sharded_vmap(_fit_sweep_member, mesh=meshes["8"],
                                        in_axes=(0, 0, None)))
    out["sweep_jitted"] = jax.tree.map(lambda x: np.asarray(x).tolist(),
                                       jitted_sweep(separations, keys, lr))

    # The library's own separation sweep: jaxkl.fit against mixture targets.
    out["fit_sweep"], out["fit_sweep_reference"] = _library_fit_sweep(meshes["8"])

    # A sweep of whole estimates, one per key, each on its own device.
    estimate_keys = jax.random.split(jax.random.key(2), 6)
    one = lambda k: jaxkl.estimate(q, p, key=k, num_samples=20_000, chunk_size=4096)["k3"].mean
    out["estimate_sweep"] = np.asarray(
        sharded_vmap(one, mesh=meshes["8"])(estimate_keys)).tolist()
    out["estimate_loop"] = [float(one(k)) for k in estimate_keys]

    out["placement_rejected"] = _placement_errors(meshes["8"])
    return out


def distributed_mode(port: int, process_id: int) -> dict:
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception as e:  # the option or its value is missing in this jaxlib
        print(f"gloo CPU collectives unavailable: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(3)
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=process_id, initialization_timeout=60)
    import jaxkl
    from jaxkl.sharding import estimate_sharded

    q, p = _pair()
    key = jax.random.key(11)
    kwargs = dict(key=key, num_samples=N_SAMPLES, chunk_size=CHUNK, estimators=ESTIMATORS)
    sharded = estimate_sharded(q, p, **kwargs)
    out = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "sharded": _stats(sharded),
        # On this process's own device only, for comparison.
        "single": _stats(jaxkl.estimate(q, p, **kwargs)),
    }
    jax.distributed.shutdown()
    return out


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "devices":
        result = devices_mode()
    elif mode == "distributed":
        result = distributed_mode(int(sys.argv[2]), int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("RESULT " + json.dumps(result))
