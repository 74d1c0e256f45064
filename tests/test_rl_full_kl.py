"""jaxkl.rl.full_kl: exact vocabulary KL vs the naive log_softmax way, gradients, memory."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkl import rl
from jaxkl._src.rl import full_kl as full_kl_module
from jaxkl._src.rl.full_kl import auto_chunk_size


def numpy_full_kl(z, w):
    """Float64 NumPy log_softmax reference and its analytic gradients."""
    z, w = np.asarray(z, np.float64), np.asarray(w, np.float64)

    def log_softmax(x):
        m = x.max(-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))

    log_p, log_r = log_softmax(z), log_softmax(w)
    p, r = np.exp(log_p), np.exp(log_r)
    kl = (p * (log_p - log_r)).sum(-1)
    grad_z = p * ((log_p - log_r) - kl[..., None])
    grad_w = r - p
    return kl, grad_z, grad_w


def naive_full_kl(z, w):
    """The naive way in JAX: two [tokens, vocab] float32 log_softmax arrays."""
    log_p = jax.nn.log_softmax(z.astype(jnp.float32))
    log_r = jax.nn.log_softmax(w.astype(jnp.float32))
    return (jnp.exp(log_p) * (log_p - log_r)).sum(-1)


def random_logits(seed, shape, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, scale, shape).astype(np.float32),
            rng.normal(0, scale, shape).astype(np.float32))


@pytest.mark.parametrize("chunk_size", [64, 1000, 333, 4096, None])
def test_values_match_log_softmax_reference(chunk_size):
    z, w = random_logits(0, (12, 1000))
    got = rl.full_kl(z, w, chunk_size=chunk_size)
    expected, _, _ = numpy_full_kl(z, w)
    assert got.shape == (12,) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got), np.asarray(naive_full_kl(z, w)), rtol=1e-5)


def test_gradients_match_naive_and_closed_form():
    z, w = random_logits(1, (6, 700))
    weights = jnp.linspace(0.5, 2.0, 6)
    loss = lambda fn: (lambda a, b: (weights * fn(a, b)).sum())
    got = jax.grad(loss(lambda a, b: rl.full_kl(a, b, chunk_size=128)), argnums=(0, 1))(z, w)
    naive = jax.grad(loss(naive_full_kl), argnums=(0, 1))(z, w)
    _, grad_z, grad_w = numpy_full_kl(z, w)
    closed = (np.asarray(weights)[:, None] * grad_z, np.asarray(weights)[:, None] * grad_w)
    for g, n, c in zip(got, naive, closed, strict=True):
        scale = np.max(np.abs(c))
        np.testing.assert_allclose(np.asarray(g), c, rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(np.asarray(g), np.asarray(n), rtol=0, atol=1e-5 * scale)


def test_exactly_zero_for_equal_distributions_and_shift_invariant():
    z, w = random_logits(2, (4, 300))
    assert np.all(np.asarray(rl.full_kl(z, z, chunk_size=64)) == 0)
    # Logits stored as z + c carry their own rounding (~ulp(c)); the KL itself does not
    # grow with c, unlike E_p[z - w] - (lse(z) - lse(w)) evaluated as such.
    for shift in (7.5, 1000.0):
        same = rl.full_kl(z, z + shift, chunk_size=64)
        np.testing.assert_allclose(np.asarray(same), 0, atol=1e-6)
    shifted = rl.full_kl(z + 100.0, w - 50.0, chunk_size=64)
    np.testing.assert_allclose(np.asarray(shifted), numpy_full_kl(z, w)[0], rtol=1e-5)


def test_small_kl_absolute_error_bound():
    """Tiny KLs are a difference of O(delta) terms: the error is absolute, ~eps * spread.

    Each centred logit z - max(z) is rounded to half an ulp of the largest spread, and
    every summed term is a p- or r-weighted average of such values, so the KL is off by
    at most a few eps * max|z - max z| (the naive float32 way has the same limit).
    """
    z, _ = random_logits(3, (4, 500), scale=10.0)
    w = z + np.random.default_rng(4).normal(0, 1e-3, z.shape).astype(np.float32)
    got = np.asarray(rl.full_kl(z, w, chunk_size=128), np.float64)
    exact = numpy_full_kl(z, w)[0]
    spread = np.max(z.max(-1, keepdims=True) - z)
    bound = 8 * np.finfo(np.float32).eps * spread
    assert np.all(np.abs(got - exact) <= bound)
    naive = np.asarray(naive_full_kl(z, w), np.float64)
    assert np.max(np.abs(got - exact)) <= np.max(np.abs(naive - exact)) + bound


def test_bfloat16_inputs():
    z, w = random_logits(5, (8, 513))
    z16, w16 = jnp.asarray(z, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    got = rl.full_kl(z16, w16, chunk_size=128)
    assert got.dtype == jnp.float32
    expected, _, _ = numpy_full_kl(np.asarray(z16, np.float32), np.asarray(w16, np.float32))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    grads = jax.grad(lambda a, b: rl.full_kl(a, b).sum(), argnums=(0, 1))(z16, w16)
    assert all(g.dtype == jnp.bfloat16 for g in grads)


# 37 rows: blocks of 2 and 3 rows; 5 rows: fewer rows than blocks, one row each.
@pytest.mark.parametrize("rows", [37, 5])
def test_16_bit_row_blocks_equal_the_float32_row_loop(rows):
    """On CPU 16-bit inputs are looped over in blocks of rows (to copy 1/16 of them at a
    time); bf16 -> float32 is exact, so each row's value must equal, bit for bit, the
    single float32 row loop's on the upcast inputs: bf16, float16, mixed with float32,
    under vmap, and rows without a finite logit."""
    if jax.default_backend() != "cpu":
        pytest.skip("the row blocks are the CPU forward pass")
    z, w = random_logits(21, (rows, 300))
    z[1, 100:] = -np.inf
    w[2] = -np.inf
    z[3] = -np.inf
    for dtypes in [(jnp.bfloat16,) * 2, (jnp.float16,) * 2, (jnp.bfloat16, jnp.float32),
                   (jnp.float32, jnp.float16)]:
        a, b = jnp.asarray(z, dtypes[0]), jnp.asarray(w, dtypes[1])
        want = np.asarray(rl.full_kl(a.astype(jnp.float32), b.astype(jnp.float32)))
        np.testing.assert_array_equal(np.asarray(rl.full_kl(a, b)), want)
        np.testing.assert_array_equal(np.asarray(jax.jit(rl.full_kl)(a, b)), want)
        batched = jax.vmap(rl.full_kl)(a.reshape(1, rows, 300), b.reshape(1, rows, 300))
        np.testing.assert_array_equal(np.asarray(batched)[0], want)
    assert np.isposinf(want[2]) and np.isnan(want[3])


@pytest.mark.parametrize("dtypes", [(jnp.bfloat16,) * 2, (jnp.bfloat16, jnp.float32)])
def test_16_bit_forward_memory_is_bounded(dtypes):
    """bf16 forward temporaries at the README's shape, [1024, 152064]: under 7% of the
    inputs (6.45% measured; issue 18's goal is 10%; before the row blocks, 100.2%: a
    uint16 copy of both whole inputs for the row loop), mixed with a float32 reference
    too. Compile only, nothing runs."""
    shape = (1024, 152064)
    specs = [jax.ShapeDtypeStruct(shape, d) for d in dtypes]
    input_bytes = sum(np.prod(shape) * jnp.dtype(d).itemsize for d in dtypes)
    compiled = jax.jit(lambda a, b: rl.full_kl(a, b)).lower(*specs).compile()
    assert compiled.memory_analysis().temp_size_in_bytes <= 0.07 * input_bytes


# README, "Cost": at 2048 x 152064, forward / forward+backward temporaries as a share of
# the inputs at most (bf16: 6.35% / 0.15% measured, float32: 0.05% / 0.03%), and the
# naive log_softmax way's forward+backward at least (500%, 150%).
README_MEMORY = {"bfloat16": (0.064, 0.0016, 5.0), "float32": (0.0006, 0.0004, 1.5)}


@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="the README's figures are XLA:CPU's (an H200 fused the naive way)")
@pytest.mark.parametrize("dtype", README_MEMORY)
def test_the_readme_memory_figures(dtype):
    """The README's compiled-temporaries figures for full_kl at 2048 x 152064 (compile
    only, nothing runs)."""
    forward_max, backward_max, naive_min = README_MEMORY[dtype]
    spec = jax.ShapeDtypeStruct((2048, 152064), dtype)
    input_bytes = 2 * 2048 * 152064 * jnp.dtype(dtype).itemsize

    def share(fn):
        compiled = jax.jit(fn).lower(spec, spec).compile()
        return compiled.memory_analysis().temp_size_in_bytes / input_bytes

    both = lambda f: jax.grad(lambda a, b: f(a, b).sum(), argnums=(0, 1))
    assert share(lambda a, b: rl.full_kl(a, b)) <= forward_max
    assert share(both(rl.full_kl)) <= backward_max
    assert share(both(naive_full_kl)) >= naive_min


def test_float64_under_x64(x64):
    z, w = random_logits(6, (3, 257))
    got = rl.full_kl(z.astype(np.float64), w.astype(np.float64), chunk_size=100)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), numpy_full_kl(z, w)[0], rtol=1e-12)


# chunk_size None: the row loop on CPU (the default there), 16: the vocabulary chunks.
@pytest.mark.parametrize("chunk_size", [16, None])
def test_minus_inf_logits(chunk_size):
    z, w = random_logits(7, (2, 50))
    z[:, 40:], w[:, 40:] = -np.inf, -np.inf  # padded vocabulary: dropped from both
    got = rl.full_kl(z, w, chunk_size=chunk_size)
    np.testing.assert_allclose(np.asarray(got), numpy_full_kl(z[:, :40], w[:, :40])[0],
                               rtol=1e-5)
    grads = jax.grad(lambda a, b: rl.full_kl(a, b, chunk_size=chunk_size).sum(),
                     argnums=(0, 1))(z, w)
    for g in grads:
        assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[:, 40:] == 0)
    w[0, 3] = -np.inf  # p > 0 where r = 0: the KL is infinite
    assert np.isposinf(float(rl.full_kl(z, w, chunk_size=chunk_size)[0]))


# chunk_size None: the row loop on CPU (the default there), 16: the vocabulary chunks.
@pytest.mark.parametrize("chunk_size", [16, None])
def test_rows_without_a_finite_logit(chunk_size):
    """No finite reference logit: r = 0 where p > 0, so +inf. No finite policy logit: no
    distribution, NaN; masked, such rows give 0 with zero (finite) gradients."""
    z, w = random_logits(11, (3, 40))
    w[0] = -np.inf
    z[1] = -np.inf
    z[2] = w[2] = -np.inf
    got = np.asarray(rl.full_kl(z, w, chunk_size=chunk_size))
    assert np.isposinf(got[0]) and np.isnan(got[1]) and np.isnan(got[2])
    mask = np.array([False, False, False])
    fn = lambda a, b: rl.full_kl(a, b, mask=mask, chunk_size=chunk_size).sum()
    assert float(fn(z, w)) == 0
    for g in jax.grad(fn, argnums=(0, 1))(z, w):
        assert np.all(np.asarray(g) == 0)


# chunk_size None: the row loop on CPU (the default there), 16: the vocabulary chunks.
@pytest.mark.parametrize("chunk_size", [16, None])
def test_mask_and_batch_axes(chunk_size):
    z, w = random_logits(8, (2, 3, 64))
    mask = np.array([[True, False, True], [False, True, True]])
    z[~mask] = np.nan  # garbage at masked tokens must not leak
    fn = lambda a, b: rl.full_kl(a, b, mask=mask, chunk_size=chunk_size)
    got = fn(z, w)
    assert got.shape == (2, 3)
    expected = np.where(mask, numpy_full_kl(np.where(mask[..., None], z, 0), w)[0], 0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    grads = jax.grad(lambda a, b: fn(a, b).sum(), argnums=(0, 1))(z, w)
    for g in grads:
        assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[~mask] == 0)


@pytest.mark.parametrize("chunk_size", [32, None])
def test_jit_and_vmap(chunk_size):
    z, w = random_logits(9, (3, 4, 100))
    fn = lambda a, b: rl.full_kl(a, b, chunk_size=chunk_size)
    eager = np.asarray(fn(z, w))
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(z, w)), eager, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(z, w)), eager, rtol=1e-6)
    vg = jax.vmap(jax.grad(lambda a, b: fn(a, b).sum()))(z, w)
    np.testing.assert_allclose(np.asarray(vg), np.asarray(jax.grad(lambda a: fn(a, w).sum())(z)),
                               rtol=1e-6, atol=1e-9)


def test_memory_beyond_inputs_is_bounded():
    """Compiled temporaries stay under 10% of the inputs (compile only, nothing runs): a few
    ``[rows, chunk]`` float32 tiles forward, none backward; the naive way needs more."""
    shape = (256, 131072)
    spec = jax.ShapeDtypeStruct(shape, jnp.float32)
    input_bytes = 2 * np.prod(shape) * 4

    def temp_bytes(fn):
        return jax.jit(fn).lower(spec, spec).compile().memory_analysis().temp_size_in_bytes

    forward = temp_bytes(lambda a, b: rl.full_kl(a, b))
    backward = temp_bytes(jax.grad(lambda a, b: rl.full_kl(a, b).sum(), argnums=(0, 1)))
    naive = temp_bytes(naive_full_kl)
    assert forward <= 0.1 * input_bytes and backward <= 0.1 * input_bytes
    if jax.default_backend() == "cpu":  # an H200 fused the naive forward pass too
        assert naive > 0.1 * input_bytes
    tile = shape[0] * auto_chunk_size(*shape, jax.default_backend()) * 4
    assert forward <= 4 * tile and backward <= 4 * tile


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_backward_pass_needs_no_memory_beyond_the_gradients(dtype):
    """The backward pass alone (the transpose of the JVP's linear maps, given the forward
    residuals) is one elementwise pass: its temporaries are under 1% of the inputs, for
    16-bit logits too (XLA:CPU materialised a shared float32 ``p`` before the second
    gradient recomputed it)."""
    module = full_kl_module

    shape = (64, 65536)
    spec = jax.ShapeDtypeStruct(shape, dtype)
    rows = jax.ShapeDtypeStruct(shape[:1], jnp.float32)

    def backward(z, w, valid, kl, stats, g):
        args = (z, w, valid, kl, stats)
        grad_z = jax.linear_transpose(lambda t: module._logits_tangent(*args, t), z)(g)
        grad_w = jax.linear_transpose(lambda t: module._ref_logits_tangent(*args, t), w)(g)
        return grad_z, grad_w

    valid = jax.ShapeDtypeStruct(shape[:1], bool)
    compiled = jax.jit(backward).lower(spec, spec, valid, rows, (rows,) * 4, rows).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp <= 0.01 * 2 * np.prod(shape) * jnp.dtype(dtype).itemsize


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_forward_mode_jvp_and_jacfwd_match_the_naive_formula(dtype):
    """Forward mode (issue 14): jax.jvp/jacfwd work (a custom VJP refused them) and equal
    the closed-form directional derivative sum_v p_v (a_v - KL) dz_v + (r_v - p_v) dw_v,
    computed here in float64 NumPy from the definitions."""
    z, w = (x.astype(dtype) for x in random_logits(11, (3, 40)))
    dz, dw = (x.astype(dtype) for x in random_logits(12, (3, 40)))
    fn = lambda a, b: rl.full_kl(a, b, chunk_size=16)
    _, tangent = jax.jvp(fn, (z, w), (dz, dw))
    z64, w64 = np.asarray(z, np.float64), np.asarray(w, np.float64)
    log_p = z64 - np.log(np.exp(z64).sum(-1, keepdims=True))
    log_r = w64 - np.log(np.exp(w64).sum(-1, keepdims=True))
    p, r = np.exp(log_p), np.exp(log_r)
    kl = np.sum(p * (log_p - log_r), -1, keepdims=True)
    want = np.sum(p * (log_p - log_r - kl) * np.asarray(dz, np.float64)
                  + (r - p) * np.asarray(dw, np.float64), -1)
    assert tangent.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(tangent), want, rtol=1e-5, atol=1e-6)
    # jacfwd (forward) equals jacrev (reverse): one linear map, transposed. Reverse mode
    # returns gradients in the inputs' dtype, so for bf16 they agree to bf16 rounding.
    forward = np.asarray(jax.jacfwd(fn)(z, w), np.float32)
    reverse = np.asarray(jax.jacrev(fn)(z, w), np.float32)
    rtol = 1e-6 if dtype == jnp.float32 else 2.0**-8
    np.testing.assert_allclose(forward, reverse, rtol=rtol, atol=1e-8)
    # Second order works too: the Hessian of the summed KL equals the naive formula's.
    naive = lambda a: naive_full_kl(a, w.astype(jnp.float32)).sum()
    np.testing.assert_allclose(
        np.asarray(jax.hessian(lambda a: fn(a, w).sum())(z.astype(jnp.float32))),
        np.asarray(jax.hessian(naive)(z.astype(jnp.float32))), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 16])
@pytest.mark.parametrize("dtypes", [(jnp.bfloat16, jnp.bfloat16), (jnp.float32, jnp.bfloat16),
                                    (jnp.bfloat16, jnp.float32)])
def test_hessian_with_16_bit_inputs(dtypes, chunk_size):
    """Second order with 16-bit logits: the forward pass reads them as integer bits (no
    derivative), so the statistics carry their own JVP rule. Before it the Hessian with
    respect to bf16 logits was silently wrong (max error 1.05 against entries of at most
    0.91), and so was a float32 policy with a bf16 reference once the row blocks copied
    it as bits. Reference: autodiff of the naive float32 formula; derivatives come back
    in the policy's dtype, so bf16 ones agree to bf16 rounding."""
    z, w = random_logits(13, (3, 40))
    a, b = jnp.asarray(z, dtypes[0]), jnp.asarray(w, dtypes[1])
    rtol = 1e-4 if dtypes[0] == jnp.float32 else 2.0**-8
    got = jax.hessian(lambda x: rl.full_kl(x, b, chunk_size=chunk_size).sum())(a)
    want = jax.hessian(lambda x: naive_full_kl(x, b).sum())(a.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=rtol,
                               atol=1e-6)
    # Mixed second derivatives (policy, reference) too.
    got = jax.jacfwd(jax.grad(lambda x, y: rl.full_kl(x, y, chunk_size=chunk_size).sum()),
                     argnums=1)(a, b)
    want = jax.jacfwd(jax.grad(lambda x, y: naive_full_kl(x, y).sum()), argnums=1)(
        a.astype(jnp.float32), b.astype(jnp.float32))
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=rtol,
                               atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 5)])
