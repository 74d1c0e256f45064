r"""Token log-probabilities, entropy and the exact full-vocabulary KL from hidden states.

The logits of a language model are ``z = h W / tau``: final hidden states ``h``
(``[tokens, D]``) times the unembedding (LM head) ``W`` (``[D, V]``). At 32,768 tokens
and a 152,064-entry vocabulary the float32 logits alone take 20 GB. The functions here
never form them: the forward pass loops over blocks of ``block_tokens`` tokens and,
inside, over blocks of ``block_vocab`` vocabulary entries, computes each
``[block_tokens, block_vocab]`` tile of logits by one matmul accumulated in float32
(``preferred_element_type``), and folds it into per-token running statistics with the
online log-sum-exp of Milakov & Gimelshein (2018): the running maximum ``M``, the sum
``S = sum_v exp(z_v - M)``, and

- for ``token_logprobs_from_hidden``, the picked logit ``z_y``: ``log p_y = z_y - M - log S``;
- for ``entropy_from_hidden``, ``A = sum_v exp(z_v - M) (z_v - M)``: ``H = log S - A / S``;
- for ``full_kl_from_hidden``, the two models' ``M``, ``S`` and
  ``A = sum_v exp(z_v - M_z) ((z_v - M_z) - (w_v - M_w))``:
  ``KL = A / S_z - log S_z + log S_w``, the statistics of :func:`jaxkl.rl.full_kl`.

When a block raises the maximum from ``M`` to ``M'`` the old sums are rescaled:
``S <- S e^{M - M'}`` and ``A <- e^{M - M'} (A - S (M' - M))`` (with ``S`` the old sum).

The backward pass is a custom VJP. With a cotangent ``g`` per token and the per-token
statistics of the forward pass (the log-normalisers and the output), the gradient with
respect to each tile of logits is elementwise,

.. math::
    \frac{\partial \log p_y}{\partial z_v} = \frac{[v = y] - p_v}{\tau}, \quad
    \frac{\partial H}{\partial z_v} = -\frac{p_v (\log p_v + H)}{\tau}, \quad
    \frac{\partial KL}{\partial z_v} = \frac{p_v (\log p_v - \log r_v - KL)}{\tau}, \quad
    \frac{\partial KL}{\partial w_v} = \frac{r_v - p_v}{\tau},

so each tile is recomputed (one matmul per model), turned into its coefficient tile
``C = g * dF/dz`` and multiplied back: ``dh += C W_block^T`` and ``dW_block += h^T C``.
The backward pass loops over vocabulary blocks outside and token blocks inside, so each
``dW`` block is accumulated in float32 (``[D, block_vocab]``) and written once into the
gradient; ``dh`` is accumulated in a float32 ``[tokens, D]`` array (the gradient itself
for float32 hidden states, at most an extra ``4 * tokens * D`` bytes for 16-bit ones:
128 MiB at 32,768 x 1,024). Gradients are computed only for the inputs that are differentiated
(``symbolic_zeros``): a frozen unembedding or reference model costs no ``dW`` matmuls.

Memory, from compiled ``memory_analysis`` on XLA:CPU (tests/test_rl_hidden.py), at
32,768 tokens x D = 1,024 x V = 152,064, against the 18.6 GiB of float32 logits that
autodiff of the materialised ``token_logprobs(h @ W, y)`` keeps: ``token_logprobs_from_hidden``
needs 7 MiB of temporaries forward and 19 MiB forward + backward for float32 inputs
(float32 tiles), 370 and 444 MiB for bf16 inputs. Of those, 361 MiB is one uint16 copy
of the bf16 inputs: XLA:CPU has no bf16 arithmetic and hoists a float32 copy of a whole
bf16 array that a loop slices out of the loop (594 MiB for this unembedding), so on CPU
16-bit inputs are sliced as their uint16 bits and upcast tile by tile, as in
:func:`jaxkl.rl.full_kl`, which costs one uint16 copy. On other platforms
(``lax.platform_dependent``) 16-bit tiles are sliced as they are and multiplied in 16
bits with float32 accumulation (exact products); that path is not yet measured on an
accelerator.

This is what the fused linear cross-entropy kernels do for PyTorch: Liger Kernel's
``FusedLinearCrossEntropy`` (chunked over tokens, Hsu et al. 2024, arXiv:2410.10989)
and Cut Cross-Entropy (blockwise over tokens and vocabulary, Wijmans et al. 2024,
arXiv:2411.09009); here written with ``lax.fori_loop`` and a custom VJP rather than a
kernel, and extended to the entropy and the exact KL between two models.

Reference: M. Milakov and N. Gimelshein, "Online normalizer calculation for softmax",
2018, arXiv:1805.02867.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from jaxkl._src.numerics import as_storage_bits, from_storage_bits
from jaxkl._src.validation import (
    check_choice,
    check_float_array,
    check_mask,
    check_positive_int,
    check_positive_number,
    check_token_ids,
    compute_dtype,
)

Array = jax.Array

# Default (block_tokens, block_vocab) per platform. On CPU, tiles of 256 x 1024 float32
# logits (1 MiB) stay in cache: at 2048 tokens x D = 256 x V = 32,768 (float32) value
# and gradient took 0.84x (logprobs) and 0.94x (full_kl) the materialised computation's
# time with them, 1.02x and 1.01x with 1024 x 4096 (scripts/bench_hidden.py,
# BENCHMARKS.md). Elsewhere every loop step costs kernel launches, so tiles are larger:
# 1024 x 4096 float32 logits are 16 MiB (not yet measured on an accelerator).
DEFAULT_BLOCKS = {"cpu": (256, 1024), "default": (1024, 4096)}
LAYOUTS = ("dv", "vd")


class _Config(NamedTuple):
    """The static settings of one call (hashable: a ``nondiff_argnums`` argument)."""

    temperature: float
    block_tokens: int | None  # None: DEFAULT_BLOCKS for the platform
    block_vocab: int | None
    rows: int
    vocab: int
    layout: str  # "dv": unembedding [D, V]; "vd": [V, D]
    compute: str  # "float32" or "float64"
    # 16-bit inputs sliced as uint16 bits and upcast per tile (XLA:CPU), or sliced as
    # they are and multiplied in 16 bits with float32 accumulation (elsewhere).
    storage: bool = True


# ---- blocks ------------------------------------------------------------------------


def _for_blocks(total: int, block: int, body, carry):
    """``carry = body(start, size, carry)`` over ``[0, total)`` in blocks of ``block``.

    Full blocks run in a ``fori_loop``; a ragged last block (``total % block`` entries)
    runs once after it, with its own static size, so no input is padded.
    """
    full, rest = divmod(total, block)
    if full == 1:
        carry = body(0, block, carry)
    elif full > 1:
        carry = jax.lax.fori_loop(0, full, lambda k, c: body(k * block, block, c), carry)
    if rest:
        carry = body(full * block, rest, carry)
    return carry


def _load(block: Array, dtype, compute, storage: bool) -> Array:
    """A block as ``compute`` floats when stored as bits (``storage``), else as it is."""
    return from_storage_bits(block, dtype, compute) if storage else block


class _Side(NamedTuple):
    """One model's stored hidden states ``[N, D]`` and unembedding, with their dtypes."""

    hidden: Array
    unembedding: Array
    hidden_dtype: object
    unembedding_dtype: object


