"""token_logprobs_from_hidden, entropy_from_hidden, full_kl_from_hidden (issue 18, item 6).

Oracles: the materialised computation (``hidden @ unembedding`` in float64 NumPy, then
``log_softmax``, ``-sum p log p`` and ``sum p (log p - log r)`` from the definitions; its
gradients by the chain rule through the logits, ``dh = C W^T``, ``dW = h^T C`` with the
closed-form coefficients ``C``), autodiff of the materialised JAX computation
(``rl.token_logprobs(hidden @ W)``, ``rl.entropy``, ``rl.full_kl``), and compiled
``memory_analysis`` for the memory claims (compile only: nothing big is allocated).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxkl import rl

HIGHEST = jax.lax.Precision.HIGHEST


def arrays(seed, shapes, dtype=jnp.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(0, scale, s), jnp.float32).astype(dtype) for s in shapes]


def f64(x):
    return np.asarray(np.asarray(x, np.float32), np.float64)


def log_softmax64(h, w, temperature=1.0):
    z = f64(h) @ f64(w) / temperature
    return z - scipy.special.logsumexp(z, axis=-1, keepdims=True)


# Ragged on purpose: 37 tokens in blocks of 8, 101 vocabulary entries in blocks of 16.
N, D, D_REF, V = 37, 24, 19, 101
BLOCKS = dict(block_tokens=8, block_vocab=16)


def oracle(kind, h, w, y=None, h_ref=None, w_ref=None, temperature=1.0, cotangent=None):
    """Float64 values and gradients (w.r.t. h, w[, h_ref, w_ref]) of sum(cotangent * F)."""
    log_p = log_softmax64(h, w, temperature)
    p = np.exp(log_p)
    g = np.ones(log_p.shape[0]) if cotangent is None else f64(cotangent)
    if kind == "logprobs":
        value = log_p[np.arange(len(y)), np.asarray(y)]
        coefs = [np.eye(log_p.shape[1])[np.asarray(y)] - p]
        sides = [(h, w)]
    elif kind == "entropy":
        value = -np.sum(p * log_p, -1)
        coefs = [-p * (log_p + value[:, None])]
        sides = [(h, w)]
    else:
        log_r = log_softmax64(h_ref, w_ref, temperature)
        value = np.sum(p * (log_p - log_r), -1)
        coefs = [p * (log_p - log_r - value[:, None]), np.exp(log_r) - p]
        sides = [(h, w), (h_ref, w_ref)]
    grads = []
    for (hh, ww), c in zip(sides, coefs, strict=True):
        c = g[:, None] * c / temperature
        grads += [c @ f64(ww).T, f64(hh).T @ c]
    return value, grads


def ours(kind, args, y=None, **kw):
    """The function of ``kind`` on ``args`` (jitted: one compilation, not one per op)."""
    if kind == "logprobs":
        return jax.jit(lambda *a: rl.token_logprobs_from_hidden(*a, y, **kw))(*args)
    if kind == "entropy":
        return jax.jit(lambda *a: rl.entropy_from_hidden(*a, **kw))(*args)
    return jax.jit(lambda *a: rl.full_kl_from_hidden(*a, **kw))(*args)


def inputs(kind, seed, dtype=jnp.float32):
    h, w, h_ref, w_ref = arrays(seed, [(N, D), (D, V), (N, D_REF), (D_REF, V)], dtype)
    y = jnp.asarray(np.random.default_rng(seed + 1).integers(0, V, N), jnp.int32)
    return ((h, w, h_ref, w_ref) if kind == "kl" else (h, w)), y


KINDS = ["logprobs", "entropy", "kl"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_and_gradients_equal_the_materialised_float64_computation(kind, temperature):
    args, y = inputs(kind, 0)
    (cotangent,) = arrays(9, [(N,)])
    kw = dict(temperature=temperature, **BLOCKS)
    value = ours(kind, args, y, **kw)
    grads = jax.grad(lambda *a: jnp.sum(ours(kind, a, y, **kw) * cotangent),
                     argnums=tuple(range(len(args))))(*args)
    ref = oracle(kind, *args[:2], y=y, h_ref=args[2] if kind == "kl" else None,
                 w_ref=args[3] if kind == "kl" else None, temperature=temperature,
                 cotangent=cotangent)
    assert value.dtype == jnp.float32 and value.shape == (N,)
    np.testing.assert_allclose(np.asarray(value), ref[0], rtol=2e-6, atol=2e-6)
    for got, want in zip(grads, ref[1], strict=True):
        assert got.dtype == jnp.float32 and got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5,
                                   atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("kind", KINDS)
def test_equal_to_jax_autodiff_of_the_materialised_logits(kind):
    """Against rl.token_logprobs / rl.entropy / rl.full_kl of ``hidden @ W`` (float32)."""
    args, y = inputs(kind, 1)
    tau = 0.9
    kw = dict(temperature=tau, **BLOCKS)

    def materialised(*a):
        z = jnp.matmul(a[0], a[1], precision=HIGHEST)
        if kind == "logprobs":
            return rl.token_logprobs(z, y, temperature=tau)
        if kind == "entropy":
            return rl.entropy(z, temperature=tau)
        w = jnp.matmul(a[2], a[3], precision=HIGHEST)
        return rl.full_kl(z / tau, w / tau)

    argnums = tuple(range(len(args)))
    np.testing.assert_allclose(np.asarray(ours(kind, args, y, **kw)),
                               np.asarray(materialised(*args)), rtol=1e-5, atol=2e-6)
    got = jax.grad(lambda *a: ours(kind, a, y, **kw).sum(), argnums)(*args)
    want = jax.grad(lambda *a: materialised(*a).sum(), argnums)(*args)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4,
                                   atol=1e-5 * float(jnp.abs(w).max()))


# Per input dtype: (seed, value dtype, value rtol and atol, gradient rtol, gradient atol
# as a share of the largest gradient entry).
DTYPE_CASES = {
    # float64 inputs compute in float64 throughout (under x64).
    "float64": (2, jnp.float64, 1e-12, 1e-13, 1e-11, 1e-12),
    # bf16 hidden states and unembedding: the products are exact in float32 and summed in
    # float32, so the value equals the float64 computation on the rounded inputs to
    # float32 accuracy; the gradients come back in bf16 (their rounding is the error).
    "bfloat16": (3, jnp.float32, 2e-6, 2e-6, 2.0**-8, 2.0**-8),
}


@pytest.mark.parametrize("dtype", DTYPE_CASES)
@pytest.mark.parametrize("kind", KINDS)
def test_float64_and_bfloat16_inputs(kind, dtype, request):
    """Values and gradients against the float64 materialised computation on the same
    (rounded) inputs, in each input dtype's own accuracy (DTYPE_CASES)."""
    if dtype == "float64":
        request.getfixturevalue("x64")
    seed, value_dtype, rtol, atol, grad_rtol, grad_atol = DTYPE_CASES[dtype]
    args, y = inputs(kind, seed, jnp.dtype(dtype))
    value = ours(kind, args, y, **BLOCKS)
    grads = jax.grad(lambda *a: ours(kind, a, y, **BLOCKS).sum(),
                     argnums=tuple(range(len(args))))(*args)
    ref = oracle(kind, *args[:2], y=y, h_ref=args[2] if kind == "kl" else None,
                 w_ref=args[3] if kind == "kl" else None)
    assert value.dtype == value_dtype
    np.testing.assert_allclose(np.asarray(value), ref[0], rtol=rtol, atol=atol)
    for got, want in zip(grads, ref[1], strict=True):
        assert got.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(np.asarray(got).astype(np.float64), want, rtol=grad_rtol,
                                   atol=grad_atol * np.abs(want).max())


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_major_layout_and_block_sizes_do_not_change_the_result(kind):
    """``unembedding_layout="vd"`` ([V, D], a tied embedding as stored) equals ``"dv"``;
    blocks that divide the axes, blocks larger than them and the defaults agree."""
    args, y = inputs(kind, 4)
    transposed = tuple(a.T if i % 2 else a for i, a in enumerate(args))
    argnums = tuple(range(len(args)))
    base = ours(kind, args, y, **BLOCKS)
    base_grads = jax.jit(jax.grad(lambda *a: ours(kind, a, y, **BLOCKS).sum(), argnums))(*args)
    vd = lambda *a: ours(kind, a, y, unembedding_layout="vd", **BLOCKS)
    np.testing.assert_allclose(np.asarray(vd(*transposed)), np.asarray(base), rtol=1e-6,
                               atol=1e-6)
    vd_grads = jax.jit(jax.grad(lambda *a: vd(*a).sum(), argnums))(*transposed)
    for g, b, i in zip(vd_grads, base_grads, argnums, strict=True):
        np.testing.assert_allclose(np.asarray(g.T if i % 2 else g), np.asarray(b), rtol=1e-5,
                                   atol=1e-6)
    for blocks in ({}, dict(block_tokens=1, block_vocab=50)):
        np.testing.assert_allclose(np.asarray(ours(kind, args, y, **blocks)), np.asarray(base),
                                   rtol=1e-5, atol=2e-6)


