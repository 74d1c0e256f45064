"""The Monte Carlo engine behind :func:`jaxkl.estimate` and :func:`jaxkl.sharding.estimate_sharded`.

One straight pipeline: :func:`make_plan` validates and resolves a request once (the
public edge of both front-ends) into a :class:`SamplingPlan`; :func:`run_chunks` streams
chunks of samples through the estimator kernels into :class:`jaxkl.stats.Moments` (the
single-device loop uses stride 1, each device of a sharded run the device count); and
:func:`summarize` turns the moments into one :class:`jaxkl.Stats` per estimator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxkl._src import stats, vocabulary
from jaxkl._src.distributions.checks import check_parameters, check_single
from jaxkl._src.estimators.divergences import F_DIVERGENCES, PARAMETERS, f_divergence_fn
from jaxkl._src.estimators.kl import KL_KERNELS, cv_coefficient
from jaxkl._src.validation import check_positive_int, compute_dtype, third_party_promotion

Array = jax.Array

# Every name estimate accepts, as kernels of the log-ratio (see jaxkl._src.vocabulary);
# "amari_alpha" and "t_power" take `alpha`/`t` and are built per parameter.
KERNELS: dict[str, Callable[[Array], Array]] = {**KL_KERNELS, **F_DIVERGENCES}

# Large enough to amortise the loop overhead on CPU (measured: 2**18 is ~1.5x faster than
# 2**16 and as fast as 2**20), small enough to stay in cache-sized pieces.
DEFAULT_CHUNK_SIZE = 2**18

Slot = int | tuple[int, int]


class SamplingPlan(NamedTuple):
    """A validated Monte Carlo request: what to sample and which moments to stream.

    Attributes:
      num_samples: the total number of samples (positive).
      chunk_size: samples per chunk, a power of two no larger than needed.
      names: the result's keys, in the caller's order.
      features: the kernels of the log-ratio whose moments are streamed (static under
        ``jit``: module-level or cached functions, so equal plans compile once).
      slots: per name, the feature index of its values, or for ``cv*`` the pair of
        indices of ``k1`` and ``r - 1`` whose co-moments give ``lam*``.
    """

    num_samples: int
    chunk_size: int
    names: tuple[str, ...]
    features: tuple[Callable[[Array], Array], ...]
    slots: tuple[Slot, ...]


def _resolve(estimators, parameters):
    """Names and kernels of the requested estimators; callables are named by __name__.

    ``parameters`` maps ``"alpha"``/``"t"`` to the values given to the front-end; each
    must be used by a requested name (a stray one is an error, as in csiszar).
    """
    parameters = {k: v for k, v in parameters.items() if v is not None}
    if isinstance(estimators, str):
        estimators = (estimators,)
    used = set()
    if isinstance(estimators, Mapping):
        items = list(estimators.items())
    else:
        items = []
        for e in estimators:
            if callable(e):
                items.append((getattr(e, "__name__", repr(e)), e))
            elif isinstance(e, str) and e in PARAMETERS:
                parameter = PARAMETERS[e]
                if parameter not in parameters:
                    raise ValueError(f"Estimator {e!r} needs `{parameter}` (a finite number).")
                used.add(parameter)
                items.append((e, f_divergence_fn(e, **{parameter: parameters[parameter]})))
            elif e == vocabulary.OPTIMAL_CV or e in KERNELS or e in vocabulary.ESTIMATE_ALIASES:
                items.append((e, KERNELS.get(vocabulary.ESTIMATE_ALIASES.get(e, e))))
            else:
                raise ValueError(
                    f"Unknown estimator {e!r} in `estimators`; expected callables or names "
                    f"from {[*KERNELS, *PARAMETERS, vocabulary.OPTIMAL_CV]} (or the alias "
                    "'forward' of 'forward_kl')."
                )
    stray = set(parameters) - used
    if stray:
        raise ValueError(f"`{sorted(stray)[0]}` is only used with the estimators "
                         f"{[n for n, p in PARAMETERS.items() if p in stray]}.")
    if not items:
        raise ValueError("`estimators` must name at least one estimator.")
    names = tuple(name for name, _ in items)
    if len(set(names)) != len(names):
        raise ValueError(f"`estimators` has duplicate names: {names}.")
    return names, tuple(fn for _, fn in items)


def _features(names, kernels) -> tuple[tuple[Callable[[Array], Array], ...], tuple[Slot, ...]]:
    """The kernels whose moments are streamed, and each estimator's slot among them.

    An estimator maps to a feature index, or (for cv*) to the pair of features
    ``(-l, r - 1)`` whose co-moments determine lam* and the control variate's moments.
    """
    features: list[Callable] = []
    index: dict[str, int] = {}

    def slot(key, fn):
        if key not in index:
            index[key] = len(features)
            features.append(fn)
        return index[key]

    slots = tuple(
        (slot("k1", KERNELS["k1"]), slot("r-1", jnp.expm1)) if name == vocabulary.OPTIMAL_CV
        else slot(name, fn)
        for name, fn in zip(names, kernels, strict=True)
    )
    return tuple(features), slots


def _check_distribution(d, name: str, need_sample: bool) -> None:
    needed = ("sample", "log_prob") if need_sample else ("log_prob",)
    missing = [m for m in needed if not callable(getattr(d, m, None))]
    if missing:
        raise TypeError(
            f"`{name}` must be a distrax distribution or have methods {needed} "
            f"(distrax signature); {type(d).__name__} lacks {missing}."
        )


def _check_shapes(q, p) -> None:
    """Single distributions (batch shape ``()``) with equal event shapes, when they say."""
    for d, name in ((q, "q"), (p, "p")):
        check_single(d, name, "vmap estimate over a batch")
    q_event, p_event = getattr(q, "event_shape", None), getattr(p, "event_shape", None)
    if q_event is not None and p_event is not None and tuple(q_event) != tuple(p_event):
        raise ValueError(f"`q` has event shape {tuple(q_event)} but `p` has event shape "
                         f"{tuple(p_event)}: p must be a density on q's samples.")


def make_plan(q, p, *, num_samples, estimators, chunk_size, alpha=None,
              t=None) -> SamplingPlan:
    """Validates a Monte Carlo request (the public edge of every front-end).

    Raises:
      TypeError: ``q``/``p`` lack the distrax methods, or a count is not an integer.
      ValueError: unknown or duplicate estimator names, a missing or stray parameter,
        ``num_samples`` beyond the index range of this mode, batched distributions,
        differing event shapes, or invalid concrete distribution parameters.
    """
    _check_distribution(q, "q", need_sample=True)
    _check_distribution(p, "p", need_sample=False)
    _check_shapes(q, p)
    # A negative scale or a NaN location would stream NaN moments; concrete parameters
    # are checked as reference_kl checks them (traced ones cannot be).
    check_parameters(q, "q")
    check_parameters(p, "p")
    if isinstance(num_samples, jax.core.Tracer):
        raise TypeError(
            "`num_samples` must be a Python int, not a traced value: it fixes the number of "
            "chunks streamed. Under jit, close over it (a new count does not recompile "
            "estimate's own loop)."
        )
    num_samples = check_positive_int(num_samples, "num_samples")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    limit = np.iinfo(np.int64 if jax.config.jax_enable_x64 else np.int32).max
    if num_samples > limit - chunk_size:
        raise ValueError(
            f"`num_samples` = {num_samples} exceeds this mode's index range ({limit}); "
            "enable jax_enable_x64 for more samples."
        )
    names, kernels = _resolve(estimators, {"alpha": alpha, "t": t})
    features, slots = _features(names, kernels)
    # Small runs get a smaller chunk, rounded up to a power of two so that the number of
    # compiled variants stays logarithmic in num_samples (at most 2x padding).
    chunk_size = min(chunk_size, 1 << (num_samples - 1).bit_length())
    return SamplingPlan(num_samples, chunk_size, names, features, slots)


def sample_log_ratio(q, p, key: Array, num: int) -> Array:
    """``log p(x) - log q(x)`` at ``num`` samples ``x ~ q`` (uses q.sample_and_log_prob)."""
    # The distributions' own internals may rely on implicit promotion (distrax's
    # MixtureSameFamily does); jaxkl's strictness is for jaxkl's code, not theirs.
    with third_party_promotion():
        if hasattr(q, "sample_and_log_prob"):
            x, log_q = q.sample_and_log_prob(seed=key, sample_shape=(num,))
        else:
            x = q.sample(seed=key, sample_shape=(num,))
            log_q = q.log_prob(x)
        log_p = p.log_prob(x)
    if log_q.shape != (num,) or log_p.shape != (num,):
        raise ValueError(
            "q and p must be distributions with scalar batch shape whose log_prob of "
            f"{num} samples has shape ({num},); got log q {log_q.shape}, log p {log_p.shape}."
        )
    dtype = compute_dtype(log_p, log_q)
    return log_p.astype(dtype) - log_q.astype(dtype)


def log_ratio_dtype(q, p, key: Array):
    """The dtype :func:`sample_log_ratio` returns for ``q`` and ``p`` (no work done)."""
    return jax.eval_shape(lambda: sample_log_ratio(q, p, key, 1)).dtype


def _chunk_moments(q, p, key: Array, chunk_index: Array, num_samples: Array, features,
                   chunk_size: int, shift: Array, *, masked: bool) -> stats.Moments:
    """Moments of the features over chunk ``chunk_index``; with ``masked``, the samples
    past ``num_samples`` (the padding of the last chunk) are left out.

    ``shift`` (the running mean) centres the one-pass sums; see stats.from_features.
    """
    l = sample_log_ratio(q, p, jax.random.fold_in(key, chunk_index), chunk_size)
    values = [f(l) for f in features]
    # The kernels' contract with the engine: elementwise, in the log-ratio's dtype.
    chex.assert_shape(values, (chunk_size,))
    chex.assert_type(values, l.dtype)
    chex.assert_shape(shift, (len(features),))
    if not masked:
        return stats.from_features(values, None, shift)
    position = chunk_index * chunk_size + jnp.arange(chunk_size)
    return stats.from_features(values, position < num_samples, shift)


def run_chunks(q, p, key: Array, num_samples: Array, *, features, chunk_size: int,
               first: Array, stride: int, count: Array, total: stats.Moments) -> stats.Moments:
    """``total`` merged with chunks ``first, first + stride, ...`` (``count`` of them).

    The single-device loop uses ``stride = 1``; each device of a sharded run uses the
    device count as stride, so that every chunk keeps its ``fold_in(key, chunk)`` key.
    ``num_samples`` may be traced (a new count does not recompile).

    Two loops: the chunks that lie wholly below ``num_samples`` skip the padding mask
    (3-5% of the engine's time on XLA:CPU, BENCHMARKS.md), the rest (at most one chunk
    holds samples) are masked. Both trip counts are traced: no recompilation, and no
    ``lax.cond``, whose branches' outputs differ in their varying manual axes inside
    ``shard_map``.
    """

    def loop(masked):
        def body(j, total):
            # After the first chunk, the running mean is an excellent shift for the sums.
            shift = jnp.where(total.count > 0, total.mean, jnp.nan)
            chunk = _chunk_moments(q, p, key, first + j * stride, num_samples, features,
                                   chunk_size, shift, masked=masked)
            return stats.merge(total, chunk)
        return body

    # Chunk c is whole when (c + 1) * chunk_size <= num_samples, i.e. c < whole_chunks;
    # this loop's chunks first + j * stride are, for j < ceil((whole_chunks - first) / stride).
    whole_chunks = num_samples // chunk_size
    count = jnp.asarray(count)
    whole = jnp.clip((whole_chunks - first + stride - 1) // stride, 0, count).astype(count.dtype)
    total = jax.lax.fori_loop(0, whole, loop(masked=False), total)
    return jax.lax.fori_loop(whole, count, loop(masked=True), total)


def _stream_impl(q, p, key, num_samples, *, features, chunk_size) -> stats.Moments:
    # Guarded inside the compiled call: applied eagerly, the identity on each parameter
    # cost ~4 ms an estimate (BENCHMARKS.md); traced, it is free and still raises.
    q, p = guard_gradients(q), guard_gradients(p)
    num_chunks = (num_samples + chunk_size - 1) // chunk_size
    total = stats.empty(len(features), log_ratio_dtype(q, p, key))
    return run_chunks(q, p, key, num_samples, features=features, chunk_size=chunk_size,
                      first=0, stride=1, count=num_chunks, total=total)


# Distributions are pytrees (distrax's are), so new parameters of the same shapes reuse
# the compiled loop.
_stream = jax.jit(_stream_impl, static_argnames=("features", "chunk_size"))


def stream(q, p, key: Array, plan: SamplingPlan) -> stats.Moments:
    """The moments of ``plan.features`` over ``plan.num_samples`` samples, on one device.

    Objects that are not pytrees are closed over instead (one compilation per object).
    """
    static = dict(features=plan.features, chunk_size=plan.chunk_size)
    if is_pytree(q) and is_pytree(p):
        return _stream(q, p, key, plan.num_samples, **static)
    return jax.jit(functools.partial(_stream_impl, q, p, **static))(key, plan.num_samples)


@jax.custom_jvp
def _not_differentiable(x: Array) -> Array:
    """The identity, whose derivative is a clear error instead of JAX's loop message."""
    return x