def _side(hidden: Array, unembedding: Array, storage: bool) -> _Side:
    dtypes = (hidden.dtype, unembedding.dtype)
    if storage:
        hidden, unembedding = as_storage_bits(hidden), as_storage_bits(unembedding)
    return _Side(hidden, unembedding, *dtypes)


def _hidden_block(side: _Side, start, size: int, cfg: _Config) -> Array:
    block = jax.lax.dynamic_slice_in_dim(side.hidden, start, size, axis=0)
    return _load(block, side.hidden_dtype, cfg.compute, cfg.storage)


def _vocab_axis(cfg: _Config) -> int:
    return 1 if cfg.layout == "dv" else 0


def _unembedding_block(side: _Side, start, size: int, cfg: _Config) -> Array:
    block = jax.lax.dynamic_slice_in_dim(side.unembedding, start, size, axis=_vocab_axis(cfg))
    return _load(block, side.unembedding_dtype, cfg.compute, cfg.storage)


def _dot(a: Array, b: Array, a_axis: int, b_axis: int, compute) -> Array:
    """``a`` and ``b`` contracted over one axis each, accumulated in ``compute``.

    Operands of different dtypes are both cast to ``compute``. 16-bit operands are
    multiplied as they are (their products are exact in float32); float32 ones at
    ``Precision.HIGHEST`` (no TF32 or bf16 passes on accelerators).
    """
    compute = jnp.dtype(compute)
    if a.dtype != b.dtype:
        a, b = a.astype(compute), b.astype(compute)
    dims = (((a_axis,), (b_axis,)), ((), ()))
    precision = (jax.lax.Precision.DEFAULT if a.dtype.itemsize == 2
                 else jax.lax.Precision.HIGHEST)
    return jax.lax.dot_general(a, b, dims, preferred_element_type=compute,
                               precision=precision)


def _logits(h: Array, w: Array, cfg: _Config) -> Array:
    """``[bt, bv]`` logits ``h W / tau`` of one tile (``w`` a block of the unembedding)."""
    z = _dot(h, w, 1, 1 - _vocab_axis(cfg), cfg.compute)
    return z if cfg.temperature == 1.0 else z / jnp.asarray(cfg.temperature, z.dtype)


def _rescale(old_max, new_max):
    return jnp.exp(old_max - new_max)