def test_batch_axes_mask_jit_and_vmap():
    (h, w, h_ref, w_ref) = arrays(5, [(3, 4, D), (D, V), (3, 4, D_REF), (D_REF, V)])
    y = jnp.asarray(np.random.default_rng(6).integers(0, V, (3, 4)), jnp.int32)
    mask = jnp.asarray(np.random.default_rng(7).random((3, 4)) < 0.6)
    logprobs = lambda a, b: rl.token_logprobs_from_hidden(a, w, b, **BLOCKS)
    batched = jax.jit(logprobs)(h, y)
    flat = jax.jit(logprobs)(h.reshape(12, D), y.reshape(12))
    np.testing.assert_allclose(np.asarray(batched), np.asarray(flat).reshape(3, 4), rtol=1e-6)
    # Eagerly (no jit) and under vmap.
    np.testing.assert_allclose(np.asarray(logprobs(h, y)), np.asarray(batched), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(logprobs))(h, y)),
                               np.asarray(batched), rtol=1e-6)
    kl_fn = jax.jit(lambda a, m: rl.full_kl_from_hidden(a, w, h_ref, w_ref, mask=m, **BLOCKS))
    kl, unmasked = kl_fn(h, mask), kl_fn(h, jnp.ones((3, 4), bool))
    np.testing.assert_allclose(np.asarray(kl), np.where(mask, unmasked, 0), rtol=1e-6)
    grad = jax.jit(jax.grad(lambda a: kl_fn(a, mask).sum()))(h)
    assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0)
    assert np.any(np.asarray(grad)[np.asarray(mask)] != 0)
    vg = jax.jit(jax.vmap(jax.grad(lambda a, b: logprobs(a, b).sum())))(h, y)
    np.testing.assert_allclose(np.asarray(vg),
                               np.asarray(jax.jit(jax.grad(lambda a: logprobs(a, y).sum()))(h)),
                               rtol=1e-5, atol=1e-6)


