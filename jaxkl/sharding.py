r"""Device meshes and sharded execution: Monte Carlo chunks and vmapped sweeps over devices.

Everything here is opt-in and built from JAX's own machinery (``jax.sharding.Mesh``,
``PartitionSpec``, ``jax.shard_map`` and ``jax.lax`` collectives); with one device the
plain functions (:func:`jaxkl.estimate`, ``jax.vmap``) are just as good.

:func:`estimate_sharded` spreads the chunks of :func:`jaxkl.estimate` over the devices of
a mesh: with ``D`` devices, device ``d`` processes chunks ``d, d + D, d + 2D, ...``, chunk
``i`` drawing from ``jax.random.fold_in(key, i)`` exactly as the single-device loop does.
The sample set is therefore the same whatever ``D``; only the order in which the per-chunk
moments are merged (Chan, Golub & LeVeque, 1979) changes, so results agree with
:func:`jaxkl.estimate` to floating-point rounding and the counts agree exactly.

:func:`sharded_vmap` evaluates ``jax.vmap(fn)`` with the batch axis split across devices
(padding the batch to a multiple of the device count, then dropping the padding), for
sweeps of fits or estimates whose members are independent.

Under ``jax.distributed`` (several hosts or processes), :func:`device_mesh` spans the
devices of every process; each process calls the same function with the same arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxkl import montecarlo, stats
from jaxkl._validation import check_key, check_positive_int

Array = jax.Array

AXIS_NAME = "devices"


def device_mesh(devices: Sequence[jax.Device] | None = None, *,
                axis_name: str = AXIS_NAME) -> Mesh:
    """A one-axis :class:`jax.sharding.Mesh` over ``devices`` (default: all of them).

    With ``jax.distributed`` initialised, ``jax.devices()`` lists the devices of every
    process, so the default mesh spans all hosts.

    Args:
      devices: the devices, in mesh order; default ``jax.devices()``.
      axis_name: the name of the mesh axis.

    Returns:
      A mesh of shape ``(len(devices),)``.

    Example:
      >>> import jax
      >>> from jaxkl.sharding import device_mesh
      >>> mesh = device_mesh(jax.devices()[:1])
      >>> mesh.axis_names, mesh.size
      (('devices',), 1)
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("`devices` must contain at least one device.")
    if not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"`devices` must be a sequence of jax.Device, got {devices!r}.")
    if not isinstance(axis_name, str) or not axis_name:
        raise TypeError(f"`axis_name` must be a non-empty string, got {axis_name!r}.")
    return Mesh(np.array(devices), (axis_name,))


def _check_mesh(mesh) -> Mesh:
    if mesh is None:
        return device_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh or None, got {type(mesh).__name__}.")
    return mesh


def _local_devices(mesh: Mesh) -> tuple[jax.Device, ...]:
    """This process's devices of ``mesh``, in mesh order (what addressable shards list)."""
    return tuple(d for d in mesh.devices.flat if d.process_index == jax.process_index())