# ---- forward: per-token statistics -------------------------------------------------


def _lse_update(max_, sum_, z):
    """The running maximum and shifted sum after a tile; also the new shift's terms."""
    new_max = jnp.maximum(max_, z.max(axis=-1))
    centered = z - new_max[:, None]
    exp = jnp.exp(centered)
    return new_max, sum_ * _rescale(max_, new_max) + exp.sum(axis=-1), centered, exp


def _init(rows: int, count: int, compute):
    """``count`` running (max, sum, ...) states: maxima start at the smallest float."""
    lowest = jnp.finfo(compute).min
    return tuple(jnp.full((rows,), lowest if i == 0 else 0, compute) for i in range(count))


def _statistics(kind: str, cfg: _Config, sides, tokens: Array):
    """Per-token statistics of ``kind`` for 2-D stored inputs, token blocks outside.

    Returns ``(value, log_normalisers...)``, each ``[N]``: the log-probability and the
    log-normaliser (``"logprobs"``), the entropy and the log-normaliser
    (``"entropy"``), or the KL and both log-normalisers (``"kl"``).
    """
    compute = jnp.dtype(cfg.compute)
    rows = sides[0].hidden.shape[0]
    vocab = sides[0].unembedding.shape[_vocab_axis(cfg)]
    outputs = 2 if kind != "kl" else 3

    def token_body(t0, bt, out):
        hs = [_hidden_block(side, t0, bt, cfg) for side in sides]
        ids = jax.lax.dynamic_slice_in_dim(tokens, t0, bt) if kind == "logprobs" else None

        def vocab_body(v0, bv, state):
            zs = [_logits(h, _unembedding_block(side, v0, bv, cfg), cfg)
                  for h, side in zip(hs, sides, strict=True)]
            if kind == "logprobs":
                max_, sum_, picked = state
                new_max, sum_, _, _ = _lse_update(max_, sum_, zs[0])
                columns = jax.lax.broadcasted_iota(jnp.int32, zs[0].shape, 1) + v0
                picked = picked + jnp.where(columns == ids[:, None], zs[0], 0).sum(axis=-1)
                return new_max, sum_, picked
            if kind == "entropy":
                max_, sum_, acc = state
                new_max, new_sum, centered, exp = _lse_update(max_, sum_, zs[0])
                acc = _rescale(max_, new_max) * (acc - sum_ * (new_max - max_))
                return new_max, new_sum, acc + (exp * centered).sum(axis=-1)
            max_z, sum_z, max_w, sum_w, acc = state
            new_max_z, new_sum_z, centered_z, exp_z = _lse_update(max_z, sum_z, zs[0])
            new_max_w, sum_w, centered_w, _ = _lse_update(max_w, sum_w, zs[1])
            moved = (new_max_z - max_z) - (new_max_w - max_w)
            acc = _rescale(max_z, new_max_z) * (acc - sum_z * moved)
            acc = acc + (exp_z * (centered_z - centered_w)).sum(axis=-1)
            return new_max_z, new_sum_z, new_max_w, sum_w, acc

        # (max, sum, picked/acc), or (max_z, sum_z, max_w, sum_w, acc) for the KL.
        state = _init(bt, 3, compute) if kind != "kl" else (
            _init(bt, 2, compute) + _init(bt, 3, compute))
        state = _for_blocks(vocab, cfg.block_vocab, vocab_body, state)
        if kind == "logprobs":
            max_, sum_, picked = state
            log_normalizer = max_ + jnp.log(sum_)
            values = (picked - log_normalizer, log_normalizer)
        elif kind == "entropy":
            max_, sum_, acc = state
            log_sum = jnp.log(sum_)
            # H >= 0 exactly; rounding near a one-hot row can leave -eps.
            values = (jnp.maximum(log_sum - acc / sum_, 0), max_ + log_sum)
        else:
            max_z, sum_z, max_w, sum_w, acc = state
            log_sum_z, log_sum_w = jnp.log(sum_z), jnp.log(sum_w)
            # KL >= 0 exactly; rounding can leave -eps near KL = 0.
            kl = jnp.maximum(acc / sum_z - (log_sum_z - log_sum_w), 0)
            values = (kl, max_z + log_sum_z, max_w + log_sum_w)
        return tuple(jax.lax.dynamic_update_slice_in_dim(o, v, t0, axis=0)
                     for o, v in zip(out, values, strict=True))

    out = tuple(jnp.zeros((rows,), compute) for _ in range(outputs))
    return _for_blocks(rows, cfg.block_tokens, token_body, out)


# ---- backward ----------------------------------------------------------------------


