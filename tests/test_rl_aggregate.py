"""jaxkl.rl.aggregate: the five reduction modes, masks with inf/NaN, empty masks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkl import rl


def numpy_aggregate(values, mask, mode, normalizer=None):
    """Float64 NumPy reference, one loop per sequence (independent of the vectorised code)."""
    values = np.asarray(values, np.float64).reshape(-1, values.shape[-1])
    mask = np.asarray(mask, bool).reshape(values.shape)
    total = sum(values[i][mask[i]].sum() for i in range(len(values)))
    count = mask.sum()
    rows = [i for i in range(len(values)) if mask[i].any()]
    if mode == "token-sum":
        return total
    if mode == "token-mean":
        return total / count if count else 0.0
    if not rows:
        return 0.0
    if mode == "seq-mean-token-mean":
        return np.mean([values[i][mask[i]].mean() for i in rows])
    seq_mean = np.mean([values[i][mask[i]].sum() for i in rows])
    if mode == "seq-mean-token-sum":
        return seq_mean
    return seq_mean / (values.shape[-1] if normalizer is None else normalizer)


def random_problem(seed, shape=(2, 5, 7)):
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, shape).astype(np.float32)
    mask = rng.uniform(size=shape) < 0.6
    mask[0, 1] = False  # one sequence without any valid token
    return values, mask


@pytest.mark.parametrize("mode", rl.MODES)
def test_modes_match_numpy(mode):
    values, mask = random_problem(0)
    got = rl.aggregate(values, mask, mode=mode)
    assert got.shape == () and got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), numpy_aggregate(values, mask, mode), rtol=1e-6)


def test_normalizer_argument():
    values, mask = random_problem(1)
    got = rl.aggregate(values, mask, mode="seq-mean-token-sum-norm", normalizer=4096)
    expected = numpy_aggregate(values, mask, "seq-mean-token-sum-norm", normalizer=4096)
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    traced = jax.jit(lambda n: rl.aggregate(values, mask, mode="seq-mean-token-sum-norm",
                                            normalizer=n))(4096.0)
    np.testing.assert_allclose(float(traced), expected, rtol=1e-6)


def test_float_mask_is_a_validity_mask():
    values, mask = random_problem(2)
    np.testing.assert_allclose(
        float(rl.aggregate(values, mask.astype(np.float32))),
        float(rl.aggregate(values, mask)),
        rtol=0,
    )


@pytest.mark.parametrize("bad", [0.5, -1.0, 2.0, np.nan])
def test_a_concrete_mask_other_than_0_1_raises(bad):
    """verl's masked_mean weights by a fractional mask, jaxkl counts nonzero as valid:
    rather than differ silently, every public function rejects such a concrete mask."""
    values = jnp.arange(6.0).reshape(2, 3)
    mask = np.array([[1.0, bad, 0.0], [1.0, 1.0, 1.0]], np.float32)
    match = r"`mask` must hold only 0 and 1"
    with pytest.raises(ValueError, match=match):
        rl.aggregate(values, mask)
    with pytest.raises(ValueError, match=match):
        rl.token_kl(values, values, mask=mask)
    with pytest.raises(ValueError, match=match):
        rl.grpo_loss(values, values, jnp.zeros(2), mask)
    with pytest.raises(ValueError, match=match):
        rl.full_kl(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4)), mask=mask)
    with pytest.raises(TypeError, match="real numeric"):
        rl.aggregate(values, mask.astype(np.complex64))
    # Integer 0/1 masks (verl's attention masks) and bool masks are accepted; under jit
    # the values are unknown and nonzero counts as valid, as documented.
    ok = np.array([[1, 1, 0], [1, 1, 1]], np.int32)
    np.testing.assert_allclose(float(rl.aggregate(values, ok)),
                               float(rl.aggregate(values, ok.astype(bool))), rtol=0)
    traced_mask = np.nan_to_num(mask, nan=3.0)
    traced = jax.jit(rl.aggregate)(values, traced_mask)
    np.testing.assert_allclose(float(traced), float(rl.aggregate(values, traced_mask != 0)),
                               rtol=1e-6)


@pytest.mark.parametrize("mode", rl.MODES)
def test_masked_inf_and_nan_do_not_leak(mode):
    values, mask = random_problem(3)
    poisoned = np.where(mask, values, np.float32(np.nan))
    poisoned[1, 0, ~mask[1, 0]] = -np.inf
    fn = lambda v: rl.aggregate(v, mask, mode=mode)
    np.testing.assert_allclose(float(fn(poisoned)), numpy_aggregate(values, mask, mode),
                               rtol=1e-6)
    grad = np.asarray(jax.grad(fn)(jnp.asarray(poisoned)))
    assert np.all(np.isfinite(grad)) and np.all(grad[~mask] == 0)


@pytest.mark.parametrize("mode", rl.MODES)
def test_empty_mask_gives_zero_and_zero_gradient(mode):
    values = jnp.full((3, 4), jnp.nan)
    mask = jnp.zeros((3, 4), bool)
    value, grad = jax.value_and_grad(lambda v: rl.aggregate(v, mask, mode=mode))(values)
    assert float(value) == 0.0
    np.testing.assert_array_equal(np.asarray(grad), 0)


def test_gradients_match_closed_forms():
    values, mask = random_problem(4, shape=(4, 6))
    m = mask.astype(np.float64)
    counts = m.sum(-1, keepdims=True)
    rows = (counts > 0).sum()
    expected = {
        "token-mean": m / m.sum(),
        "token-sum": m,
        "seq-mean-token-sum": m / rows,
        "seq-mean-token-mean": np.where(counts > 0, m / np.maximum(counts, 1), 0) / rows,
        "seq-mean-token-sum-norm": m / rows / 6,
    }
    for mode, g in expected.items():
        got = jax.grad(lambda v, mode=mode: rl.aggregate(v, mask, mode=mode))(values)
        np.testing.assert_allclose(np.asarray(got), g, rtol=1e-6, err_msg=mode)


def test_jit_vmap_and_dtypes():
    values, mask = random_problem(5)
    fn = lambda v, m: rl.aggregate(v, m, mode="seq-mean-token-mean")
    eager = np.asarray(jax.vmap(fn)(values, mask))
    expected = [numpy_aggregate(values[i], mask[i], "seq-mean-token-mean") for i in range(2)]
    np.testing.assert_allclose(eager, expected, rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(fn)(values, mask)), float(fn(values, mask)))
    assert rl.aggregate(jnp.asarray(values, jnp.bfloat16), mask).dtype == jnp.float32


def test_float64_under_x64(x64):
    values, mask = random_problem(6)
    got = rl.aggregate(values.astype(np.float64), mask, mode="seq-mean-token-sum")
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(float(got), numpy_aggregate(values, mask, "seq-mean-token-sum"),
                               rtol=1e-14)


def test_errors_name_the_argument():
    v = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="`mask`"):
        rl.aggregate(v, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="`mode`"):
        rl.aggregate(v, jnp.ones((2, 3)), mode="sequence-mean")
    with pytest.raises(TypeError, match="`values`"):
        rl.aggregate(jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="`values`"):
        rl.aggregate(jnp.zeros(()), jnp.ones(()))
    with pytest.raises(ValueError, match="`normalizer`"):
        rl.aggregate(v, jnp.ones((2, 3)), normalizer=10)
    with pytest.raises(ValueError, match="`normalizer`"):
        rl.aggregate(v, jnp.ones((2, 3)), mode="seq-mean-token-sum-norm", normalizer=0)
    with pytest.raises(TypeError, match="`mask`"):
        rl.aggregate(v, np.array([["a", "b", "c"]] * 2))


@pytest.mark.parametrize(
    "shape", [(7,), (3, 5), (2, 3, 8), (2, 3, 6), (4, 0), (0, 5), (1, 3), (5, 4097)]
)
def test_valid_token_counts_are_exact(shape):
    """The packed-bytes popcount count equals NumPy's, for every tail length (T % 4)."""
    from jaxkl._src.rl.aggregate import _count_valid

    mask = np.random.default_rng(sum(shape)).uniform(size=shape) < 0.6
    total = _count_valid(jnp.asarray(mask), jnp.float32, per_row=False)
    rows = jax.jit(lambda m: _count_valid(m, jnp.float32, per_row=True))(jnp.asarray(mask))
    assert total.dtype == jnp.float32 and float(total) == mask.sum()
    expected = mask.reshape(int(np.prod(shape[:-1])), shape[-1]).sum(-1)
    np.testing.assert_array_equal(np.asarray(rows), expected)