def test_only_the_differentiated_inputs_get_gradients():
    """A frozen reference (or unembedding) is not differentiated: the gradient of the
    policy side alone equals the one taken with respect to everything."""
    (h, w, h_ref, w_ref), _ = inputs("kl", 8)
    fn = lambda *a: rl.full_kl_from_hidden(*a, **BLOCKS).sum()
    every = jax.jit(jax.grad(fn, argnums=(0, 1, 2, 3)))(h, w, h_ref, w_ref)
    policy = jax.jit(jax.grad(fn, argnums=(0, 1)))(h, w, h_ref, w_ref)
    hidden_only = jax.jit(jax.grad(fn))(h, w, h_ref, w_ref)
    frozen = jax.jit(jax.grad(lambda a, b: fn(a, b, jax.lax.stop_gradient(h_ref),
                                              jax.lax.stop_gradient(w_ref)),
                              argnums=(0, 1)))(h, w)
    # Separate compiled programs may sum in different orders (on a GPU they did, by
    # ~1e-6 relative): equal to float32 rounding, not bitwise.
    for got in (policy, frozen):
        for g, e in zip(got, every[:2], strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(hidden_only), np.asarray(every[0]), rtol=1e-5,
                               atol=1e-6)


def test_out_of_range_ids_raise_when_concrete_and_give_nan_under_jit():
    h, w = arrays(10, [(2, 3), (3, 5)])
    for bad in (jnp.array([0, 5]), jnp.array([-1, 0])):
        with pytest.raises(ValueError, match=r"`tokens` must hold ids in \[0, 5\)"):
            rl.token_logprobs_from_hidden(h, w, bad)
        out = jax.jit(rl.token_logprobs_from_hidden)(h, w, bad)
        assert np.isnan(np.asarray(out)).sum() == 1