def _coefficients(kind, cfg, zs, stats, g, ids, v0):
    """``g * dF/dlogits`` of one tile, per model, already divided by ``tau``."""
    scale = g[:, None] / jnp.asarray(cfg.temperature, g.dtype)
    if kind == "logprobs":
        _, log_normalizer = stats
        p = jnp.exp(zs[0] - log_normalizer[:, None])
        columns = jax.lax.broadcasted_iota(jnp.int32, zs[0].shape, 1) + v0
        onehot = (columns == ids[:, None]).astype(p.dtype)
        return [scale * (onehot - p)]
    if kind == "entropy":
        entropy, log_normalizer = stats
        log_p = zs[0] - log_normalizer[:, None]
        return [-scale * jnp.exp(log_p) * (log_p + entropy[:, None])]
    kl, log_normalizer_z, log_normalizer_w = stats
    log_p = zs[0] - log_normalizer_z[:, None]
    log_r = zs[1] - log_normalizer_w[:, None]
    p, r = jnp.exp(log_p), jnp.exp(log_r)
    return [scale * p * ((log_p - log_r) - kl[:, None]), scale * (r - p)]


def _gradients(kind, cfg, sides, tokens, stats, g, needs):
    """``(dh, dW)`` per model (None where not needed), vocabulary blocks outside."""
    compute = jnp.dtype(cfg.compute)
    rows = sides[0].hidden.shape[0]
    axis = _vocab_axis(cfg)
    vocab = sides[0].unembedding.shape[axis]
    need_h = [n[0] for n in needs]
    need_w = [n[1] for n in needs]

    def vocab_body(v0, bv, carry):
        dhs, dws = carry
        ws = [_unembedding_block(side, v0, bv, cfg) for side in sides]

        def token_body(t0, bt, inner):
            dhs, dw_blocks = inner
            hs = [_hidden_block(side, t0, bt, cfg) for side in sides]
            zs = [_logits(h, w, cfg) for h, w in zip(hs, ws, strict=True)]
            block_stats = [jax.lax.dynamic_slice_in_dim(s, t0, bt) for s in stats]
            ids = jax.lax.dynamic_slice_in_dim(tokens, t0, bt) if kind == "logprobs" else None
            coefs = _coefficients(kind, cfg, zs, block_stats,
                                  jax.lax.dynamic_slice_in_dim(g, t0, bt), ids, v0)
            new_dhs, new_dws = [], []
            for k, (h, w, coef) in enumerate(zip(hs, ws, coefs, strict=True)):
                dh = dhs[k]
                if need_h[k]:
                    part = _dot(coef, w.astype(compute), 1, axis, compute)  # [bt, D]
                    old = jax.lax.dynamic_slice_in_dim(dh, t0, bt, axis=0)
                    dh = jax.lax.dynamic_update_slice_in_dim(dh, old + part, t0, axis=0)
                dw = dw_blocks[k]
                if need_w[k]:
                    # [D, bv] = h^T C ("dv") or [bv, D] = C^T h ("vd").
                    h = h.astype(compute)
                    dw = dw + (_dot(h, coef, 0, 0, compute) if axis == 1
                               else _dot(coef, h, 0, 0, compute))
                new_dhs.append(dh)
                new_dws.append(dw)
            return new_dhs, new_dws

        dw_blocks = [jnp.zeros(w.shape, compute) if need else None
                     for w, need in zip(ws, need_w, strict=True)]
        dhs, dw_blocks = _for_blocks(rows, cfg.block_tokens, token_body, (dhs, dw_blocks))
        dws = [None if dw is None else jax.lax.dynamic_update_slice_in_dim(
                   dw, _stored(block, side, cfg), v0, axis=axis)
               for dw, block, side in zip(dws, dw_blocks, sides, strict=True)]
        return dhs, dws

    dhs = [jnp.zeros((rows, side.hidden.shape[1]), compute) if need else None
           for side, need in zip(sides, need_h, strict=True)]
    dws = [jnp.zeros(side.unembedding.shape, side.unembedding.dtype) if need else None
           for side, need in zip(sides, need_w, strict=True)]
    dhs, dws = _for_blocks(vocab, cfg.block_vocab, vocab_body, (dhs, dws))
    out = []
    for side, dh, dw in zip(sides, dhs, dws, strict=True):
        out.append(None if dh is None else dh.astype(side.hidden_dtype))
        out.append(None if dw is None else _unstore(dw, side.unembedding_dtype))
    return out


def _stored(block: Array, side: _Side, cfg: _Config) -> Array:
    """A float ``compute`` gradient block in the unembedding's (stored) dtype."""
    block = block.astype(side.unembedding_dtype)
    return as_storage_bits(block) if cfg.storage else block


def _unstore(x: Array, dtype) -> Array:
    return jax.lax.bitcast_convert_type(x, dtype) if x.dtype != dtype else x


# ---- the custom VJPs ---------------------------------------------------------------