@pytest.mark.parametrize("shape", [(4, 0), (0, 5)])
@pytest.mark.parametrize("mode", rl.MODES)
def test_empty_arrays_give_zero(shape, mode):
    """No token at all (zero rows or zero length) is an all-zero mask: 0, zero gradient."""
    values = jnp.zeros(shape)
    loss = lambda v: rl.aggregate(v, jnp.zeros(shape, bool), mode=mode)
    assert float(loss(values)) == 0
    assert jax.grad(loss)(values).shape == shape


# ==== jaxkl.rl at inputs from the field (issue 14, formerly tests/test_rl_field_inputs.py).
# Each expected value comes from the definitions, independently of jaxkl: the gradient of
# ``w * k(l)`` with respect to ``logprobs`` is ``w (k(l) - k'(l))`` (``-w l`` for k3), of
# a straight-through token ``-l``, of a natural one ``-k'(l)``; a clamped token carries
# no gradient (the documented choice). Values with an exponential are computed with
# 50-digit ``decimal`` arithmetic (tests/_reference.py).

DTYPES = [jnp.bfloat16, jnp.float32, jnp.float64]


def _run(fn, jit, *args):
    return (jax.jit(fn) if jit else fn)(*args)


@pytest.fixture(params=DTYPES, ids=["bf16", "f32", "f64"])
def dtype(request):
    """bf16, f32 and f64 (under x64); tests that parametrize ``dtype`` override it."""
    with jax.enable_x64(request.param == jnp.float64):
        yield request.param