@_not_differentiable.defjvp
def _not_differentiable_jvp(primals, tangents):
    del primals, tangents
    raise TypeError(
        "jaxkl.estimate is not differentiable: it streams samples through a loop whose "
        "length depends on num_samples and returns summary statistics. For gradients of a "
        "Monte Carlo KL objective use jaxkl.fitting.make_loss (reparameterised or score-"
        "function estimators), or apply jaxkl.k1/k2/k3 to log-ratios you sample yourself."
    )


def guard_gradients(d):
    """``d`` with every float leaf passed through an identity whose derivative raises a
    clear error (for distributions that are pytrees; others are returned unchanged)."""
    if not is_pytree(d):
        return d

    def guard(leaf):
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.inexact):
            return _not_differentiable(leaf)
        return leaf

    return jax.tree_util.tree_map(guard, d)


# Types known to be pytree nodes. Registration is permanent, so a True answer is cached
# per type; a type that flattened to itself is checked again (it may be registered later).
_PYTREE_TYPES: set[type] = set()


def is_pytree(d) -> bool:
    """Whether ``d`` flattens into array leaves (distrax distributions do).

    Cached per type: a distrax mixture's flatten is Python (~25 us), and this runs on
    every ``fit``/``estimate`` call before ``jit`` flattens ``d`` again.
    """
    if type(d) in _PYTREE_TYPES:
        return True
    leaves = jax.tree_util.tree_leaves(d)
    if len(leaves) == 1 and leaves[0] is d:
        return False
    _PYTREE_TYPES.add(type(d))
    return True


