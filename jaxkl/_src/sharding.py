"""Device meshes, placement checks and :func:`sharded_vmap` (see :mod:`jaxkl.sharding`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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


def check_mesh(mesh: Mesh | None) -> Mesh:
    """``mesh`` if it is a Mesh, the default mesh for None; else a TypeError naming it."""
    if mesh is None:
        return device_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh or None, got {type(mesh).__name__}.")
    return mesh


def local_devices(mesh: Mesh) -> tuple[jax.Device, ...]:
    """This process's devices of ``mesh``, in mesh order (what addressable shards list)."""
    return tuple(d for d in mesh.devices.flat if d.process_index == jax.process_index())


def _is_concrete(tree) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def assert_on_mesh(tree: Any, mesh: Mesh, *, replicated: bool) -> None:
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
    local = local_devices(mesh)
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
    mesh = check_mesh(mesh)
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
