"""Validity checks of a distribution's concrete parameters, shared by every public edge
that takes distrax distributions (``estimate``, ``fit``, the reference KL methods)."""

from __future__ import annotations

import distrax
import jax
import numpy as np

from jaxkl._src.validation import concrete_value


def check_single(d, name: str, hint: str) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``d`` is one distribution (batch shape
    ``()``, or no ``batch_shape`` at all); ``hint`` says what to do with a batch."""
    batch = tuple(getattr(d, "batch_shape", ()))
    if batch:
        raise ValueError(f"`{name}` must be a single distribution (batch shape ()), got "
                         f"batch shape {batch}; {hint}.")


# Parameters that every distrax distribution carrying them needs positive.
_POSITIVE_PARAMETERS = ("scale", "scale_diag", "concentration", "rate", "concentration1",
                        "concentration0", "temperature")


def _concrete_float64(x) -> np.ndarray | None:
    """x's values in float64, or None when x is absent, traced or not numeric."""
    if x is None:
        return None
    values = concrete_value(x)
    if values is None or not np.issubdtype(values.dtype, np.number):
        return None
    return np.asarray(values, np.float64)


def _parameter(d, attribute: str):
    """``d``'s parameter as stored, or None. distrax keeps each in ``_<attribute>`` and its
    property broadcasts it to the batch shape, an eager op (~20 us) on every ``fit`` and
    ``estimate`` call; the stored value is just as valid or invalid."""
    stored = getattr(d, "__dict__", {}).get(f"_{attribute}")
    if stored is not None:
        return stored
    try:
        return getattr(d, attribute, None)
    except (NotImplementedError, AttributeError, TypeError):  # computed properties
        return None


def check_parameters(d: distrax.DistributionLike, name: str) -> None:
    """Raises ``ValueError`` naming ``name`` when d's (concrete) parameters are invalid.

    A Normal with scale -1 has the covariance of scale 1 and a NaN ``log_prob``; a zero
    scale or a singular covariance has no density at all. Both would otherwise give a
    plausible-looking KL (or a NumPy ``LinAlgError``). Traced parameters cannot be
    inspected and are left to the caller.
    """
    components = d
    if isinstance(d, distrax.MixtureSameFamily):
        mixing = d.mixture_distribution
        # Built from probabilities, the logits property is an eager log per call.
        probs = _concrete_float64(getattr(mixing, "__dict__", {}).get("_probs"))
        with np.errstate(divide="ignore", invalid="ignore"):
            logits = (np.log(probs) if probs is not None
                      else _concrete_float64(_parameter(mixing, "logits")))
        if logits is not None and (np.any(np.isnan(logits)) or np.any(logits == np.inf)
                                   or np.any(np.all(logits == -np.inf, axis=-1))):
            raise ValueError(
                f"`{name}` has invalid mixture logits {logits} (NaN, +inf, or every "
                "component -inf)."
            )
        components = d.components_distribution
    loc = _concrete_float64(_parameter(components, "loc"))
    if loc is not None and not np.all(np.isfinite(loc)):
        raise ValueError(f"`{name}` has a non-finite location: {loc}.")
    for attribute in _POSITIVE_PARAMETERS:
        value = _parameter(components, attribute)
        values = None if value is None or callable(value) else _concrete_float64(value)
        if values is not None and not np.all((values > 0) & np.isfinite(values)):
            raise ValueError(
                f"`{name}` has {attribute} {values}: it must be positive and finite "
                f"({type(components).__name__})."
            )
    if isinstance(components, distrax.Uniform):
        low, high = _concrete_float64(components.low), _concrete_float64(components.high)
        if low is not None and high is not None and not (
            np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)
        ):
            raise ValueError(f"`{name}` is a Uniform with low {low} >= high {high}.")
    if isinstance(components, distrax.MultivariateNormalFromBijector) and not isinstance(
        components, distrax.MultivariateNormalDiag
    ):
        leaves = jax.tree_util.tree_leaves(components)
        concrete = all(concrete_value(leaf) is not None for leaf in leaves
                       if isinstance(leaf, jax.Array))
        covariance = _concrete_float64(components.covariance()) if concrete else None
        if covariance is not None:
            if not np.all(np.isfinite(covariance)):
                raise ValueError(f"`{name}` has a non-finite covariance.")
            try:
                np.linalg.cholesky(covariance)
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"`{name}` has a covariance that is not positive definite (a zero on "
                    "the diagonal of its scale, or a singular scale)."
                ) from None