ESTIMATORS = ["k1", "k2", "k3", "abs"]


# ---- 5. masking in aggregate only ----


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("gradient", rl.GRADIENTS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_mask_in_aggregate_only_keeps_nan_out_of_the_gradient(dtype, jit, gradient, estimator):
    lp = jnp.array([[-0.5, -jnp.inf, -jnp.inf, jnp.nan]], dtype)
    rf = jnp.array([[-0.7, -jnp.inf, -1.0, -1.0]], dtype)
    m = jnp.array([[True, False, False, False]])
    loss = lambda a: rl.aggregate(rl.token_kl(a, rf, estimator=estimator, gradient=gradient), m)
    grad = np.asarray(_run(jax.grad(loss), jit, lp), np.float64)
    l = float(np.asarray(rf, np.float64)[0, 0] - np.asarray(lp, np.float64)[0, 0])
    k = {"k1": -l, "k2": l * l / 2, "k3": math.expm1(l) - l, "abs": abs(l)}[estimator]
    dk = {"k1": -1.0, "k2": l, "k3": math.expm1(l), "abs": math.copysign(1.0, l)}[estimator]
    want = {"natural": -dk, "straight_through": -l, "importance_weighted": k - dk}[gradient]
    tol = {jnp.bfloat16: 2**-8, jnp.float32: 3e-7, jnp.float64: 1e-15}[dtype]
    np.testing.assert_allclose(grad[0, 0], want, rtol=tol)
    np.testing.assert_array_equal(grad[0, 1:], 0.0)


def test_readme_rl_snippet_masks_safely():
    """The README's path, token_kl without a mask then aggregate with one: [[0.181, 0]]."""
    lp, rf = jnp.array([[-0.5, -jnp.inf]]), jnp.array([[-0.7, -jnp.inf]])
    m = jnp.array([[True, False]])
    grad = jax.grad(lambda a: rl.aggregate(rl.token_kl(a, rf), m))(lp)
    np.testing.assert_allclose(np.asarray(grad), [[-math.expm1(-0.2), 0.0]], rtol=3e-7)


# ---- the normalizer (review of jaxkl.rl, formerly tests/test_review_rlshard.py)


def test_normalizer_must_be_a_positive_scalar():
    """An array normalizer used to turn the scalar loss into an array."""
    v, m = jnp.ones((2, 3)), jnp.ones((2, 3))
    mode = "seq-mean-token-sum-norm"
    with pytest.raises(ValueError, match="`normalizer`"):
        rl.aggregate(v, m, mode=mode, normalizer=jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="`normalizer`"):
        rl.aggregate(v, m, mode=mode, normalizer=np.float32(-1.0))
    with pytest.raises(TypeError, match="`normalizer`"):
        rl.aggregate(v, m, mode=mode, normalizer="4")
    assert float(rl.aggregate(v, m, mode=mode, normalizer=np.int64(6))) == 0.5
