r"""Parametric families for q: unconstrained parameter pytrees <-> distrax distributions.

A :class:`Family` bundles three pure functions over a parameter pytree (a dict of
arrays) whose every entry is unconstrained (any real value is valid), so an optax
optimiser can move it freely:

- ``init(key) -> params``: a random starting point;
- ``distribution(params) -> distrax.Distribution``: the q that the parameters describe;
- ``encode(**values) -> params``: the inverse, from the distribution's natural values
  (locations, scales, weights) to parameters, for chosen initialisations and tests.

Positivity comes from ``softplus`` (default) or ``exp`` applied to the raw scales (the
diagonal of the Cholesky factor for full covariances); mixture weights are a softmax of
logits. This is the unconstrained parametrisation of ADVI (Kucukelbir et al.,
"Automatic Differentiation Variational Inference", JMLR 2017).

A family has no array leaves: it is registered as a static pytree, so it can sit in a
result that passes through ``jit``, ``vmap`` and ``lax.scan``.
"""

from jaxkl._src.distributions.families import (
    Family,
    Params,
    diagonal_gaussian,
    full_covariance_gaussian,
    gaussian,
    gaussian_mixture,
)

__all__ = [
    "diagonal_gaussian",
    "Family",
    "full_covariance_gaussian",
    "gaussian",
    "gaussian_mixture",
    "Params",
]