def _for_platform(cfg: _Config, platform: str) -> _Config:
    """``cfg`` with the platform's block sizes (where not given, clipped to the axes)
    and 16-bit storage on CPU only."""
    block_tokens, block_vocab = DEFAULT_BLOCKS[platform]
    return cfg._replace(
        block_tokens=min(cfg.block_tokens or block_tokens, cfg.rows),
        block_vocab=min(cfg.block_vocab or block_vocab, cfg.vocab),
        storage=platform == "cpu",
    )


def _on_platform(fn, cfg: _Config, *args):
    """``fn(cfg, *args)`` with ``cfg`` for the platform the call is compiled for
    (``lax.platform_dependent`` lowers only that platform's branch)."""
    return jax.lax.platform_dependent(
        *args,
        cpu=functools.partial(fn, _for_platform(cfg, "cpu")),
        default=functools.partial(fn, _for_platform(cfg, "default")),
    )


def _primal(kind, cfg, arrays, tokens):
    def run(cfg, arrays, tokens):
        sides = [_side(arrays[i], arrays[i + 1], cfg.storage)
                 for i in range(0, len(arrays), 2)]
        return _statistics(kind, cfg, sides, tokens)

    return _on_platform(run, cfg, arrays, tokens)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _logprobs_2d(cfg, hidden, unembedding, tokens):
    return _primal("logprobs", cfg, (hidden, unembedding), tokens)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _entropy_2d(cfg, hidden, unembedding):
    return _primal("entropy", cfg, (hidden, unembedding), None)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _kl_2d(cfg, hidden, unembedding, ref_hidden, ref_unembedding, valid):
    return jnp.where(valid, _primal("kl", cfg, (hidden, unembedding, ref_hidden,
                                                ref_unembedding), None)[0], 0)


def _fwd(kind, cfg, arrays, tokens):
    """Primal output and residuals: the inputs, their perturbed flags, the statistics."""
    values = tuple(a.value for a in arrays)
    stats = _primal(kind, cfg, values, tokens)
    # The flags travel as pytree structure (None or an empty tuple), not as arrays.
    flags = tuple(() if a.perturbed else None for a in arrays)
    return stats[0], (values, flags, tokens, stats)


def _bwd(kind, cfg, residuals, g):
    values, flags, tokens, stats = residuals
    arrays_count = len(values)
    if isinstance(g, SymbolicZero):
        return (None,) * arrays_count
    needs = [(flags[i] is not None, flags[i + 1] is not None)
             for i in range(0, arrays_count, 2)]

    def run(cfg, values, tokens, stats, g):
        sides = [_side(values[i], values[i + 1], cfg.storage)
                 for i in range(0, arrays_count, 2)]
        return tuple(_gradients(kind, cfg, sides, tokens, stats, g, needs))

    return _on_platform(run, cfg, values, tokens, stats, g.astype(jnp.dtype(cfg.compute)))


def _logprobs_fwd(cfg, hidden, unembedding, tokens):
    out, res = _fwd("logprobs", cfg, (hidden, unembedding), tokens.value)
    return out, res


def _logprobs_bwd(cfg, res, g):
    return (*_bwd("logprobs", cfg, res, g), None)


def _entropy_fwd(cfg, hidden, unembedding):
    return _fwd("entropy", cfg, (hidden, unembedding), None)


def _entropy_bwd(cfg, res, g):
    return _bwd("entropy", cfg, res, g)


def _kl_fwd(cfg, hidden, unembedding, ref_hidden, ref_unembedding, valid):
    out, res = _fwd("kl", cfg, (hidden, unembedding, ref_hidden, ref_unembedding), None)
    valid = valid.value
    return jnp.where(valid, out, 0), (res, valid)


def _kl_bwd(cfg, res, g):
    res, valid = res
    if not isinstance(g, SymbolicZero):
        g = jnp.where(valid, g, jnp.zeros_like(g))
    return (*_bwd("kl", cfg, res, g), None)


_logprobs_2d.defvjp(_logprobs_fwd, _logprobs_bwd, symbolic_zeros=True)
_entropy_2d.defvjp(_entropy_fwd, _entropy_bwd, symbolic_zeros=True)
_kl_2d.defvjp(_kl_fwd, _kl_bwd, symbolic_zeros=True)


# ---- public edge -------------------------------------------------------------------


def _check_temperature(temperature) -> float:
    temperature = check_positive_number(temperature, "temperature")
    if not math.isfinite(temperature):
        raise ValueError(f"`temperature` must be a positive finite number, got {temperature}.")
    return temperature


