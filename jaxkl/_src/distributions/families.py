"""Implementation of :mod:`jaxkl.families` (its module docstring has the overview)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxkl._src import linalg
from jaxkl._src.distributions.mixtures import GaussianMixture, MultivariateNormalTri
from jaxkl._src.validation import (
    check_choice,
    check_numeric_values,
    check_positive_int,
    check_positive_values,
    check_weight_values,
    compute_dtype,
    concrete_value,
)

Params = dict[str, jax.Array]

_POSITIVITY = ("softplus", "exp")


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True, eq=False)
class Family:
    """A parametric family of distributions q over an unconstrained parameter pytree.

    Attributes:
      name: a short description, e.g. ``"full_covariance_gaussian(dim=2)"``.
      event_shape: the shape of one sample of q (``()`` for scalar families).
      init: ``init(key) -> params``, a random starting point.
      distribution: ``distribution(params) -> distrax.Distribution``.
      encode: ``encode(**values) -> params``, the inverse of ``distribution`` on the
        distribution's natural values (see each constructor).
      config: the constructor and its validated arguments (``None`` for a family built
        by hand). Two families with the same ``config`` are equal and hash alike, so a
        family built twice with the same arguments reuses compiled code (it is a static
        argument under ``jit``); a hand-built family equals only itself.
    """

    name: str
    event_shape: tuple[int, ...]
    init: Callable[[jax.Array], Params]
    distribution: Callable[[Params], distrax.Distribution]
    encode: Callable[..., Params]
    config: tuple | None = None

    def __eq__(self, other) -> bool:
        if not isinstance(other, Family):
            return NotImplemented
        if self.config is None or other.config is None:
            return self is other
        return self.config == other.config

    def __hash__(self) -> int:
        return id(self) if self.config is None else hash(self.config)

    def __repr__(self) -> str:
        return f"Family({self.name})"


def _as_float(x) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x.astype(compute_dtype(x))


def _float_params(params: Params) -> Params:
    """Parameters in float32 at least (bf16 parameters give a float32 distribution)."""
    return {name: _as_float(value) for name, value in params.items()}


def _positive(positivity: str) -> tuple[Callable, Callable]:
    """(forward, inverse) maps between raw reals and positive scales."""
    if positivity == "exp":
        return jnp.exp, jnp.log

    def inverse_softplus(y):
        # log(expm1(y)) written so that it neither overflows for large y nor loses
        # digits for small y.
        return y + jnp.log(-jnp.expm1(-y))

    return jax.nn.softplus, inverse_softplus


def _real(value, name: str) -> float:
    if isinstance(value, (str, bytes, bool)):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}.") from None


def _check_common(positivity, loc_init_std, scale_init) -> tuple[float, float]:
    check_choice(positivity, "positivity", _POSITIVITY)
    loc_init_std, scale_init = _real(loc_init_std, "loc_init_std"), _real(scale_init, "scale_init")
    if not (loc_init_std >= 0 and math.isfinite(loc_init_std)):
        raise ValueError(f"`loc_init_std` must be >= 0 and finite, got {loc_init_std}.")
    if not (scale_init > 0 and math.isfinite(scale_init)):
        raise ValueError(f"`scale_init` must be > 0 and finite, got {scale_init}.")
    return loc_init_std, scale_init


def _check_finite_values(x, name):
    """Checks concrete values; under a trace values are unknown and only shapes are checked."""
    values = check_numeric_values(x, name)
    if values is not None and not np.all(np.isfinite(values)):
        raise ValueError(f"`{name}` must be finite, got {values}.")


def gaussian(
    *, positivity: str = "softplus", loc_init_std: float = 1.0, scale_init: float = 1.0
) -> Family:
    r"""The 1-D Gaussian family ``q = N(loc, scale**2)`` (scalar events).

    Parameters ``{"loc": (), "raw_scale": ()}`` with ``scale = softplus(raw_scale)`` (or
    ``exp``). ``encode(loc=..., scale=...)`` inverts it.

    Reference: Kucukelbir et al., "Automatic Differentiation Variational Inference",
    JMLR 2017 (unconstrained parametrisation).

    Args:
      positivity: ``"softplus"`` or ``"exp"``, the map from ``raw_scale`` to ``scale``.
      loc_init_std: ``init`` draws ``loc ~ N(0, loc_init_std**2)``.
      scale_init: ``init`` sets ``scale = scale_init``.

    Returns:
      A :class:`Family` with ``event_shape == ()``.

    Example:
      >>> import jaxkl.families as F
      >>> family = F.gaussian()
      >>> q = family.distribution(family.encode(loc=1.0, scale=2.0))
      >>> round(float(q.stddev()), 4)
      2.0
    """
    loc_init_std, scale_init = _check_common(positivity, loc_init_std, scale_init)
    to_scale, from_scale = _positive(positivity)

    def encode(*, loc, scale) -> Params:
        _check_finite_values(loc, "loc")
        check_positive_values(scale, "scale")
        loc, scale = _as_float(loc), _as_float(scale)
        return {"loc": loc, "raw_scale": from_scale(scale)}

    def init(key) -> Params:
        loc = loc_init_std * jax.random.normal(key, ())
        return encode(loc=loc, scale=jnp.full((), scale_init, loc.dtype))

    def distribution(params: Params) -> distrax.Distribution:
        params = _float_params(params)
        return distrax.Normal(params["loc"], to_scale(params["raw_scale"]))

    return Family(f"gaussian({positivity})", (), init, distribution, encode,
                  config=("gaussian", positivity, loc_init_std, scale_init))


def diagonal_gaussian(
    dim: int,
    *,
    positivity: str = "softplus",
    loc_init_std: float = 1.0,
    scale_init: float = 1.0,
) -> Family:
    r"""The ``dim``-D Gaussian with diagonal covariance ``diag(scale_diag**2)``.

    Parameters ``{"loc": (dim,), "raw_scale": (dim,)}``, ``scale_diag =
    softplus(raw_scale)`` (or ``exp``); ``encode(loc=..., scale_diag=...)`` inverts it.

    Reference: Kucukelbir et al., "Automatic Differentiation Variational Inference",
    JMLR 2017 (mean-field Gaussian).

    Args:
      dim: the event dimension.
      positivity: ``"softplus"`` or ``"exp"``.
      loc_init_std: ``init`` draws ``loc ~ N(0, loc_init_std**2 I)``.
      scale_init: ``init`` sets every scale to ``scale_init``.

    Returns:
      A :class:`Family` with ``event_shape == (dim,)``.

    Example:
      >>> import jax, jaxkl.families as F
      >>> family = F.diagonal_gaussian(3)
      >>> family.distribution(family.init(jax.random.key(0))).event_shape
      (3,)
    """
    dim = check_positive_int(dim, "dim")
    loc_init_std, scale_init = _check_common(positivity, loc_init_std, scale_init)
    to_scale, from_scale = _positive(positivity)

    def encode(*, loc, scale_diag) -> Params:
        _check_finite_values(loc, "loc")
        check_positive_values(scale_diag, "scale_diag")
        loc, scale_diag = _as_float(loc), _as_float(scale_diag)
        _check_shape(loc, (dim,), "loc")
        _check_shape(scale_diag, (dim,), "scale_diag")
        return {"loc": loc, "raw_scale": from_scale(scale_diag)}

    def init(key) -> Params:
        loc = loc_init_std * jax.random.normal(key, (dim,))
        return encode(loc=loc, scale_diag=jnp.full((dim,), scale_init, loc.dtype))

    def distribution(params: Params) -> distrax.Distribution:
        params = _float_params(params)
        return distrax.MultivariateNormalDiag(params["loc"], to_scale(params["raw_scale"]))

    return Family(f"diagonal_gaussian(dim={dim}, {positivity})", (dim,), init, distribution,
                  encode, config=("diagonal_gaussian", dim, positivity, loc_init_std, scale_init))


def full_covariance_gaussian(
    dim: int,
    *,
    positivity: str = "softplus",
    loc_init_std: float = 1.0,
    scale_init: float = 1.0,
) -> Family:
    r"""The ``dim``-D Gaussian with full covariance ``L L^T`` through its Cholesky factor.

    Parameters ``{"loc": (dim,), "raw_scale_tril": (dim, dim)}``. ``L`` takes the strict
    lower triangle of ``raw_scale_tril`` as is and ``softplus`` (or ``exp``) of its
    diagonal, so ``L`` is a valid Cholesky factor for every real input; the strict upper
    triangle is ignored (its gradient is zero). ``encode(loc=..., covariance=...)`` or
    ``encode(loc=..., scale_tril=...)`` inverts it; a concrete ``scale_tril`` must be
    lower-triangular with a positive diagonal (under ``jit`` its upper part is ignored).

    Reference: Kucukelbir et al., "Automatic Differentiation Variational Inference",
    JMLR 2017 (full-rank Gaussian).

    Args:
      dim: the event dimension.
      positivity: ``"softplus"`` or ``"exp"`` for the diagonal of ``L``.
      loc_init_std: ``init`` draws ``loc ~ N(0, loc_init_std**2 I)``.
      scale_init: ``init`` sets ``L = scale_init * I``.

    Returns:
      A :class:`Family` with ``event_shape == (dim,)``.

    Example:
      >>> import jax.numpy as jnp, jaxkl.families as F
      >>> family = F.full_covariance_gaussian(2)
      >>> cov = jnp.array([[2.0, 0.5], [0.5, 1.0]])
      >>> q = family.distribution(family.encode(loc=jnp.zeros(2), covariance=cov))
      >>> bool(jnp.allclose(q.covariance(), cov, atol=1e-5))
      True
    """
    dim = check_positive_int(dim, "dim")
    loc_init_std, scale_init = _check_common(positivity, loc_init_std, scale_init)
    to_scale, from_scale = _positive(positivity)
    diagonal = np.eye(dim, dtype=bool)
    strict_lower = np.tril(np.ones((dim, dim), dtype=bool), k=-1)

    def encode(*, loc, covariance=None, scale_tril=None) -> Params:
        if (covariance is None) == (scale_tril is None):
            raise ValueError("Pass exactly one of `covariance` and `scale_tril`.")
        _check_finite_values(loc, "loc")
        loc = _as_float(loc)
        _check_shape(loc, (dim,), "loc")
        if covariance is not None:
            covariance = _as_float(covariance)
            _check_shape(covariance, (dim, dim), "covariance")
            _check_covariance(covariance)
            scale_tril = linalg.cholesky(covariance)
            factor = concrete_value(scale_tril)
            if factor is not None and not np.all(np.isfinite(factor)):
                raise ValueError(
                    "`covariance` must be positive definite; its Cholesky factorisation "
                    f"failed in {scale_tril.dtype}."
                )
        scale_tril = _as_float(scale_tril)
        _check_shape(scale_tril, (dim, dim), "scale_tril")
        _check_finite_values(scale_tril, "scale_tril")
        factor = concrete_value(scale_tril)
        if factor is not None and np.any(factor[~np.tril(np.ones((dim, dim), bool))] != 0):
            # Dropping the upper part would silently change the covariance.
            raise ValueError(
                "`scale_tril` must be lower-triangular (the Cholesky factor L of "
                f"covariance = L L^T), got nonzero entries above the diagonal:\n{factor}\n"
                "scipy.linalg.cholesky returns the upper factor unless lower=True."
            )
        diagonal_values = concrete_value(jnp.diagonal(scale_tril))
        if diagonal_values is not None and not np.all(diagonal_values > 0):
            raise ValueError(
                f"The diagonal of `scale_tril` must be positive, got {diagonal_values}."
            )
        # Under a trace, a non-positive diagonal or a failed Cholesky gives NaN parameters,
        # which fit() rejects (concrete) or reports as non-finite steps (traced).
        raw_diagonal = from_scale(jnp.diagonal(scale_tril))
        raw = jnp.where(strict_lower, scale_tril, 0) + jnp.diag(raw_diagonal)
        return {"loc": loc, "raw_scale_tril": raw}

    def init(key) -> Params:
        loc = loc_init_std * jax.random.normal(key, (dim,))
        return encode(loc=loc, scale_tril=scale_init * jnp.eye(dim, dtype=loc.dtype))

    def distribution(params: Params) -> distrax.Distribution:
        params = _float_params(params)
        raw = params["raw_scale_tril"]
        positive_diagonal = to_scale(jnp.diagonal(raw, axis1=-2, axis2=-1))
        scale_tril = jnp.where(strict_lower, raw, 0) + jnp.where(
            diagonal, positive_diagonal[..., None], 0
        )
        return MultivariateNormalTri(params["loc"], scale_tril)

    return Family(
        f"full_covariance_gaussian(dim={dim}, {positivity})", (dim,), init, distribution, encode,
        config=("full_covariance_gaussian", dim, positivity, loc_init_std, scale_init),
    )


def gaussian_mixture(
    num_components: int,
    dim: int | None = None,
    *,
    positivity: str = "softplus",
    loc_init_std: float = 1.0,
    scale_init: float = 1.0,
) -> Family:
    r"""A mixture of ``K`` Gaussians: ``q = sum_k softmax(logits)_k N(locs_k, diag(scales_k**2))``.

    With ``dim=None`` the components are 1-D (scalar events, parameters of shape
    ``(K,)``); with an integer ``dim`` they are diagonal Gaussians in ``dim`` dimensions
    (parameters ``(K, dim)``). Parameters ``{"logits", "locs", "raw_scales"}``;
    ``encode(weights=..., locs=..., scales=...)`` inverts them (logits ``= log weights``;
    concrete weights must be positive and sum to 1, as in
    :func:`jaxkl.gaussian_mixture_1d`).

    Sampling a mixture is not reparameterisable in the weights; the fitting objectives
    stratify over components instead (each component sampled with reparameterisation,
    weighted by its probability), which gives pathwise gradients for every parameter.

    Reference: Morningstar, Vikram, Ham, Gallagher & Dillon, "Automatic Differentiation
    Variational Inference with Mixtures", AISTATS 2021 (stratified sampling).

    Args:
      num_components: ``K``.
      dim: ``None`` for 1-D components, else the event dimension.
      positivity: ``"softplus"`` or ``"exp"`` for the component scales.
      loc_init_std: ``init`` draws every location from ``N(0, loc_init_std**2)``, so the
        components start apart.
      scale_init: ``init`` sets every scale to ``scale_init``; weights start equal.

    Returns:
      A :class:`Family` with ``event_shape == ()`` or ``(dim,)``.

    Example:
      >>> import jax.numpy as jnp, jaxkl.families as F
      >>> family = F.gaussian_mixture(2)
      >>> params = family.encode(weights=jnp.array([0.25, 0.75]),
      ...                        locs=jnp.array([-1.0, 1.0]), scales=jnp.ones(2))
      >>> round(float(family.distribution(params).mean()), 4)
      0.5
    """
    num_components = check_positive_int(num_components, "num_components")
    if dim is not None:
        dim = check_positive_int(dim, "dim")
    loc_init_std, scale_init = _check_common(positivity, loc_init_std, scale_init)
    to_scale, from_scale = _positive(positivity)
    component_shape = (num_components,) if dim is None else (num_components, dim)

    def encode(*, weights, locs, scales) -> Params:
        check_positive_values(weights, "weights")
        weight_values = concrete_value(weights)
        if weight_values is not None:  # as gaussian_mixture_1d: no silent renormalising
            check_weight_values(weight_values, _as_float(weights).dtype, "weights")
        _check_finite_values(locs, "locs")
        check_positive_values(scales, "scales")
        weights, locs, scales = _as_float(weights), _as_float(locs), _as_float(scales)
        _check_shape(weights, (num_components,), "weights")
        _check_shape(locs, component_shape, "locs")
        _check_shape(scales, component_shape, "scales")
        return {"logits": jnp.log(weights), "locs": locs, "raw_scales": from_scale(scales)}

    def init(key) -> Params:
        locs = loc_init_std * jax.random.normal(key, component_shape)
        return encode(
            weights=jnp.full((num_components,), 1.0 / num_components, locs.dtype),
            locs=locs,
            scales=jnp.full(component_shape, scale_init, locs.dtype),
        )

    def distribution(params: Params) -> distrax.Distribution:
        params = _float_params(params)
        scales = to_scale(params["raw_scales"])
        if dim is None:
            components = distrax.Normal(params["locs"], scales)
        else:
            components = distrax.MultivariateNormalDiag(params["locs"], scales)
        return GaussianMixture(distrax.Categorical(logits=params["logits"]), components)

    event_shape = () if dim is None else (dim,)
    name = f"gaussian_mixture(K={num_components}, dim={dim}, {positivity})"
    config = ("gaussian_mixture", num_components, dim, positivity, loc_init_std, scale_init)
    return Family(name, event_shape, init, distribution, encode, config=config)


def _check_covariance(covariance):
    """A concrete covariance must be symmetric (Cholesky would silently symmetrise it)."""
    values = concrete_value(covariance)
    if values is None:
        return
    if not np.all(np.isfinite(values)):
        raise ValueError(f"`covariance` must be finite, got {values}.")
    asymmetry = np.abs(values - values.T).max()
    if asymmetry > 1e-5 * np.abs(values).max():
        raise ValueError(f"`covariance` must be symmetric; largest |C - C^T| is {asymmetry:.3g}.")


def _check_shape(x, shape, name):
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {tuple(x.shape)}.")
