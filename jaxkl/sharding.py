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

from jaxkl._src.montecarlo.sharded import DEFAULT_CHUNKS_PER_CALL, estimate_sharded
from jaxkl._src.sharding import AXIS_NAME, assert_on_mesh, device_mesh, sharded_vmap

__all__ = [
    "assert_on_mesh",
    "AXIS_NAME",
    "DEFAULT_CHUNKS_PER_CALL",
    "device_mesh",
    "estimate_sharded",
    "sharded_vmap",
]