def _check_pair(hidden, unembedding, hidden_name: str, unembedding_name: str, layout: str):
    """Float ``[..., D]`` hidden states and a ``[D, V]`` (or ``[V, D]``) unembedding."""
    hidden = check_float_array(hidden, hidden_name)
    unembedding = check_float_array(unembedding, unembedding_name)
    if hidden.ndim < 1:
        raise ValueError(f"`{hidden_name}` must have a hidden axis (rank >= 1), got a scalar.")
    if unembedding.ndim != 2:
        raise ValueError(
            f"`{unembedding_name}` must be a matrix ({'[D, V]' if layout == 'dv' else '[V, D]'}"
            f" for unembedding_layout={layout!r}), got shape {unembedding.shape}."
        )
    d_axis = 0 if layout == "dv" else 1
    if unembedding.shape[d_axis] != hidden.shape[-1]:
        raise ValueError(
            f"`{unembedding_name}` has shape {unembedding.shape}: its hidden axis (axis "
            f"{d_axis} for unembedding_layout={layout!r}) must have the size of "
            f"`{hidden_name}`'s last axis, {hidden.shape[-1]}."
        )
    if hidden.shape[-1] == 0 or unembedding.shape[1 - d_axis] == 0:
        raise ValueError(
            f"`{hidden_name}` {hidden.shape} and `{unembedding_name}` {unembedding.shape} "
            "must have a non-empty hidden axis and vocabulary."
        )
    return hidden, unembedding


def _config(temperature, block_tokens, block_vocab, unembedding_layout, rows, vocab, *arrays):
    temperature = _check_temperature(temperature)
    if block_tokens is not None:
        block_tokens = check_positive_int(block_tokens, "block_tokens")
    if block_vocab is not None:
        block_vocab = check_positive_int(block_vocab, "block_vocab")
    return _Config(temperature, block_tokens, block_vocab, rows, vocab, unembedding_layout,
                   compute_dtype(*arrays).name)


def _vocab_size(unembedding: Array, layout: str) -> int:
    return unembedding.shape[1 if layout == "dv" else 0]


def token_logprobs_from_hidden(
    hidden: ArrayLike,
    unembedding: ArrayLike,
    tokens: ArrayLike,
    *,
    temperature: float = 1.0,
    unembedding_layout: str = "dv",
    block_tokens: int | None = None,
    block_vocab: int | None = None,
) -> Array:
    r"""``log pi(y_t)`` under ``softmax(h_t W / tau)``, without forming the logits.

    .. math:: \log \pi(y_t) = \frac{h_t \cdot W_{:, y_t}}{\tau}
              - \log \sum_v \exp\Big(\frac{h_t \cdot W_{:, v}}{\tau}\Big)

    Equal to ``rl.token_logprobs(hidden @ unembedding, tokens, temperature=tau)`` but
    computed tile by tile over ``block_tokens`` tokens x ``block_vocab`` vocabulary
    entries with an online log-sum-exp, and differentiated by a custom VJP that
    recomputes each tile (module docstring): memory beyond the inputs and gradients is a
    few float32 tiles (plus a float32 ``[tokens, D]`` accumulator for the gradient of
    16-bit hidden states, and on XLA:CPU one uint16 copy of 16-bit inputs), never
    ``[tokens, V]``: 19 MiB forward + backward at 32,768 tokens x D = 1,024 x
    V = 152,064 in float32, 444 MiB in bf16 on CPU, against 18.6 GiB of float32 logits.
    Matmuls accumulate in float32 (float64 if an input is float64): float32 operands at
    ``Precision.HIGHEST``, 16-bit ones with exact products (upcast per tile on CPU).
    The approach of fused linear cross-entropy kernels (Liger Kernel; Cut Cross-Entropy,
    Wijmans et al. 2024, arXiv:2411.09009).

    A bias ``b`` (``z = h W + b``) is the same computation with a column of ones
    appended to ``hidden`` and ``b`` appended to ``unembedding`` as a row.

    Args:
      hidden: ``[..., D]`` float final hidden states (bf16, float16, float32, float64),
        aligned with ``tokens`` (the states at step ``t`` predict token ``t + 1``:
        usually ``hidden[:, :-1]`` against ``tokens[:, 1:]``).
      unembedding: the LM head, ``[D, V]`` float (``unembedding_layout="dv"``), or
        ``[V, D]`` (``"vd"``: a tied embedding table as stored, no transpose needed).
      tokens: ``[...]`` integer ids in ``[0, V)``, the shape of ``hidden[..., 0]``.
      temperature: ``tau``, a positive finite Python number (static).
      unembedding_layout: ``"dv"`` (default) or ``"vd"``, the layout of ``unembedding``.
      block_tokens: tokens per tile (static positive int); default 256 on CPU, 1024
        elsewhere.
      block_vocab: vocabulary entries per tile (static positive int); default 1024 on
        CPU, 4096 elsewhere.
        Neither needs to divide its axis: a ragged last block is computed on its own.

    Returns:
      ``[...]`` log-probabilities (nats, ``<= 0``), float32 (float64 if an input is
      float64). Differentiable (reverse mode) in ``hidden`` and ``unembedding``; the
      gradients have their dtypes.

    Raises:
      TypeError: non-float ``hidden``/``unembedding``, non-integer ``tokens``, a
        non-integer block size or non-numeric temperature.
      ValueError: ``unembedding`` not a matrix or its hidden axis not ``D``; ``tokens``
        of the wrong shape; an id outside ``[0, V)`` (checked when ``tokens`` is
        concrete; under ``jit`` such an id gives NaN); a bad temperature, block size or
        layout.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> hidden = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> unembedding = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # [D=2, V=3]
      >>> got = rl.token_logprobs_from_hidden(hidden, unembedding, jnp.array([0, 1]),
      ...                                     block_vocab=2)
      >>> want = rl.token_logprobs(hidden @ unembedding, jnp.array([0, 1]))
      >>> bool(jnp.allclose(got, want)), got
      (True, Array([-0.55144465, -0.23954487], dtype=float32))
    """
    check_choice(unembedding_layout, "unembedding_layout", LAYOUTS)
    hidden, unembedding = _check_pair(hidden, unembedding, "hidden", "unembedding",
                                      unembedding_layout)
    batch_shape, dim = hidden.shape[:-1], hidden.shape[-1]
    vocab = _vocab_size(unembedding, unembedding_layout)
    tokens = check_token_ids(tokens, vocab, shape_of=("hidden", hidden.shape, "hidden"),
                             vocab_of="unembedding")
    rows = math.prod(batch_shape)
    if rows == 0:
        return jnp.zeros(batch_shape, compute_dtype(hidden, unembedding))
    cfg = _config(temperature, block_tokens, block_vocab, unembedding_layout, rows, vocab,
                  hidden, unembedding)
    tokens = tokens.reshape(-1)
    in_range = (tokens >= 0) & (tokens < vocab)
    out = _logprobs_2d(cfg, hidden.reshape(rows, dim), unembedding,
                       jnp.where(in_range, tokens, 0).astype(jnp.int32))
    out = jnp.where(in_range, out, jnp.nan).reshape(batch_shape)
    chex.assert_shape(out, batch_shape)
    return out