def summarize(moments: stats.Moments, plan: SamplingPlan) -> dict[str, stats.Stats]:
    """Per-estimator :class:`jaxkl.Stats` from the streamed feature moments.

    One compiled call per estimator set (not per sample count). Run as eager operations
    while the streaming loop was still running, the same few dozen scalar operations
    added 20-30 ms to a 120 ms ``estimate`` of 1e7 samples on a 2-core CPU
    (scripts/bench_estimate.py, BENCHMARKS.md).
    """
    out = _summarize(moments, names=plan.names, slots=plan.slots,
                     num_features=len(plan.features))
    # A dict comes out of jit with sorted keys; the result keeps the caller's order.
    return {name: out[name] for name in plan.names}


@functools.partial(jax.jit, static_argnames=("names", "slots", "num_features"))
def _summarize(moments: stats.Moments, *, names, slots, num_features) -> dict[str, stats.Stats]:
    chex.assert_shape(moments.mean, (num_features,))
    chex.assert_shape(moments.comoment, (num_features, num_features))
    out = {}
    for name, slot in zip(names, slots, strict=True):
        if name == vocabulary.OPTIMAL_CV:
            i_k1, i_r = slot
            # lam* = Cov(l, r) / Var(r) = -Cov(k1, r - 1) / Var(r - 1).
            lam = cv_coefficient(-moments.comoment[i_k1, i_r], moments.comoment[i_r, i_r])
            weights = jnp.zeros(moments.mean.shape).at[i_k1].set(1.0).at[i_r].set(lam)
            # lam is fitted to the same samples: the mean and lam use 2 degrees of freedom.
            out[name] = stats.summarize_linear(moments, weights, ddof=2)
        else:
            out[name] = stats.summarize(moments, slot)
    return out