def test_empty_batch():
    h, w = arrays(11, [(0, 3), (3, 5)])
    assert rl.token_logprobs_from_hidden(h, w, jnp.zeros((0,), jnp.int32)).shape == (0,)
    assert rl.entropy_from_hidden(h, w).shape == (0,)
    assert rl.full_kl_from_hidden(h, w, h, w).shape == (0,)


Z2 = jnp.zeros((2, 3))
W35 = jnp.zeros((3, 5))
Y2 = jnp.array([0, 1])


@pytest.mark.parametrize("call,error,match", [
    (lambda: rl.token_logprobs_from_hidden(Z2.astype(jnp.int32), W35, Y2), TypeError,
     "`hidden` must have a floating dtype"),
    (lambda: rl.token_logprobs_from_hidden(Z2, W35.astype(jnp.int32), Y2), TypeError,
     "`unembedding` must have a floating dtype"),
    (lambda: rl.token_logprobs_from_hidden(Z2, W35, Y2.astype(jnp.float32)), TypeError,
     "`tokens` must have an integer dtype"),
    (lambda: rl.token_logprobs_from_hidden(Z2, jnp.zeros((4, 5)), Y2), ValueError,
     "`unembedding` has shape"),
    (lambda: rl.token_logprobs_from_hidden(Z2, jnp.zeros((3, 5, 1)), Y2), ValueError,
     "`unembedding` must be a matrix"),
    (lambda: rl.token_logprobs_from_hidden(Z2, W35, jnp.array([0, 1, 2])), ValueError,
     "`tokens` has shape"),
    (lambda: rl.token_logprobs_from_hidden(jnp.zeros(()), W35, Y2), ValueError,
     "`hidden` must have a hidden axis"),
    (lambda: rl.token_logprobs_from_hidden(Z2, jnp.zeros((3, 0)), Y2), ValueError,
     "non-empty"),
    (lambda: rl.token_logprobs_from_hidden(Z2, W35, Y2, unembedding_layout="vd"), ValueError,
     "`unembedding` has shape"),
    (lambda: rl.token_logprobs_from_hidden(Z2, W35, Y2, unembedding_layout="x"), ValueError,
     "`unembedding_layout`"),
    (lambda: rl.token_logprobs_from_hidden(Z2, W35, Y2, block_tokens=0), ValueError,
     "`block_tokens`"),
    (lambda: rl.entropy_from_hidden(Z2, W35, block_vocab=1.5), TypeError, "`block_vocab`"),
    (lambda: rl.entropy_from_hidden(Z2, W35, temperature=0.0), ValueError, "`temperature`"),
    (lambda: rl.full_kl_from_hidden(Z2, W35, jnp.zeros((3, 3)), W35), ValueError,
     "`ref_hidden` has shape"),
    (lambda: rl.full_kl_from_hidden(Z2, W35, Z2, jnp.zeros((3, 6))), ValueError,
     "`ref_unembedding` has shape"),
    (lambda: rl.full_kl_from_hidden(Z2, W35, jnp.zeros((2, 4)), W35), ValueError,
     "`ref_unembedding` has shape"),
    (lambda: rl.full_kl_from_hidden(Z2, W35, Z2, W35, mask=jnp.ones(3, bool)), ValueError,
     "`mask`"),
])
def test_bad_inputs_raise_errors_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- memory ------------------------------------------------------------------------

# One long-context batch against a current vocabulary (Qwen2.5's 152,064 entries):
# materialised float32 logits take 32768 * 152064 * 4 bytes = 18.6 GiB.
BIG_TOKENS, BIG_DIM, BIG_VOCAB = 32768, 1024, 152064
MiB = 2**20


def temp_bytes(fn, *specs):
    """Compiled temporaries (compile only: nothing of this size is allocated)."""
    return jax.jit(fn).lower(*specs).compile().memory_analysis().temp_size_in_bytes