def entropy_from_hidden(
    hidden: ArrayLike,
    unembedding: ArrayLike,
    *,
    temperature: float = 1.0,
    unembedding_layout: str = "dv",
    block_tokens: int | None = None,
    block_vocab: int | None = None,
) -> Array:
    r"""Per-token entropy of ``pi = softmax(h_t W / tau)`` in nats, without the logits.

    .. math:: H_t = -\sum_v \pi_{tv} \log \pi_{tv} = \log S_t - A_t / S_t, \quad
              S_t = \sum_v e^{z_{tv} - M_t},\ A_t = \sum_v e^{z_{tv} - M_t} (z_{tv} - M_t)

    with ``z = h W / tau`` and ``M_t`` the running maximum, accumulated tile by tile
    (module docstring). Equal to ``rl.entropy(hidden @ unembedding, temperature=tau)``;
    the gradient ``-pi_v (log pi_v + H) / tau`` per logit is applied tile by tile in a
    custom VJP. Arguments, dtypes and memory as for
    :func:`jaxkl.rl.token_logprobs_from_hidden`.

    Args:
      hidden: ``[..., D]`` float hidden states.
      unembedding: ``[D, V]`` (``unembedding_layout="dv"``) or ``[V, D]`` (``"vd"``).
      temperature: ``tau``, a positive finite Python number (static).
      unembedding_layout: ``"dv"`` (default) or ``"vd"``.
      block_tokens: tokens per tile (static); default 256 on CPU, 1024 elsewhere.
      block_vocab: vocabulary entries per tile (static); default 1024 on CPU, 4096
        elsewhere.

    Returns:
      ``[...]`` entropies in nats, in ``[0, log V]``, float32 (float64 if an input is
      float64). Differentiable (reverse mode) in ``hidden`` and ``unembedding``.

    Raises:
      TypeError: non-float inputs, a non-integer block size or non-numeric temperature.
      ValueError: ``unembedding`` not a matrix or its hidden axis not ``D``; a bad
        temperature, block size or layout.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> rl.entropy_from_hidden(jnp.ones((1, 2)), jnp.zeros((2, 4)))  # uniform: log 4
      Array([1.3862944], dtype=float32)
    """
    check_choice(unembedding_layout, "unembedding_layout", LAYOUTS)
    hidden, unembedding = _check_pair(hidden, unembedding, "hidden", "unembedding",
                                      unembedding_layout)
    batch_shape, dim = hidden.shape[:-1], hidden.shape[-1]
    vocab = _vocab_size(unembedding, unembedding_layout)
    rows = math.prod(batch_shape)
    if rows == 0:
        return jnp.zeros(batch_shape, compute_dtype(hidden, unembedding))
    cfg = _config(temperature, block_tokens, block_vocab, unembedding_layout, rows, vocab,
                  hidden, unembedding)
    return _entropy_2d(cfg, hidden.reshape(rows, dim), unembedding).reshape(batch_shape)


