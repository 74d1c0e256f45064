r"""Exact per-token KL(pi || pi_ref) over the whole vocabulary, streamed from logits.

With ``z`` the policy logits, ``w`` the reference logits, ``p = softmax(z)``,
``r = softmax(w)`` and row maxima ``M_z``, ``M_w``:

.. math::
    KL(p \| r) = \frac{\sum_v e^{z_v - M_z} d_v}{\sum_v e^{z_v - M_z}}
                 - \log \sum_v e^{z_v - M_z} + \log \sum_v e^{w_v - M_w},
    \qquad d_v = (z_v - M_z) - (w_v - M_w).

The three sums are accumulated chunk by chunk over the vocabulary with the online
(running-maximum) rescaling of Milakov & Gimelshein 2018, so the forward pass reads
each logit once and keeps only ``[tokens, chunk]`` float32 temporaries. Writing
``d`` with each row's own maximum makes the formula invariant to shifting either
logit vector: identical logits give exactly 0, and the error does not grow with a
common offset of the logits, as it does in ``E_p[z - w] - (lse(z) - lse(w))``.

The backward pass is elementwise given four numbers per token:

.. math:: \partial KL / \partial z_v = p_v (a_v - KL), \quad
          \partial KL / \partial w_v = r_v - p_v, \quad a_v = \log p_v - \log r_v,

so a custom VJP writes the two gradients chunk by chunk into their buffers, without
the ``[tokens, vocab]`` float32 ``log_softmax`` arrays that autodiff of the naive
formula keeps.

Reference: M. Milakov and N. Gimelshein, "Online normalizer calculation for softmax",
2018, arXiv:1805.02867.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxkl._validation import check_float_array, check_positive_int, check_same_shape, compute_dtype
from jaxkl.rl.token_kl import check_mask

Array = jax.Array

# 2048 x 4096 float32 = 32 MiB per temporary at 2048 tokens; small against the
# 1.2 GB of a 2048 x 152064 bf16 logit pair, large enough to amortise the loop.
DEFAULT_CHUNK_SIZE = 4096


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


def _storage(x: Array) -> Array:
    """16-bit floats as their uint16 bits: slicing and in-place updates then stay 16-bit.

    (XLA:CPU has no bf16 arithmetic and upcasts a bf16 array that is dynamically
    sliced, hoisting a float32 copy of the whole input out of the loop; integer arrays
    are left alone.)
    """
    return jax.lax.bitcast_convert_type(x, jnp.uint16) if x.dtype.itemsize == 2 else x


def _load(chunk: Array, dtype, compute) -> Array:
    """A stored chunk as ``compute`` floats (bf16 -> f32 is exact: the bits shifted left)."""
    if dtype == jnp.bfloat16:
        bits = jax.lax.shift_left(chunk.astype(jnp.uint32), jnp.uint32(16))
        return jax.lax.bitcast_convert_type(bits, jnp.float32).astype(compute)
    if jnp.dtype(dtype).itemsize == 2:
        return jax.lax.bitcast_convert_type(chunk, dtype).astype(compute)
    return chunk.astype(compute)


def _store(values: Array, dtype) -> Array:
    return _storage(values.astype(dtype))


def _chunk(logits: Array, ref_logits: Array, start, size: int):
    """``[:, start:start + size]`` of both (stored) inputs."""
    return (
        jax.lax.dynamic_slice_in_dim(logits, start, size, axis=1),
        jax.lax.dynamic_slice_in_dim(ref_logits, start, size, axis=1),
    )


def _streamed_statistics(logits: Array, ref_logits: Array, chunk_size: int):
    """One pass over the vocabulary: per-row maxima, normalisers and KL of 2-D inputs."""
    dtype = compute_dtype(logits, ref_logits)
    rows, vocab = logits.shape
    dtypes = (logits.dtype, ref_logits.dtype)
    logits, ref_logits = _storage(logits), _storage(ref_logits)

    def update(carry, z, w):
        return _update(carry, _load(z, dtypes[0], dtype), _load(w, dtypes[1], dtype), dtype)

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
    max_z, max_w, sum_z, sum_w, acc = carry
    log_sum_z, log_sum_w = jnp.log(sum_z), jnp.log(sum_w)
    # KL >= 0 exactly; rounding can leave a value of order -eps near KL = 0, which would
    # turn into NaN downstream (sqrt, log), so it is clamped (found by a property test).
    kl = jnp.maximum(acc / sum_z - (log_sum_z - log_sum_w), 0)
    return kl, (max_z, max_w, log_sum_z, log_sum_w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _full_kl_2d(chunk_size: int, logits: Array, ref_logits: Array, valid: Array) -> Array:
    kl, _ = _streamed_statistics(logits, ref_logits, chunk_size)
    return jnp.where(valid, kl, 0)


def _full_kl_fwd(chunk_size, logits, ref_logits, valid):
    kl, stats = _streamed_statistics(logits, ref_logits, chunk_size)
    return jnp.where(valid, kl, 0), (logits, ref_logits, valid, kl, stats)


def _chunk_gradients(z, w, g, keep, kl, stats):
    """The two gradients on a ``[rows, chunk]`` slice (elementwise given per-row numbers)."""
    max_z, max_w, log_sum_z, log_sum_w = stats
    log_p = (z - max_z[:, None]) - log_sum_z[:, None]
    log_r = (w - max_w[:, None]) - log_sum_w[:, None]
    p, r = jnp.exp(log_p), jnp.exp(log_r)
    grad_z = jnp.where(keep & (p > 0), g * p * ((log_p - log_r) - kl[:, None]), 0)
    grad_w = jnp.where(keep, g * (r - p), 0)
    return grad_z, grad_w


def _full_kl_bwd(chunk_size, residuals, cotangent):
    logits, ref_logits, valid, kl, stats = residuals
    g = jnp.where(valid, cotangent, 0)[:, None]
    keep = valid[:, None]
    vocab = logits.shape[1]
    # Chunked like the forward pass and written in place into the gradient buffers, so
    # nothing [tokens, vocab] exists besides the inputs and the gradients themselves.
    dtypes, compute = (logits.dtype, ref_logits.dtype), kl.dtype
    logits, ref_logits = _storage(logits), _storage(ref_logits)
    grads = (jnp.zeros_like(logits), jnp.zeros_like(ref_logits))

    def write(start, size, grads):
        z, w = _chunk(logits, ref_logits, start, size)
        z, w = _load(z, dtypes[0], compute), _load(w, dtypes[1], compute)
        chunk_grads = _chunk_gradients(z, w, g, keep, kl, stats)
        return tuple(
            jax.lax.dynamic_update_slice_in_dim(full, _store(part, dtype), start, axis=1)
            for full, part, dtype in zip(grads, chunk_grads, dtypes, strict=True)
        )

    num_full = vocab // chunk_size
    if num_full > 0:
        grads = jax.lax.fori_loop(
            0, num_full, lambda i, grads: write(i * chunk_size, chunk_size, grads), grads
        )
    if vocab % chunk_size:
        start = num_full * chunk_size
        grads = write(start, vocab - start, grads)
    return tuple(
        jax.lax.bitcast_convert_type(grad, dtype) if grad.dtype != dtype else grad
        for grad, dtype in zip(grads, dtypes, strict=True)
    ) + (None,)


_full_kl_2d.defvjp(_full_kl_fwd, _full_kl_bwd)


def full_kl(logits, ref_logits, *, mask=None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Array:
    r"""Exact KL(softmax(logits) || softmax(ref_logits)) per token, streamed over vocab.

    .. math:: KL_t = \sum_v p_{tv} (\log p_{tv} - \log r_{tv}),\quad
              p_t = \mathrm{softmax}(z_t),\ r_t = \mathrm{softmax}(w_t).

    This is the quantity the per-token estimators of :func:`jaxkl.rl.token_kl` estimate
    from one sampled token; with the full logits at hand it costs one read of both
    arrays. No ``[tokens, vocab]`` float32 array is materialised in the forward or the
    backward pass (see the module docstring); bf16 logits are upcast chunk by chunk.
    ``-inf`` logits are allowed (``p_v = 0`` terms contribute 0; ``p_v > 0`` where
    ``r_v = 0`` gives ``inf``, the exact value).

    Accuracy: the KL is a difference of ``O(|z - w|)`` averages, so its float32 error is
    absolute, a few ``eps * max(z - max z)`` (about 1e-7 for logits spread over ~10):
    relative 1e-5 for KLs above ~1e-2, like the naive float32 ``log_softmax``; use
    float64 inputs to resolve KLs of 1e-8.

    Args:
      logits: policy logits ``[..., V]``, float dtype (bf16 is fine).
      ref_logits: reference logits, same shape.
      mask: optional bool/0-1 array of shape ``logits.shape[:-1]``; masked tokens give 0
        with zero gradient, whatever their logits hold.
      chunk_size: vocabulary entries per streamed chunk (a static positive int).

    Returns:
      KL per token, shape ``logits.shape[:-1]``, float32 (float64 for f64 inputs).
      Differentiable in both arguments; the gradients have the inputs' dtypes.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> z = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
      >>> w = jnp.log(jnp.array([[0.25, 0.5, 0.25]]))
      >>> rl.full_kl(z, w, chunk_size=2)  # 0.25 * log 2
      Array([0.1732868], dtype=float32)
    """
    logits = check_float_array(logits, "logits")
    ref_logits = check_float_array(ref_logits, "ref_logits")
    check_same_shape([("logits", logits), ("ref_logits", ref_logits)])
    if logits.ndim < 1:
        raise ValueError("`logits` must have a vocabulary axis (rank >= 1), got a scalar.")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    batch_shape, vocab = logits.shape[:-1], logits.shape[-1]
    if mask is None:
        valid = jnp.ones(batch_shape, bool)
    else:
        valid = check_mask(mask, batch_shape)
    kl = _full_kl_2d(
        chunk_size,
        logits.reshape(-1, vocab),
        ref_logits.reshape(-1, vocab),
        valid.reshape(-1),
    )
    return kl.reshape(batch_shape)