def _is_concrete(tree) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def assert_on_mesh(tree, mesh: Mesh, *, replicated: bool) -> None:
    """Asserts that every array leaf of ``tree`` lives on ``mesh``'s devices.

    With ``replicated=True`` each leaf must hold a full copy on every device of the mesh;
    otherwise it must be split over all of them (or, on a one-device mesh, sit on that
    device). Traced values (under ``jit``) have no placement yet and are not checked.

    Args:
      tree: a pytree of ``jax.Array``.
      mesh: the mesh the arrays are expected on.
      replicated: whether the leaves must be fully replicated.

    Raises:
      AssertionError: naming the first leaf that is elsewhere.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jax.sharding import NamedSharding, PartitionSpec
      >>> from jaxkl.sharding import assert_on_mesh, device_mesh
      >>> mesh = device_mesh(jax.devices()[:1])
      >>> x = jax.device_put(jnp.ones(4), NamedSharding(mesh, PartitionSpec()))
      >>> assert_on_mesh({"x": x}, mesh, replicated=True)
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if not _is_concrete(leaves):
        return
    local = _local_devices(mesh)
    if mesh.size == 1:
        # chex calls a one-device array "not sharded"; the device is what matters here.
        chex.assert_tree_is_on_device(leaves, device=local[0])
    elif all(x.is_fully_addressable for x in leaves):
        chex.assert_tree_is_sharded(leaves, devices=local)
    # chex cannot inspect arrays spanning processes (jax.distributed); their placement
    # metadata can be checked directly, here as for every array.
    mesh_devices = set(mesh.devices.flat)
    for i, x in enumerate(leaves):
        if x.sharding.addressable_devices != set(local):
            raise AssertionError(f"Leaf {i}'s local shards are not on this process's mesh "
                                 f"devices {local}.")
        if x.sharding.device_set != mesh_devices:
            raise AssertionError(f"Leaf {i} lives on {x.sharding.device_set}, not on the mesh.")
        if replicated and not x.sharding.is_fully_replicated:
            raise AssertionError(f"Leaf {i} is not replicated over the mesh ({x.sharding}).")


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
    dtype = jax.eval_shape(lambda: montecarlo.sample_log_ratio(q, p, key, 1)).dtype

    def per_device(dists, key, num_samples, first_chunk):
        q, p = dists if dists else closed
        start = first_chunk + jax.lax.axis_index(axes)
        num_chunks = (num_samples + chunk_size - 1) // chunk_size
        # ceil((num_chunks - start) / D) chunks are left for this device, at most the cap.
        mine = jnp.clip((num_chunks - start + num_devices - 1) // num_devices, 0,
                        chunks_per_call)

        # The running total differs per device ("varying" in shard_map's type system).
        zero = jax.lax.pcast(stats.empty(len(features), dtype), axes, to="varying")
        local = montecarlo.accumulate_chunks(q, p, features, key, num_samples, chunk_size,
                                             first=start, stride=num_devices, count=mine,
                                             total=zero)
        everyone = _gather_exact(local, axes, num_devices)
        # The same fold, in device order, on every device: the result is replicated.
        return jax.lax.fori_loop(
            0, num_devices,
            lambda d, total: stats.merge(total, jax.tree.map(lambda x: x[d], everyone)),
            stats.empty(len(features), dtype),
        )

    # Objects that are not pytrees cannot be shard_map arguments; they are closed over.
    pytrees = montecarlo._is_pytree(q) and montecarlo._is_pytree(p)
    closed = None if pytrees else (q, p)
    return jax.shard_map(per_device, mesh=mesh, in_specs=P(), out_specs=P())(
        (q, p) if pytrees else (), key, num_samples, first_chunk)


def _block_step(total, q, p, key_data, num_samples, first_chunk, *, key_impl, **static):
    """``total`` merged with the moments of the block starting at ``first_chunk``."""
    key = key_data if key_impl is None else jax.random.wrap_key_data(key_data, impl=key_impl)
    return stats.merge(total, _block_moments(q, p, key, num_samples, first_chunk, **static))


_BLOCK_STATIC = ("key_impl", "features", "chunk_size", "chunks_per_call", "mesh")
_block_step_jit = jax.jit(_block_step, static_argnames=_BLOCK_STATIC)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _summaries(moments, names, where_items):
    return montecarlo.summaries(moments, names, dict(where_items))

# Chunks per device in one compiled call; the host loops over blocks of D times this
# (issued asynchronously, so the devices do not wait for the host). Bounded calls keep
# host memory flat: one multi-device XLA CPU execution was measured to grow RSS with its
# loop's trip count (~46 kB per iteration, returned when the call ends; jax 0.10.2).
DEFAULT_CHUNKS_PER_CALL = 1024


def estimate_sharded(
    q,
    p,
    *,
    key,
    num_samples: int,
    estimators: Sequence[str | Callable] | Mapping[str, Callable] = ("k1", "k2", "k3"),
    chunk_size: int = montecarlo.DEFAULT_CHUNK_SIZE,
    mesh: Mesh | None = None,
    chunks_per_call: int = DEFAULT_CHUNKS_PER_CALL,
    alpha=None,
    t=None,
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
    mesh = _check_mesh(mesh)
    key = check_key(key)
    num_samples, names, features, where, chunk_size = montecarlo.prepare(
        q, p, num_samples, estimators, chunk_size, {"alpha": alpha, "t": t}
    )
    chunks_per_call = check_positive_int(chunks_per_call, "chunks_per_call")
    q, p = montecarlo.guard_gradients(q), montecarlo.guard_gradients(p)
    # Typed keys travel as their raw data: device_put onto a mesh that spans several
    # processes accepts plain arrays only.
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_data = jax.random.key_data(key) if typed else key
    static = dict(key_impl=jax.random.key_impl(key) if typed else None, features=features,
                  chunk_size=chunk_size, chunks_per_call=chunks_per_call, mesh=mesh)
    pytrees = montecarlo._is_pytree(q) and montecarlo._is_pytree(p)
    dtype = jax.eval_shape(lambda: montecarlo.sample_log_ratio(q, p, key, 1)).dtype
    replicated = NamedSharding(mesh, P())
    # Objects that are not pytrees are closed over (one compilation per object).
    dists = (q, p) if pytrees else ()
    total, dists, key_data, n = jax.device_put(
        (stats.empty(len(features), dtype), dists, key_data, num_samples), replicated)
    assert_on_mesh((total, dists, key_data, n), mesh, replicated=True)
    step = (_block_step_jit if pytrees else
            jax.jit(lambda t, k, n, f: _block_step(t, q, p, k, n, f, **static)))
    num_chunks = -(-num_samples // chunk_size)
    for first in range(0, num_chunks, mesh.size * chunks_per_call):
        if pytrees:
            total = step(total, *dists, key_data, n, first, **static)
        else:
            total = step(total, key_data, n, first)
    result = _summaries(total, names, tuple(where.items()))
    assert_on_mesh(result, mesh, replicated=True)
    return result


def sharded_vmap(fn: Callable, *, mesh: Mesh | None = None,
                 in_axes: int | Sequence[int | None] = 0) -> Callable:
    """``jax.vmap(fn, in_axes)`` with the batch axis split across the devices of ``mesh``.

    The returned function pads the batch to a multiple of the device count ``D`` (by
    repeating the last member, so padding never feeds ``fn`` values it has not seen),
    runs ``jax.vmap(fn)`` on each device's slice inside ``jax.shard_map`` (no
    communication between members), and drops the padding. Outputs are those of
    ``jax.vmap(fn, in_axes)(*args)``, with the batch as leading axis.

    Args:
      fn: the per-member function of positional array arguments (pytrees allowed).
      mesh: a :class:`jax.sharding.Mesh`; the batch is split over all its axes. Default
        :func:`device_mesh` over all devices.
      in_axes: ``0`` (every argument batched along its leading axis), or one entry per
        positional argument: ``0`` (batched) or ``None`` (shared by all members,
        replicated on every device).

    Returns:
      A function with the signature of ``fn`` whose arguments carry a batch axis.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxkl.sharding import sharded_vmap
      >>> sweep = sharded_vmap(lambda mu, s: mu**2 / (2 * s**2), in_axes=(0, None))
      >>> [round(float(v), 3) for v in sweep(jnp.array([0.1, 1.0, 2.0]), jnp.array(1.0))]
      [0.005, 0.5, 2.0]
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be callable, got {type(fn).__name__}.")
    mesh = _check_mesh(mesh)
    is_zero = lambda a: type(a) is int and a == 0
    if not (is_zero(in_axes) or (isinstance(in_axes, (tuple, list))
                                 and all(a is None or is_zero(a) for a in in_axes)
                                 and any(is_zero(a) for a in in_axes))):
        raise ValueError("`in_axes` must be 0 or a sequence of 0 (batched) and None "
                         f"(shared) with at least one 0, got {in_axes!r}.")
    batch = P(mesh.axis_names)
    num_devices = mesh.size
    compiled = {}

    def run(*args):
        axes = (0,) * len(args) if is_zero(in_axes) else tuple(in_axes)
        if len(axes) != len(args):
            raise ValueError(f"`in_axes` has {len(axes)} entries but the function got "
                             f"{len(args)} positional arguments.")
        sizes = {np.shape(x)[0] if np.ndim(x) else None
                 for a, arg in zip(axes, args, strict=True) if a == 0
                 for x in jax.tree_util.tree_leaves(arg)}
        if None in sizes or len(sizes) != 1:
            raise ValueError("Batched arguments must all have the same leading axis size; "
                             f"got sizes {sorted(s for s in sizes if s is not None)}"
                             f"{' and scalars' if None in sizes else ''}.")
        (size,) = sizes
        if size == 0:
            raise ValueError("Batched arguments have an empty leading axis.")
        padded_size = -(-size // num_devices) * num_devices
        rows = np.minimum(np.arange(padded_size), size - 1)
        padded = args if padded_size == size else tuple(
            jax.tree.map(lambda x: jnp.asarray(x)[rows], arg) if a == 0 else arg
            for a, arg in zip(axes, args, strict=True)
        )
        specs = tuple(batch if a == 0 else P() for a in axes)
        placed = jax.device_put(padded, tuple(NamedSharding(mesh, s) for s in specs))
        assert_on_mesh([x for a, x in zip(axes, placed, strict=True) if a == 0], mesh,
                       replicated=num_devices == 1)
        if axes not in compiled:
            # Members never communicate, so shard_map's replication types have nothing
            # to check, and fn's loops may start from constants (which the check rejects).
            compiled[axes] = jax.jit(jax.shard_map(
                jax.vmap(fn, in_axes=axes), mesh=mesh, in_specs=specs, out_specs=batch,
                check_vma=False))
        out = compiled[axes](*placed)
        assert_on_mesh(out, mesh, replicated=num_devices == 1)
        return jax.tree.map(lambda y: y[:size], out)

    return run
