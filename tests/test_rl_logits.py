"""token_logprobs, entropy and response_mask (issue 17).

Oracles: float64 NumPy from the definitions (``log_softmax`` by explicit ``logsumexp``,
``H = -sum p log p``, gradients ``([v = y] - p) / tau`` and ``-p (log p + H) / tau``), a
Python loop for the mask, and compiled ``memory_analysis`` for the memory claims.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from jaxkl import rl


def random_logits(seed, shape, scale=3.0):
    return jnp.asarray(np.random.default_rng(seed).normal(0, scale, shape), jnp.float32)


def log_softmax64(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    return z - scipy.special.logsumexp(z, axis=-1, keepdims=True)


def entropy64(logits, temperature=1.0):
    log_p = log_softmax64(logits, temperature)
    p = np.exp(log_p)
    return -np.sum(np.where(p > 0, p * log_p, 0), axis=-1)


DTYPES = [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-6), (jnp.float16, 1e-6)]


@pytest.mark.parametrize("dtype,rtol", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_equal_float64_log_softmax(dtype, rtol, temperature):
    logits = random_logits(0, (2, 3, 257)).astype(dtype)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 257, (2, 3)), jnp.int32)
    got = rl.token_logprobs(logits, tokens, temperature=temperature)
    want = np.take_along_axis(log_softmax64(logits, temperature), np.asarray(tokens)[..., None],
                              -1)[..., 0]
    assert got.dtype == jnp.float32 and got.shape == (2, 3)
    # The inputs are the rounded logits, so the only error is float32 arithmetic.
    np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=2e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_gradient_is_onehot_minus_p(dtype, temperature):
    logits = random_logits(2, (4, 33)).astype(dtype)
    tokens = jnp.array([0, 32, 5, 5])
    cotangent = np.array([1.0, -2.0, 0.5, 3.0])
    grad = jax.grad(lambda z: jnp.sum(rl.token_logprobs(z, tokens, temperature=temperature)
                                      * jnp.asarray(cotangent, jnp.float32)))(logits)
    p = np.exp(log_softmax64(logits, temperature))
    onehot = np.eye(33)[np.asarray(tokens)]
    want = cotangent[:, None] * (onehot - p) / temperature
    assert grad.dtype == dtype
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(np.asarray(grad, np.float64), want, rtol=tol, atol=tol * 1e-1)


@pytest.mark.parametrize("dtype,rtol", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 1.5])
def test_entropy_equals_float64_definition(dtype, rtol, temperature):
    logits = random_logits(3, (5, 129)).astype(dtype)
    got = rl.entropy(logits, temperature=temperature)
    assert got.dtype == jnp.float32 and got.shape == (5,)
    np.testing.assert_allclose(np.asarray(got), entropy64(logits, temperature), rtol=1e-5,
                               atol=2e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_entropy_gradient_closed_form(temperature):
    logits = random_logits(4, (3, 40))
    cotangent = np.array([1.0, -1.0, 2.0])
    grad = jax.grad(lambda z: jnp.sum(rl.entropy(z, temperature=temperature)
                                      * jnp.asarray(cotangent, jnp.float32)))(logits)
    log_p = log_softmax64(logits, temperature)
    p = np.exp(log_p)
    want = -cotangent[:, None] * p * (log_p + entropy64(logits, temperature)[:, None])
    np.testing.assert_allclose(np.asarray(grad), want / temperature, rtol=1e-5, atol=1e-7)


def test_float64_inputs_compute_in_float64(x64):
    logits = jnp.asarray(np.random.default_rng(5).normal(0, 3, (3, 64)))
    tokens = jnp.array([1, 2, 63])
    got = rl.token_logprobs(logits, tokens)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), log_softmax64(logits)[np.arange(3), [1, 2, 63]],
                               rtol=1e-14)
    np.testing.assert_allclose(np.asarray(rl.entropy(logits)), entropy64(logits), rtol=1e-13)
    # Gradients against autodiff of the naive float64 formulas.
    naive = lambda z: jnp.take_along_axis(jax.nn.log_softmax(z), tokens[:, None], -1).sum()
    np.testing.assert_allclose(
        np.asarray(jax.grad(lambda z: rl.token_logprobs(z, tokens).sum())(logits)),
        np.asarray(jax.grad(naive)(logits)), rtol=1e-12, atol=1e-15)


def test_forward_mode_matches_reverse_mode():
    logits = random_logits(6, (2, 30))
    tokens = jnp.array([3, 29])
    direction = random_logits(7, (2, 30))
    for fn in (lambda z: rl.token_logprobs(z, tokens, temperature=0.8),
               lambda z: rl.entropy(z, temperature=0.8)):
        _, tangent = jax.jvp(fn, (logits,), (direction,))
        rows = [jnp.vdot(jax.grad(lambda z, i=i, fn=fn: fn(z)[i])(logits), direction)
                for i in range(2)]
        np.testing.assert_allclose(np.asarray(tangent), np.asarray(rows), rtol=1e-5, atol=1e-6)


def test_jit_and_vmap_match_eager():
    logits = random_logits(8, (3, 4, 20))
    tokens = jnp.asarray(np.random.default_rng(9).integers(0, 20, (3, 4)))
    eager = rl.token_logprobs(logits, tokens)
    np.testing.assert_allclose(np.asarray(jax.jit(rl.token_logprobs)(logits, tokens)),
                               np.asarray(eager), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(rl.token_logprobs)(logits, tokens)),
                               np.asarray(eager), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(rl.entropy)(logits)),
                               np.asarray(rl.entropy(logits)), rtol=1e-6)


def test_filtered_vocabulary_minus_inf_logits():
    """Top-k/top-p samplers set logits to -inf: those entries carry no mass and no NaN."""
    logits = jnp.array([[0.0, -jnp.inf, 1.0, -jnp.inf], [-jnp.inf, 2.0, -jnp.inf, -jnp.inf]])
    tokens = jnp.array([2, 1])
    got = rl.token_logprobs(logits, tokens)
    np.testing.assert_allclose(np.asarray(got), [1 - np.log(1 + np.e), 0.0], atol=1e-6)
    h = rl.entropy(logits)
    p = 1 / (1 + np.e)
    np.testing.assert_allclose(np.asarray(h), [-(p * np.log(p) + (1 - p) * np.log(1 - p)), 0],
                               atol=1e-6)
    for fn in (lambda z: rl.token_logprobs(z, tokens).sum(), lambda z: rl.entropy(z).sum()):
        assert np.all(np.isfinite(np.asarray(jax.grad(fn)(logits))))
    # A row with no finite logit is no distribution.
    assert np.isnan(float(rl.entropy(jnp.full((1, 3), -jnp.inf))[0]))


def test_out_of_range_ids_raise_when_concrete_and_give_nan_under_jit():
    logits = jnp.zeros((2, 5))
    for bad in (jnp.array([0, 5]), jnp.array([-1, 0])):
        with pytest.raises(ValueError, match=r"`tokens` must hold ids in \[0, 5\)"):
            rl.token_logprobs(logits, bad)
        out = jax.jit(rl.token_logprobs)(logits, bad)
        assert np.isnan(np.asarray(out)).sum() == 1


@pytest.mark.parametrize("call,error,match", [
    (lambda: rl.token_logprobs(jnp.zeros((2, 5)), jnp.array([0.0, 1.0])), TypeError,
     "`tokens` must have an integer dtype"),
    (lambda: rl.token_logprobs(jnp.zeros((2, 5), jnp.int32), jnp.array([0, 1])), TypeError,
     "`logits` must have a floating dtype"),
    (lambda: rl.token_logprobs(jnp.zeros((2, 5)), jnp.array([0, 1, 2])), ValueError,
     "`tokens` has shape"),
    (lambda: rl.token_logprobs(jnp.zeros((2, 0)), jnp.array([0, 1])), ValueError,
     "empty vocabulary"),
    (lambda: rl.token_logprobs(jnp.zeros(()), jnp.array(0)), ValueError, "rank >= 1"),
    (lambda: rl.token_logprobs(jnp.zeros((2, 5)), jnp.array([0, 1]), temperature=0.0),
     ValueError, "`temperature`"),
    (lambda: rl.entropy(jnp.zeros((2, 5)), temperature=float("inf")), ValueError,
     "`temperature` must be a positive finite"),
    (lambda: rl.entropy(jnp.zeros((2, 5)), temperature=float("nan")), ValueError,
     "`temperature`"),
    (lambda: rl.response_mask(jnp.zeros((2, 5)), eos_token=2), TypeError,
     "`tokens` must have an integer dtype"),
    (lambda: rl.response_mask(jnp.zeros((2, 5), jnp.int32), eos_token=2.0), TypeError,
     "`eos_token`"),
    (lambda: rl.response_mask(jnp.zeros((2, 5), jnp.int32), eos_token=[]), TypeError,
     "`eos_token`"),
    (lambda: rl.response_mask(jnp.zeros((2, 5), jnp.int32), eos_token=-1), ValueError,
     "`eos_token`"),
    (lambda: rl.response_mask(jnp.array(3), eos_token=1), ValueError, "rank >= 1"),
])
def test_bad_inputs_raise_errors_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def loop_mask(tokens, eos_ids):
    out = np.zeros(tokens.shape, bool)
    for index in np.ndindex(tokens.shape[:-1]):
        for t, token in enumerate(tokens[index]):
            out[index + (t,)] = True
            if token in eos_ids:
                break
    return out


@pytest.mark.parametrize("eos_token", [2, (2, 7)])
def test_response_mask_matches_a_loop(eos_token):
    tokens = np.random.default_rng(10).integers(0, 9, (3, 4, 12))
    tokens[0, 0] = 5  # a row with no EOS: every token is valid
    tokens[0, 1, 0] = 2  # EOS first: only it is valid
    ids = eos_token if isinstance(eos_token, tuple) else (eos_token,)
    tokens[0, 0][np.isin(tokens[0, 0], ids)] = 5
    got = rl.response_mask(jnp.asarray(tokens), eos_token=eos_token)
    assert got.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(got), loop_mask(tokens, ids))
    jitted = jax.jit(lambda t: rl.response_mask(t, eos_token=eos_token))(jnp.asarray(tokens))
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(got))


SHAPE = (8, 1024, 32768)


def temp_bytes(fn, *specs):
    """Compiled temporaries (compile only: nothing of this size is allocated)."""
    return jax.jit(fn).lower(*specs).compile().memory_analysis().temp_size_in_bytes


def logprob_sum(z, t):
    return rl.token_logprobs(z, t).sum()


def entropy_sum(z):
    return rl.entropy(z).sum()


def naive_logprob_sum(z, t):
    log_p = jax.nn.log_softmax(z.astype(jnp.float32))
    return jnp.take_along_axis(log_p, t[..., None], -1).sum()


def naive_entropy_sum(z):
    # -sum p log p with the 0 log 0 = 0 convention as a select, on the upcast logits.
    log_p = jax.nn.log_softmax(z.astype(jnp.float32))
    p = jnp.exp(log_p)
    return -jnp.where(p > 0, p * log_p, 0).sum()


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="XLA:CPU's fusion behaviour (the naive control's temporaries "
                           "differ on accelerators)")
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32], ids=["bf16", "f32"])
@pytest.mark.parametrize("name", ["token_logprobs", "entropy"])
def test_memory_beyond_the_logits_is_under_ten_percent(name, dtype):
    """At [8, 1024, 32768] the forward and backward passes keep under 10% of the logits'
    size in compiled temporaries; autodiff of the naive upcast log_softmax keeps a
    [tokens, vocab] float32 array (so the measurement can fail)."""
    logits = jax.ShapeDtypeStruct(SHAPE, dtype)
    tokens = jax.ShapeDtypeStruct(SHAPE[:-1], jnp.int32)
    budget = 0.1 * np.prod(SHAPE) * jnp.dtype(dtype).itemsize
    if name == "token_logprobs":
        fn, naive, specs = logprob_sum, naive_logprob_sum, (logits, tokens)
    else:
        fn, naive, specs = entropy_sum, naive_entropy_sum, (logits,)
    assert temp_bytes(fn, *specs) <= budget
    assert temp_bytes(jax.grad(fn), *specs) <= budget
    assert temp_bytes(jax.grad(naive), *specs) > budget
