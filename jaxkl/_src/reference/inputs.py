"""What every reference method checks and converts first: one distribution per argument
(batch shape ``()``, scalar or vector events), float64 copies of the parameters and of
Gaussian (mixture) components, and tolerances. Parameter validity is checked by
:mod:`jaxkl._src.distributions.checks`, shared with ``estimate`` and ``fit``."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxkl._src.distributions.checks import check_single
from jaxkl._src.distributions.mixtures import mixture_params
from jaxkl._src.reference import cubature


def to_float64(d: distrax.DistributionLike) -> distrax.DistributionLike:
    """The same distribution with float64 parameters (call under ``jax.enable_x64``)."""

    def convert(leaf):
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(leaf, jnp.float64)
        return leaf

    return jax.tree_util.tree_map(convert, d)


def event_dim(d: distrax.DistributionLike, name: str) -> int:
    """The event dimension of a single distribution (1 for scalar events), or a clear error."""
    if not hasattr(d, "event_shape") or not hasattr(d, "batch_shape"):
        raise TypeError(
            f"`{name}` must be a distrax distribution (or have its interface), got "
            f"{type(d).__name__}."
        )
    check_single(d, name, "loop or use mixture_kl_approximations for batches")
    shape = tuple(d.event_shape)
    if len(shape) > 1:
        raise ValueError(f"`{name}` must have scalar or vector events, got {shape}.")
    return shape[0] if shape else 1


def float64_gaussians(d: distrax.DistributionLike) -> cubature.Gaussians:
    """A Gaussian (mixture) as float64 NumPy arrays (parameters checked beforehand)."""
    with jax.enable_x64(True):
        params, _ = mixture_params(to_float64(d))
        log_weights, means, covariances = (np.asarray(a, np.float64) for a in params)
    return cubature.gaussians(log_weights, means, covariances)


def check_tolerances(**tolerances: float) -> None:
    """Raises naming the argument unless each tolerance is a finite real number >= 0."""
    for name, value in tolerances.items():
        if isinstance(value, (str, bytes, bool)) or np.ndim(value) != 0:
            raise TypeError(f"`{name}` must be a real number, got {value!r}.")
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"`{name}` must be finite and >= 0, got {value}.")
