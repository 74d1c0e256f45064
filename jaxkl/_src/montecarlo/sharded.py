"""The sharded front-end of the Monte Carlo engine: :func:`jaxkl.sharding.estimate_sharded`.

Device ``d`` of ``D`` takes chunks ``d, d + D, ...`` of the single-device loop (same keys),
so only the order in which chunk moments merge depends on ``D``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import distrax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxkl._src import stats
from jaxkl._src.montecarlo import engine
from jaxkl._src.sharding import assert_on_mesh, check_mesh
from jaxkl._src.validation import check_key, check_positive_int

Array = jax.Array


def _gather_exact(moments: stats.Moments, axes, num_devices: int) -> stats.Moments:
    """Every device's moments, stacked along a new leading axis, on every device.

    A ``psum`` of one-hot slots is an all-gather that the replication checker of
    ``shard_map`` can see through; it is exact, since all addends but one are zero.
    """
    slot = jax.nn.one_hot(jax.lax.axis_index(axes), num_devices, dtype=bool)

    def place(x):
        mask = slot.reshape((num_devices,) + (1,) * x.ndim)
        return jax.lax.psum(jnp.where(mask, x[None], jnp.zeros((), x.dtype)), axes)

    return jax.tree.map(place, moments)


def _block_moments(q, p, key, num_samples, first_chunk, *, features, chunk_size,
                   chunks_per_call, mesh) -> stats.Moments:
    """Moments of chunks ``[first_chunk, first_chunk + D * chunks_per_call)`` (those that
    exist), device ``d`` taking ``first_chunk + d, first_chunk + d + D, ...``; replicated."""
    axes = mesh.axis_names
    num_devices = mesh.size
    dtype = engine.log_ratio_dtype(q, p, key)

    def per_device(dists, key, num_samples, first_chunk):
        q, p = dists if dists else closed
        start = first_chunk + jax.lax.axis_index(axes)
        num_chunks = (num_samples + chunk_size - 1) // chunk_size
        # ceil((num_chunks - start) / D) chunks are left for this device, at most the cap.
        mine = jnp.clip((num_chunks - start + num_devices - 1) // num_devices, 0,
                        chunks_per_call)

        # The running total differs per device ("varying" in shard_map's type system).
        zero = jax.lax.pcast(stats.empty(len(features), dtype), axes, to="varying")
        local = engine.run_chunks(q, p, key, num_samples, features=features,
                                  chunk_size=chunk_size, first=start, stride=num_devices,
                                  count=mine, total=zero)
        everyone = _gather_exact(local, axes, num_devices)
        # The same fold, in device order, on every device: the result is replicated.
        return jax.lax.fori_loop(
            0, num_devices,
            lambda d, total: stats.merge(total, jax.tree.map(lambda x: x[d], everyone)),
            stats.empty(len(features), dtype),
        )

    # Objects that are not pytrees cannot be shard_map arguments; they are closed over.
    pytrees = engine.is_pytree(q) and engine.is_pytree(p)
    closed = None if pytrees else (q, p)
    return jax.shard_map(per_device, mesh=mesh, in_specs=P(), out_specs=P())(
        (q, p) if pytrees else (), key, num_samples, first_chunk)


def _block_step(total, q, p, key_data, num_samples, first_chunk, *, key_impl, **static):
    """``total`` merged with the moments of the block starting at ``first_chunk``."""
    key = key_data if key_impl is None else jax.random.wrap_key_data(key_data, impl=key_impl)
    return stats.merge(total, _block_moments(q, p, key, num_samples, first_chunk, **static))


_BLOCK_STATIC = ("key_impl", "features", "chunk_size", "chunks_per_call", "mesh")
_block_step_jit = jax.jit(_block_step, static_argnames=_BLOCK_STATIC)


# Chunks per device in one compiled call; the host loops over blocks of D times this
# (issued asynchronously, so the devices do not wait for the host). Bounded calls keep
# host memory flat: one multi-device XLA CPU execution was measured to grow RSS with its
# loop's trip count (~46 kB per iteration, returned when the call ends; jax 0.10.2).
DEFAULT_CHUNKS_PER_CALL = 1024


def estimate_sharded(
    q: distrax.DistributionLike,
    p: distrax.DistributionLike,
    *,
    key: jax.Array,
    num_samples: int,
    estimators: Sequence[str | Callable] | Mapping[str, Callable] = ("k1", "k2", "k3"),
    chunk_size: int = engine.DEFAULT_CHUNK_SIZE,
    mesh: Mesh | None = None,
    chunks_per_call: int = DEFAULT_CHUNKS_PER_CALL,
    alpha: float | None = None,
    t: float | None = None,
) -> dict[str, stats.Stats]:
    r""":func:`jaxkl.estimate`, with the chunks spread over the devices of ``mesh``.

    The estimate is the same as :func:`jaxkl.estimate`'s for the same key,

    .. math:: \widehat{KL} = \frac1n \sum_{i<n} k(l_i),\quad
              l_i = \log p(x_i) - \log q(x_i),\ x_i \sim q,

    computed as partial moments (device ``d`` of ``D`` takes chunks ``d, d + D, ...``,
    with the keys ``fold_in(key, chunk)``) merged in a fixed order with the stable update
    of Chan, Golub & LeVeque (1979). Only rounding depends on the number of devices.
    Memory per device is that of one chunk. The host runs ``ceil(chunks / (D *
    chunks_per_call))`` compiled calls, asynchronously, each merging into the running
    moments on the devices.

    Args:
      q: the sampling distribution (distrax or the distrax signature); scalar batch shape.
      p: the other distribution (needs ``log_prob``).
      key: a PRNG key.
      num_samples: total number of samples (a positive int).
      estimators: names or callables, as for :func:`jaxkl.estimate`.
      chunk_size: samples per chunk (per device and step).
      mesh: a :class:`jax.sharding.Mesh`; every axis is used. Default
        :func:`device_mesh` over all devices (of all processes under ``jax.distributed``).
      chunks_per_call: at most this many chunks per device in one compiled call.
      alpha, t: the parameters of ``"amari_alpha"`` / ``"t_power"``, as for
        :func:`jaxkl.estimate`.

    Returns:
      Mapping from estimator name to :class:`jaxkl.Stats`, replicated on every device of
      the mesh.

    Example:
      >>> import distrax, jax, jaxkl
      >>> from jaxkl.sharding import estimate_sharded
      >>> q, p = distrax.Normal(0.0, 1.0), distrax.Normal(0.1, 1.0)
      >>> key = jax.random.key(0)
      >>> sharded = estimate_sharded(q, p, key=key, num_samples=100_000)
      >>> single = jaxkl.estimate(q, p, key=key, num_samples=100_000)
      >>> bool(abs(sharded["k3"].mean - single["k3"].mean) < 1e-6 * single["k3"].mean)
      True
    """
    mesh = check_mesh(mesh)
    key = check_key(key)
    plan = engine.make_plan(q, p, num_samples=num_samples, estimators=estimators,
                            chunk_size=chunk_size, alpha=alpha, t=t)
    features, chunk_size = plan.features, plan.chunk_size
    chunks_per_call = check_positive_int(chunks_per_call, "chunks_per_call")
    q, p = engine.guard_gradients(q), engine.guard_gradients(p)
    # Typed keys travel as their raw data: device_put onto a mesh that spans several
    # processes accepts plain arrays only.
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_data = jax.random.key_data(key) if typed else key
    static = dict(key_impl=jax.random.key_impl(key) if typed else None, features=features,
                  chunk_size=chunk_size, chunks_per_call=chunks_per_call, mesh=mesh)
    pytrees = engine.is_pytree(q) and engine.is_pytree(p)
    dtype = engine.log_ratio_dtype(q, p, key)
    replicated = NamedSharding(mesh, P())
    # Objects that are not pytrees are closed over (one compilation per object).
    dists = (q, p) if pytrees else ()
    total, dists, key_data, n = jax.device_put(
        (stats.empty(len(features), dtype), dists, key_data, plan.num_samples), replicated)
    assert_on_mesh((total, dists, key_data, n), mesh, replicated=True)
    step = (_block_step_jit if pytrees else
            jax.jit(lambda t, k, n, f: _block_step(t, q, p, k, n, f, **static)))
    num_chunks = -(-plan.num_samples // chunk_size)
    for first in range(0, num_chunks, mesh.size * chunks_per_call):
        if pytrees:
            total = step(total, *dists, key_data, n, first, **static)
        else:
            total = step(total, key_data, n, first)
    result = engine.summarize(total, plan)
    assert_on_mesh(result, mesh, replicated=True)
    return result