def full_kl_from_hidden(
    hidden: ArrayLike,
    unembedding: ArrayLike,
    ref_hidden: ArrayLike,
    ref_unembedding: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    temperature: float = 1.0,
    unembedding_layout: str = "dv",
    block_tokens: int | None = None,
    block_vocab: int | None = None,
) -> Array:
    r"""Exact per-token KL(pi || pi_ref) over the vocabulary from two models' hidden states.

    .. math:: KL_t = \sum_v p_{tv} (\log p_{tv} - \log r_{tv}), \quad
              p_t = \mathrm{softmax}(h_t W / \tau),\
              r_t = \mathrm{softmax}(h^{ref}_t W^{ref} / \tau)

    Equal to ``rl.full_kl(hidden @ unembedding / tau, ref_hidden @ ref_unembedding / tau,
    mask=mask)`` and computed with the same shift-invariant streamed statistics (see
    :func:`jaxkl.rl.full_kl`), on tiles of both models' logits formed on the fly; the
    custom VJP recomputes each pair of tiles and applies
    ``dKL/dz_v = p_v (log p_v - log r_v - KL) / tau`` and ``dKL/dw_v = (r_v - p_v) / tau``.

    Both models are differentiable: the reference's gradients are exact too, and are
    computed only when asked for (a frozen reference, the usual case, costs no extra
    matmuls in the backward pass; no ``stop_gradient`` is needed, though one is harmless).
    The two models may have different hidden sizes (``D`` and ``D_ref``) and dtypes but
    share the vocabulary and ``unembedding_layout``.

    Args:
      hidden: policy hidden states ``[..., D]``, float.
      unembedding: policy LM head ``[D, V]`` (``"dv"``) or ``[V, D]`` (``"vd"``).
      ref_hidden: reference hidden states ``[..., D_ref]``, the batch shape of ``hidden``.
      ref_unembedding: reference LM head ``[D_ref, V]`` or ``[V, D_ref]``.
      mask: optional bool/0-1 array of shape ``hidden.shape[:-1]`` (other concrete values
        raise ValueError); masked tokens give 0
        with zero gradient.
      temperature: ``tau``, applied to both models' logits (static).
      unembedding_layout: ``"dv"`` (default) or ``"vd"``, for both unembeddings.
      block_tokens: tokens per tile (static); default 256 on CPU, 1024 elsewhere.
      block_vocab: vocabulary entries per tile (static); default 1024 on CPU, 4096
        elsewhere.

    Returns:
      ``[...]`` KL in nats, ``>= 0``, float32 (float64 if an input is float64).

    Raises:
      TypeError: non-float inputs, a non-boolean/numeric mask, a non-integer block size.
      ValueError: mismatched batch shapes or vocabularies, an unembedding whose hidden
        axis does not match its hidden states, a bad mask shape, temperature, block size
        or layout.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxkl import rl
      >>> h = jnp.ones((1, 1))
      >>> w = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))  # [D=1, V=3]
      >>> w_ref = jnp.log(jnp.array([[0.25, 0.5, 0.25]]))
      >>> rl.full_kl_from_hidden(h, w, h, w_ref, block_vocab=2)  # 0.25 * log 2
      Array([0.1732868], dtype=float32)
    """
    check_choice(unembedding_layout, "unembedding_layout", LAYOUTS)
    hidden, unembedding = _check_pair(hidden, unembedding, "hidden", "unembedding",
                                      unembedding_layout)
    ref_hidden, ref_unembedding = _check_pair(ref_hidden, ref_unembedding, "ref_hidden",
                                              "ref_unembedding", unembedding_layout)
    batch_shape = hidden.shape[:-1]
    if ref_hidden.shape[:-1] != batch_shape:
        raise ValueError(
            f"`ref_hidden` has shape {ref_hidden.shape} but `hidden` has shape "
            f"{hidden.shape}; their batch axes (all but the last) must be equal."
        )
    vocab = _vocab_size(unembedding, unembedding_layout)
    if _vocab_size(ref_unembedding, unembedding_layout) != vocab:
        raise ValueError(
            f"`ref_unembedding` has shape {ref_unembedding.shape} but `unembedding` has "
            f"shape {unembedding.shape}: their vocabularies must be equal."
        )
    valid = (jnp.ones(batch_shape, bool) if mask is None else
             check_mask(mask, batch_shape))
    rows = math.prod(batch_shape)
    if rows == 0:
        return jnp.zeros(batch_shape, compute_dtype(hidden, unembedding, ref_hidden,
                                                    ref_unembedding))
    cfg = _config(temperature, block_tokens, block_vocab, unembedding_layout, rows, vocab,
                  hidden, unembedding, ref_hidden, ref_unembedding)
    out = _kl_2d(cfg, hidden.reshape(rows, -1), unembedding, ref_hidden.reshape(rows, -1),
                 ref_unembedding, valid.reshape(-1))
    return out.reshape(batch_shape)
