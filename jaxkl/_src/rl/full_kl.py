r"""Exact per-token KL(pi || pi_ref) over the whole vocabulary, streamed from logits.

With ``z`` the policy logits, ``w`` the reference logits, ``p = softmax(z)``,
``r = softmax(w)`` and row maxima ``M_z``, ``M_w``:

.. math::
    KL(p \| r) = \frac{\sum_v e^{z_v - M_z} d_v}{\sum_v e^{z_v - M_z}}
                 - \log \sum_v e^{z_v - M_z} + \log \sum_v e^{w_v - M_w},
    \qquad d_v = (z_v - M_z) - (w_v - M_w).

On CPU (the default there) the forward pass loops over rows: each row's maxima, then
its three sums, are whole-row reductions while the row of both inputs sits in cache.
Elsewhere, or with an explicit ``chunk_size``, the three sums are accumulated chunk by
chunk over the vocabulary with the online (running-maximum) rescaling of Milakov &
Gimelshein 2018. Either way the forward pass reads each logit once from memory and keeps
only ``[V]`` or ``[tokens, chunk]`` float32 temporaries. Writing
``d`` with each row's own maximum makes the formula invariant to shifting either
logit vector: identical logits give ``d = 0`` exactly, so the KL is the difference of
the two log-normalisers: exactly 0 when both are summed alike (tested), and within their
rounding, a few ulps, where a larger compiled program fuses the two inputs' producers
differently and so sums them in different orders; the error does not grow with a
common offset of the logits, as it does in ``E_p[z - w] - (lse(z) - lse(w))``.

The backward pass is elementwise given four numbers per token:

.. math:: \partial KL / \partial z_v = p_v (a_v - KL), \quad
          \partial KL / \partial w_v = r_v - p_v, \quad a_v = \log p_v - \log r_v,

so a custom JVP gives the tangent as these coefficients times the input tangents.
Forward mode (``jax.jvp``, ``jax.jacfwd``) evaluates it directly; reverse mode
transposes it, and because the coefficients are recomputed inside the transposed pass
(a checkpoint that saves nothing), both gradients come from one elementwise pass that
reads the logits and writes the gradient buffers, without the ``[tokens, vocab]``
float32 ``log_softmax`` arrays that autodiff of the naive formula keeps (and without a
vocabulary loop: an elementwise pass needs no running state). Higher derivatives
(``jax.hessian``) work as well.

Reference: M. Milakov and N. Gimelshein, "Online normalizer calculation for softmax",
2018, arXiv:1805.02867.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxkl._src.numerics import as_storage_bits, from_storage_bits
from jaxkl._src.validation import (
    check_float_array,
    check_logits,
    check_mask,
    check_positive_int,
    check_same_shape,
    compute_dtype,
)

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# The forward pass keeps a few [rows, chunk] float32 temporaries per loop step. On CPU
# they should stay in cache: at 2048 x 152064 float32 logits, chunks of 256 (2 MiB
# temporaries) ran the forward pass in 0.37 s against 0.72 s for 4096 (32 MiB), and the
# best chunk over 256..8192 rows kept rows * chunk near 2**19 (scripts/bench_full_kl.py,
# BENCHMARKS.md). Elsewhere every loop step is a few kernel launches, so chunks stay
# large; 4096 there is not yet measured on an accelerator.
CPU_TILE_ELEMENTS = 2**19
MIN_CPU_CHUNK = 128
ACCELERATOR_CHUNK_SIZE = 4096


def auto_chunk_size(rows: int, vocab: int, platform: str) -> int:
    """The vocabulary chunk for ``rows`` rows on ``platform`` (the forward pass's default
    off CPU; on CPU the default loops over rows, and this is the chunk a chunked CPU pass
    would use).

    On CPU the largest power of two with ``rows * chunk <= 2**19`` (at least 128), so
    that the loop's temporaries stay in cache; elsewhere 4096. Never more than ``vocab``.

    Example:
      >>> from jaxkl._src.rl.full_kl import auto_chunk_size
      >>> auto_chunk_size(2048, 152064, "cpu"), auto_chunk_size(2048, 152064, "cuda")
      (256, 4096)
    """
    if platform == "cpu":
        target = max(CPU_TILE_ELEMENTS // max(rows, 1), MIN_CPU_CHUNK)
        chunk = 1 << (target.bit_length() - 1)  # the largest power of two <= target
    else:
        chunk = ACCELERATOR_CHUNK_SIZE
    return max(1, min(chunk, vocab))


def _finite_or_zero(x: Array) -> Array:
    # A running maximum is -inf until a row has seen a finite logit; shifting by it
    # would give -inf - -inf = NaN.
    return jnp.where(x > -jnp.inf, x, jnp.zeros_like(x))


def _update(carry, z_chunk, w_chunk, dtype):
    """Folds one vocabulary chunk into the running (M_z, M_w, S_z, S_w, A) of each row."""
    max_z, max_w, sum_z, sum_w, acc = carry
    new_max_z = jnp.maximum(max_z, z_chunk.max(axis=-1))
    new_max_w = jnp.maximum(max_w, w_chunk.max(axis=-1))
    shift_z, shift_w = _finite_or_zero(new_max_z), _finite_or_zero(new_max_w)
    old_shift_z, old_shift_w = _finite_or_zero(max_z), _finite_or_zero(max_w)

    centered_z = z_chunk - shift_z[:, None]
    centered_w = w_chunk - shift_w[:, None]
    exp_z = jnp.exp(centered_z)
    # p_v = 0 contributes 0 even where r_v = 0 too (0 * inf would be NaN).
    chunk_acc = jnp.where(exp_z > 0, exp_z * (centered_z - centered_w), 0).sum(axis=-1)

    # Re-express the old sums relative to the new maxima. A row with no mass yet has
    # nothing to rescale (and its rescaling factor may overflow), hence the guards.
    scale_z = jnp.exp(old_shift_z - shift_z)
    scale_w = jnp.exp(old_shift_w - shift_w)
    moved = (shift_z - old_shift_z) - (shift_w - old_shift_w)
    acc = jnp.where(sum_z > 0, scale_z * (acc - sum_z * moved), 0) + chunk_acc
    sum_z = jnp.where(sum_z > 0, sum_z * scale_z, 0) + exp_z.sum(axis=-1)
    sum_w = jnp.where(sum_w > 0, sum_w * scale_w, 0) + jnp.exp(centered_w).sum(axis=-1)
    return new_max_z, new_max_w, sum_z, sum_w, acc


def _chunk(logits: Array, ref_logits: Array, start, size: int):
    """``[:, start:start + size]`` of both (stored) inputs."""
    return (
        jax.lax.dynamic_slice_in_dim(logits, start, size, axis=1),
        jax.lax.dynamic_slice_in_dim(ref_logits, start, size, axis=1),
    )


def _streamed_statistics(logits: Array, ref_logits: Array, chunk_size: int | None):
    """One pass over the vocabulary: per-row maxima, normalisers and KL of 2-D inputs.

    ``chunk_size=None`` loops over rows on CPU and uses chunks of :func:`auto_chunk_size`
    elsewhere, for the platform the computation is lowered for
    (``lax.platform_dependent`` lowers only that platform's branch). On CPU 16-bit
    inputs are looped over in blocks of rows (:func:`_in_row_blocks`).
    """
    dtypes = (logits.dtype, ref_logits.dtype)
    if logits.shape[0] == 0:  # no tokens: the loops' bodies, slicing a row, would not trace
        return _finish(*(jnp.zeros((0,), compute_dtype(*dtypes)),) * 5)
    if chunk_size is None:
        cpu_loop = _row_loop
        default_loop = functools.partial(
            _chunk_loop, chunk_size=auto_chunk_size(*logits.shape, "default"))
    else:
        cpu_loop = default_loop = functools.partial(_chunk_loop, chunk_size=chunk_size)
    if 2 in (logits.dtype.itemsize, ref_logits.dtype.itemsize):
        cpu_loop = functools.partial(_in_row_blocks, cpu_loop)
    return jax.lax.platform_dependent(
        logits, ref_logits,
        cpu=lambda z, w: _finish(*cpu_loop(z, w, dtypes)),
        default=lambda z, w: _finish(*default_loop(z, w, dtypes)),
    )


def _row_statistics(z: Array, w: Array):
    """``(M_z, M_w, S_z, S_w, A)`` of one row ``[V]``: :func:`_update` from the empty state,
    written with whole-row (full) reductions."""
    max_z, max_w = z.max(), w.max()
    shift_z, shift_w = _finite_or_zero(max_z), _finite_or_zero(max_w)
    centered_z, centered_w = z - shift_z, w - shift_w
    exp_z = jnp.exp(centered_z)
    # p_v = 0 contributes 0 even where r_v = 0 too (0 * inf would be NaN).
    acc = jnp.where(exp_z > 0, exp_z * (centered_z - centered_w), 0).sum()
    return max_z, max_w, exp_z.sum(), jnp.exp(centered_w).sum(), acc


def _row_loop(logits: Array, ref_logits: Array, dtypes):
    """The unfinished ``(M_z, M_w, S_z, S_w, A)`` of each row, one row per loop step (the
    CPU default), of inputs of ``dtypes`` given as :func:`as_storage_bits`.

    On XLA:CPU a reduction over the last axis of a ``[rows, chunk]`` tile ran at ~4x the
    time of a reduction of the same elements to a scalar (measured 2026-11-30 on jaxlib
    0.10.2: ``sum(exp(z) + exp(w), -1)`` 9-11x one fused read of ``[1024, 152064]``
    float32, ``sum(exp(z) + exp(w))`` 2.1-2.5x): a loop over rows, each reduced whole
    (one row of both inputs stays in cache across the max and the sums), is faster than
    the vocabulary chunks (BENCHMARKS.md). Same arithmetic as one chunk of the whole row.
    """
    dtype = compute_dtype(*dtypes)
    rows = logits.shape[0]
    logits, ref_logits = as_storage_bits(logits), as_storage_bits(ref_logits)

    def body(i, carry):
        z = from_storage_bits(jax.lax.dynamic_index_in_dim(logits, i, keepdims=False),
                              dtypes[0], dtype)
        w = from_storage_bits(jax.lax.dynamic_index_in_dim(ref_logits, i, keepdims=False),
                              dtypes[1], dtype)
        return tuple(c.at[i].set(v) for c, v in zip(carry, _row_statistics(z, w), strict=True))

    carry = tuple(jnp.zeros((rows,), dtype) for _ in range(5))
    return jax.lax.fori_loop(0, rows, body, carry)


def _chunk_loop(logits: Array, ref_logits: Array, dtypes, chunk_size: int):
    """The unfinished ``(M_z, M_w, S_z, S_w, A)`` of each row, one vocabulary chunk per
    loop step (:func:`_update`), of inputs of ``dtypes`` given as :func:`as_storage_bits`."""
    dtype = compute_dtype(*dtypes)
    rows, vocab = logits.shape
    logits, ref_logits = as_storage_bits(logits), as_storage_bits(ref_logits)

    def update(carry, z, w):
        return _update(carry, from_storage_bits(z, dtypes[0], dtype),
                       from_storage_bits(w, dtypes[1], dtype), dtype)

    carry = (
        jnp.full((rows,), -jnp.inf, dtype),
        jnp.full((rows,), -jnp.inf, dtype),
        jnp.zeros((rows,), dtype),
        jnp.zeros((rows,), dtype),
        jnp.zeros((rows,), dtype),
    )
    num_full = vocab // chunk_size

    def body(i, carry):
        return update(carry, *_chunk(logits, ref_logits, i * chunk_size, chunk_size))

    if num_full > 0:
        carry = jax.lax.fori_loop(0, num_full, body, carry)
    if vocab % chunk_size:
        start = num_full * chunk_size
        carry = update(carry, *_chunk(logits, ref_logits, start, vocab - start))
    return carry


# A loop that slices a 16-bit array needs a copy of it on XLA:CPU: a bf16 array sliced
# in a loop is upcast to a float32 copy hoisted out of the loop, and the uint16 view of
# `numerics.as_storage_bits` is a copy too. Copied block by block, the copy is 1/16 of
# the inputs: [1024, 152064] bf16 forward temporaries 6.5% instead of 100.2%, 1.48x
# faster (no whole-array copy pass), compile time 0.9 s instead of 0.3 s (32 blocks:
# 3.3%, 1.9 s); BENCHMARKS.md.
STORAGE_COPY_BLOCKS = 16


def _in_row_blocks(loop, logits: Array, ref_logits: Array, dtypes):
    """``loop`` (:func:`_row_loop` or :func:`_chunk_loop`) over :data:`STORAGE_COPY_BLOCKS`
    static blocks of rows, each block's inputs copied (as storage bits) only after the
    previous block's loop has ended.

    Nothing else orders the copies: they depend on the inputs alone, and XLA scheduled
    all of them before the first loop (100% of the inputs live at once). So each block's
    bits get ``min(last_bits, 0)``, an unsigned zero that XLA does not fold and that
    depends on the previous block's result. Should a later XLA fold it, the values stay
    exact and only the memory grows (``tests/test_rl_full_kl.py`` measures it).
    """
    rows = logits.shape[0]
    blocks = min(rows, STORAGE_COPY_BLOCKS)
    edges = [rows * k // blocks for k in range(blocks + 1)]
    results, after_previous = [], jnp.zeros((), jnp.uint32)
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        block = tuple(_bits_after(x[start:stop], after_previous) for x in (logits, ref_logits))
        carry = loop(*block, dtypes)
        results.append(carry)
        last_bits = jax.lax.bitcast_convert_type(carry[-1][-1].astype(jnp.float32), jnp.uint32)
        after_previous = jnp.minimum(last_bits, jnp.uint32(0))
    return tuple(jnp.concatenate(parts) for parts in zip(*results, strict=True))


def _bits_after(block: Array, zero: Array) -> Array:
    """``block`` as its storage bits plus the unsigned ``zero`` (so computed after
    ``zero``); wider floats are returned as floats again."""
    if block.dtype.itemsize == 2:
        return as_storage_bits(block) + zero.astype(jnp.uint16)
    unsigned = jnp.dtype(f"uint{8 * block.dtype.itemsize}")
    bits = jax.lax.bitcast_convert_type(block, unsigned) + zero.astype(unsigned)
    return jax.lax.bitcast_convert_type(bits, block.dtype)


def _finish(max_z, max_w, sum_z, sum_w, acc):
    """The KL and the backward pass's statistics from the streamed sums of each row."""
    log_sum_z, log_sum_w = jnp.log(sum_z), jnp.log(sum_w)
    # KL >= 0 exactly; rounding can leave a value of order -eps near KL = 0, which would
    # turn into NaN downstream (sqrt, log), so it is clamped (found by a property test).
    kl = jnp.maximum(acc / sum_z - (log_sum_z - log_sum_w), 0)
    # A reference row with no finite logit gives r = 0 everywhere: p has mass where r has
    # none, so the KL is +inf (the formula above would give inf - inf = NaN). A policy row
    # with no finite logit is no distribution at all: NaN, whatever the reference holds.
    kl = jnp.where(sum_z > 0, jnp.where(sum_w > 0, kl, jnp.inf), jnp.nan)
    return kl, (max_z, max_w, log_sum_z, log_sum_w)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _full_kl_2d(chunk_size: int | None, logits: Array, ref_logits: Array, valid: Array) -> Array:
    kl, _ = _statistics(chunk_size, logits, ref_logits)
    return jnp.where(valid, kl, 0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _statistics(chunk_size: int | None, logits: Array, ref_logits: Array):
    """:func:`_streamed_statistics`, differentiable: the forward pass reads 16-bit
    inputs as integer bits (no derivative), so the derivatives that second-order
    differentiation (``jax.hessian``) takes of the statistics come from this rule."""
    return _streamed_statistics(logits, ref_logits, chunk_size)


def _statistics_jvp(chunk_size, primals, tangents):
    """``d KL`` as in :func:`_full_kl_jvp`; ``d log sum_v e^{z_v - M_z} = sum_v p_v dz_v``
    and likewise for ``w``, with ``d M = 0`` (the maxima are shifts: only ``M + log S``
    enters the log-probabilities, and its derivative is exact)."""
    logits, ref_logits = primals
    d_logits, d_ref_logits = tangents
    kl, stats = _streamed_statistics(logits, ref_logits, chunk_size)
    max_z, max_w, log_sum_z, log_sum_w = stats
    valid = jnp.ones(kl.shape, bool)
    zeros = jnp.zeros_like(kl)
    d_kl, d_log_sum_z, d_log_sum_w = zeros, zeros, zeros
    if not isinstance(d_logits, SymbolicZero):
        d_kl = d_kl + _logits_tangent(logits, ref_logits, valid, kl, stats, d_logits)
        d_log_sum_z = _expected_tangent(logits, max_z, log_sum_z, d_logits)
    if not isinstance(d_ref_logits, SymbolicZero):
        d_kl = d_kl + _ref_logits_tangent(logits, ref_logits, valid, kl, stats, d_ref_logits)
        d_log_sum_w = _expected_tangent(ref_logits, max_w, log_sum_w, d_ref_logits)
    return (kl, stats), (d_kl, (zeros, zeros, d_log_sum_z, d_log_sum_w))


def _log_probs(x: Array, row_max: Array, log_sum: Array, compute) -> Array:
    return (x.astype(compute) - row_max[:, None]) - log_sum[:, None]


# Each tangent is a checkpoint that saves nothing: under reverse mode JAX keeps only its
# inputs (the logits and four numbers per row) and recomputes the coefficients inside
# the transposed pass, which is then one elementwise pass writing the gradient (no
# [tokens, vocab] residual). Forward mode evaluates the same functions directly.
_NOTHING_SAVED = jax.checkpoint_policies.nothing_saveable


@functools.partial(jax.checkpoint, policy=_NOTHING_SAVED)
def _logits_tangent(logits, ref_logits, valid, kl, stats, tangent):
    """``sum_v p_v (log p_v - log r_v - KL) dz_v`` per row (0 for masked rows)."""
    max_z, max_w, log_sum_z, log_sum_w = stats
    compute = kl.dtype
    log_p = _log_probs(logits, max_z, log_sum_z, compute)
    log_r = _log_probs(ref_logits, max_w, log_sum_w, compute)
    p = jnp.exp(log_p)
    # p_v = 0 contributes 0 even where r_v = 0 too (0 * inf would be NaN).
    coefficient = jnp.where(valid[:, None] & (p > 0), p * ((log_p - log_r) - kl[:, None]), 0)
    return jnp.sum(coefficient * tangent.astype(compute), axis=-1)


@functools.partial(jax.checkpoint, policy=_NOTHING_SAVED)
def _ref_logits_tangent(logits, ref_logits, valid, kl, stats, tangent):
    """``sum_v (r_v - p_v) dw_v`` per row (0 for masked rows)."""
    max_z, max_w, log_sum_z, log_sum_w = stats
    compute = kl.dtype
    # p recomputed here rather than shared with the logits' tangent: given one shared
    # float32 p, XLA:CPU materialises it for 16-bit inputs instead of fusing it into
    # both gradient passes.
    p = jnp.exp(_log_probs(logits, max_z, log_sum_z, compute))
    r = jnp.exp(_log_probs(ref_logits, max_w, log_sum_w, compute))
    coefficient = jnp.where(valid[:, None], r - p, 0)
    return jnp.sum(coefficient * tangent.astype(compute), axis=-1)


@functools.partial(jax.checkpoint, policy=_NOTHING_SAVED)
def _expected_tangent(x, row_max, log_sum, tangent):
    """``sum_v softmax(x)_v dx_v`` per row."""
    compute = row_max.dtype
    weights = jnp.exp(_log_probs(x, row_max, log_sum, compute))
    return jnp.sum(weights * tangent.astype(compute), axis=-1)


def _full_kl_jvp(chunk_size, primals, tangents):
    """dKL = sum_v p_v (a_v - KL) dz_v + sum_v (r_v - p_v) dw_v, a_v = log p_v - log r_v.

    A custom JVP (not a custom VJP) so that forward mode (``jax.jvp``, ``jax.jacfwd``)
    works too; reverse mode transposes the same linear map (see ``_logits_tangent``).
    """
    logits, ref_logits, valid = primals
    d_logits, d_ref_logits, _ = tangents
    kl, stats = _statistics(chunk_size, logits, ref_logits)
    out = jnp.where(valid, kl, 0)
    tangent = jnp.zeros_like(out)
    if not isinstance(d_logits, SymbolicZero):
        tangent = tangent + _logits_tangent(logits, ref_logits, valid, kl, stats, d_logits)
    if not isinstance(d_ref_logits, SymbolicZero):
        tangent = tangent + _ref_logits_tangent(logits, ref_logits, valid, kl, stats,
                                                d_ref_logits)
    return out, tangent


_full_kl_2d.defjvp(_full_kl_jvp, symbolic_zeros=True)
_statistics.defjvp(_statistics_jvp, symbolic_zeros=True)


def full_kl(
    logits: ArrayLike,
    ref_logits: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    chunk_size: int | None = None,
) -> Array:
    r"""Exact KL(softmax(logits) || softmax(ref_logits)) per token, streamed over vocab.

    .. math:: KL_t = \sum_v p_{tv} (\log p_{tv} - \log r_{tv}),\quad
              p_t = \mathrm{softmax}(z_t),\ r_t = \mathrm{softmax}(w_t).

    This is the quantity the per-token estimators of :func:`jaxkl.rl.token_kl` estimate
    from one sampled token; with the full logits at hand it costs one read of both
    arrays. No ``[tokens, vocab]`` float32 array is materialised in the forward or the
    backward pass (see the module docstring); bf16 logits are upcast row by row (chunk by chunk).
    Forward mode (``jax.jvp``, ``jax.jacfwd``) and higher derivatives are supported.

    ``-inf`` logits are allowed: ``p_v = 0`` terms contribute 0, and ``p_v > 0`` where
    ``r_v = 0`` gives ``inf``, the exact value; so does a reference row with no finite
    logit. A policy row with no finite logit is not a distribution and gives NaN: mask
    such rows (``mask``), which then give 0 with zero gradient. Where the KL is ``inf``
    its gradient does not exist and holds non-finite entries.

    Accuracy: the KL is a difference of ``O(|z - w|)`` averages, so its float32 error is
    absolute, a few ``eps * max(z - max z)`` (about 1e-7 for logits spread over ~10):
    relative 1e-5 for KLs above ~1e-2, like the naive float32 ``log_softmax``; use
    float64 inputs to resolve KLs of 1e-8.

    Args:
      logits: policy logits ``[..., V]``, float dtype (bf16 is fine).
      ref_logits: reference logits, same shape.
      mask: optional bool/0-1 array of shape ``logits.shape[:-1]`` (other concrete values
        raise ValueError); masked tokens give 0
        with zero gradient, whatever their logits hold.
      chunk_size: vocabulary entries per streamed chunk of the forward pass (a static
        positive int), or ``None`` (default): one row at a time on CPU, chunks of
        :func:`auto_chunk_size` elsewhere (the platform the call is compiled for); the
        backward pass is one elementwise pass.

    Returns:
      KL per token, shape ``logits.shape[:-1]``, float32 (float64 for f64 inputs).
      Differentiable in both arguments; the gradients have the inputs' dtypes.

    Raises:
      TypeError: non-float logits or a mask that is not boolean/numeric.
      ValueError: mismatched shapes, a scalar or an empty vocabulary axis, a bad
        ``chunk_size``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> z = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
      >>> w = jnp.log(jnp.array([[0.25, 0.5, 0.25]]))
      >>> rl.full_kl(z, w, chunk_size=2)  # 0.25 * log 2
      Array([0.1732868], dtype=float32)
    """
    logits = check_logits(logits)
    ref_logits = check_float_array(ref_logits, "ref_logits")
    check_same_shape([("logits", logits), ("ref_logits", ref_logits)])
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    batch_shape = logits.shape[:-1]
    if mask is None:
        valid = jnp.ones(batch_shape, bool)
    else:
        valid = check_mask(mask, batch_shape)
    return full_kl_values(logits, ref_logits, valid, chunk_size)


# Compiled once per shape, dtype and chunk size, also for eager callers: run op by op,
# the CPU forward pass's 16 row-block loops of 16-bit inputs cost 4 s a call ([37, 300]).
@functools.partial(jax.jit, static_argnums=(3,))
def full_kl_values(logits: Array, ref_logits: Array, valid: Array, chunk_size: int | None
                   ) -> Array:
    """:func:`full_kl` on checked inputs: float ``[..., V]`` logits of one shape, a bool
    mask ``[...]`` and a validated ``chunk_size`` (or None)."""
    chex.assert_equal_shape([logits, ref_logits])
    chex.assert_type(valid, bool)
    batch_shape, vocab = logits.shape[:-1], logits.shape[-1]
    chex.assert_shape(valid, batch_shape)
    kl = _full_kl_2d(
        chunk_size,
        logits.reshape(-1, vocab),
        ref_logits.reshape(-1, vocab),
        valid.reshape(-1),
    )
    return kl.reshape(batch_shape)