def big_specs(dtype):
    return (jax.ShapeDtypeStruct((BIG_TOKENS, BIG_DIM), dtype),
            jax.ShapeDtypeStruct((BIG_DIM, BIG_VOCAB), dtype),
            jax.ShapeDtypeStruct((BIG_TOKENS,), jnp.int32))


# The budgets are XLA:CPU's: on an H200 (jax 0.11.2) the bf16 forward pass kept 70 MiB
# (1024 x 4096 tiles), over this 64 MiB budget, and value+grad 194 MiB (BENCHMARKS.md).
@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="memory budgets measured on XLA:CPU; accelerator numbers are in "
                           "BENCHMARKS.md")
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
def test_memory_at_32k_tokens_and_152k_vocabulary(dtype):
    """Forward and backward temporaries at 32,768 tokens x D = 1,024 x V = 152,064 are a
    few hundred MiB at most, against 18.6 GiB for the float32 logits that autodiff of the
    materialised computation keeps (asserted too, so the measurement can fail).

    float32: a few float32 tiles (measured 7 MiB forward, 19 MiB backward: the float32
    ``dh`` accumulator is the gradient itself). bf16 on XLA:CPU: also one uint16 copy of
    each 16-bit input (the price of slicing bf16 in a loop there, as for ``rl.full_kl``:
    361 MiB here) and, backward, at most the float32 ``dh`` accumulator (128 MiB);
    measured 370 MiB forward, 444 MiB backward.
    """
    hidden, unembedding, tokens = big_specs(dtype)
    logits_f32 = BIG_TOKENS * BIG_VOCAB * 4
    fn = lambda h, w, y: rl.token_logprobs_from_hidden(h, w, y).sum()
    forward = temp_bytes(fn, hidden, unembedding, tokens)
    backward = temp_bytes(jax.grad(fn, argnums=(0, 1)), hidden, unembedding, tokens)
    if dtype == jnp.float32 or jax.default_backend() != "cpu":
        copies, accumulator = 0, 0
    else:
        copies = (BIG_TOKENS + BIG_VOCAB) * BIG_DIM * 2
        accumulator = BIG_TOKENS * BIG_DIM * 4
    assert forward <= copies + 64 * MiB, forward / MiB
    assert backward <= copies + accumulator + 128 * MiB, backward / MiB
    assert backward <= 0.03 * logits_f32
    naive = lambda h, w, y: rl.token_logprobs(h @ w, y).sum()
    assert temp_bytes(jax.grad(naive, argnums=(0, 1)), hidden, unembedding, tokens) >= logits_f32


@pytest.mark.parametrize("kind", ["entropy", "kl"])
def test_memory_of_entropy_and_kl_at_32k_tokens_and_152k_vocabulary(kind):
    """bf16, as above: the entropy, and the KL between two models (gradients for the
    policy; a frozen reference), keep no [tokens, vocab] temporary."""
    hidden, unembedding, _ = big_specs(jnp.bfloat16)
    logits_f32 = BIG_TOKENS * BIG_VOCAB * 4
    if kind == "entropy":
        fn = lambda h, w, h_ref, w_ref: rl.entropy_from_hidden(h, w).sum()
        naive = lambda h, w, h_ref, w_ref: rl.entropy(h @ w).sum()
        sides = 1
    else:
        fn = lambda *a: rl.full_kl_from_hidden(*a).sum()
        naive = lambda h, w, h_ref, w_ref: rl.full_kl(h @ w, h_ref @ w_ref).sum()
        sides = 2
    specs = (hidden, unembedding, hidden, unembedding)
    forward = temp_bytes(fn, *specs)
    backward = temp_bytes(jax.grad(fn, argnums=(0, 1)), *specs)
    copies = sides * (BIG_TOKENS + BIG_VOCAB) * BIG_DIM * 2
    if jax.default_backend() != "cpu":
        copies = 0
    # A few float32 tiles of 1024 x 4096 (16 MiB each) per model.
    assert forward <= copies + sides * 48 * MiB, forward / MiB
    assert backward <= copies + BIG_TOKENS * BIG_DIM * 4 + sides * 96 * MiB, backward / MiB
    assert backward <= 0.06 * logits_f32
    assert temp_bytes(jax.grad(naive, argnums=(0, 1)), *specs) >= logits_f32