def test_no_tokens(shape, dtype):
    """An empty batch gives an empty result and empty gradients (the row loop's body,
    slicing one row, failed to trace on zero rows)."""
    z = jnp.zeros(shape, dtype)
    for chunk_size in (None, 2):
        got = rl.full_kl(z, z, chunk_size=chunk_size)
        assert got.shape == shape[:-1] and got.dtype == jnp.float32
        grads = jax.grad(lambda a, b, c=chunk_size: rl.full_kl(a, b, chunk_size=c).sum(),
                         argnums=(0, 1))(z, z)
        assert all(g.shape == shape and g.dtype == dtype for g in grads)


def test_errors_name_the_argument():
    z = jnp.zeros((2, 5))
    with pytest.raises(ValueError, match="`ref_logits`"):
        rl.full_kl(z, jnp.zeros((2, 6)))
    with pytest.raises(TypeError, match="`logits`"):
        rl.full_kl(jnp.zeros((2, 5), jnp.int32), z)
    with pytest.raises(ValueError, match="`mask`"):
        rl.full_kl(z, z, mask=jnp.ones((2, 5), bool))
    with pytest.raises(ValueError, match="`chunk_size`"):
        rl.full_kl(z, z, chunk_size=0)
    with pytest.raises(ValueError, match="`logits`"):
        rl.full_kl(jnp.zeros(()), jnp.zeros(()))
