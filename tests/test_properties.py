"""Hypothesis property tests across the public API (issue 9).

Properties, not examples: they hold for every input the strategies can draw, and
Hypothesis shrinks any counterexample to a minimal one. Profiles are deterministic
(``derandomize``) so CI runs are reproducible.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxkl
from jaxkl import stats

settings.register_profile("jaxkl", max_examples=40, deadline=None, derandomize=True,
                          print_blob=True)
settings.load_profile("jaxkl")

FLOAT_DTYPES = [np.float16, np.float32, np.float64]

finite_log_ratios = hnp.arrays(
    dtype=np.float32,
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    elements=st.floats(-1e4, 1e4, width=32),
)


@given(finite_log_ratios)
def test_estimators_preserve_shape_and_dtype_and_are_never_nan(l):
    for fn in (jaxkl.k1, jaxkl.k2, jaxkl.k3, jaxkl.forward_kl):
        out = np.asarray(fn(l))
        assert out.shape == l.shape and out.dtype == l.dtype
        assert not np.isnan(out).any()


@given(finite_log_ratios)
def test_tangent_subtracted_estimators_are_non_negative(l):
    # inf is allowed where the exact value overflows (e.g. k3 at l > 88); NaN never.
    assert np.all(np.asarray(jaxkl.k3(l)) >= 0)
    assert np.all(np.asarray(jaxkl.k2(l)) >= 0)
    assert np.all(np.asarray(jaxkl.forward_kl(l)) >= 0)
    for name in jaxkl.F_DIVERGENCES:
        assert np.all(np.asarray(jaxkl.csiszar(l, divergence=name)) >= 0), name


@given(hnp.arrays(np.float32, st.integers(1, 20), elements=st.floats(-80, 80, width=32)))
def test_k3_finite_with_finite_gradient_below_overflow(l):
    values = jaxkl.k3(l)
    grads = jax.vmap(jax.grad(jaxkl.k3))(jnp.asarray(l))
    assert bool(jnp.all(jnp.isfinite(values))) and bool(jnp.all(jnp.isfinite(grads)))


@given(st.floats(-1e4, 1e4), st.sampled_from([jnp.bfloat16, jnp.float16, jnp.float32]))
def test_low_precision_inputs_round_the_float32_value_once(value, dtype):
    l = jnp.asarray(value, dtype)
    for fn in (jaxkl.k1, jaxkl.k2, jaxkl.k3, jaxkl.forward_kl):
        want = fn(l.astype(jnp.float32)).astype(dtype)
        np.testing.assert_array_equal(np.asarray(fn(l)), np.asarray(want))


@st.composite
def _samples_and_splits(draw):
    n = draw(st.integers(2, 60))
    k = draw(st.integers(1, 3))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    offset = draw(st.sampled_from([0.0, 1e4, -50.0]))
    x = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-1, 1))) * scale + offset
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=5))))
    order = draw(st.permutations(range(len(cuts) + 1)))
    return x, cuts, order


@given(_samples_and_splits())
@example((np.full((2, 1), 2.2250738585e-312), [], [0]))
def test_merging_chunks_in_any_order_equals_the_whole(args):
    x, cuts, order = args
    with jax.enable_x64(True):
        pieces = np.split(x, cuts)
        parts = [stats.from_samples(jnp.asarray(pieces[i])) for i in order]
        total = stats.empty(x.shape[1], jnp.float64)
        for m in parts:
            total = stats.merge(total, m)
        assert int(total.count) == len(x)
        # Rounding errors scale with the magnitude of the data, not with its spread.
        # XLA:CPU flushes subnormals to zero (Hypothesis found x = 2.2e-312, whose mean
        # came out 0), so each value carries an absolute error up to the smallest normal.
        size = float(np.abs(x).max())
        tiny = np.finfo(np.float64).tiny
        np.testing.assert_allclose(total.mean, x.mean(0), rtol=1e-12,
                                   atol=1e-14 * size + tiny)
        centred = x - x.mean(0)
        np.testing.assert_allclose(total.comoment, centred.T @ centred, rtol=1e-9,
                                   atol=(1e-13 * size**2 + tiny) * len(x))


@given(st.integers(1, 5000), st.integers(1, 3000))
@settings(max_examples=15)
def test_estimate_counts_every_sample_exactly_once(num_samples, chunk_size):
    import distrax

    res = jaxkl.estimate(distrax.Normal(0.0, 1.0), distrax.Normal(0.5, 1.0),
                         key=jax.random.key(0), num_samples=num_samples, chunk_size=chunk_size,
                         estimators=("k1",))
    assert int(res["k1"].count) == num_samples
    assert bool(jnp.isfinite(res["k1"].mean))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_empty_arrays_give_empty_results(dtype):
    with jax.enable_x64(dtype == np.float64):
        l = jnp.zeros((0, 3), dtype)
        for fn in (jaxkl.k1, jaxkl.k2, jaxkl.k3, jaxkl.forward_kl):
            out = fn(l)
            assert out.shape == (0, 3) and out.dtype == dtype


# --------------------------------------------------------------------------------------
# jaxkl.rl
# --------------------------------------------------------------------------------------

from jaxkl import rl  # noqa: E402

logprob_pairs = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float32, (n,), elements=st.floats(-1e4, 0, width=32)),
        hnp.arrays(np.float32, (n,), elements=st.floats(-1e4, 0, width=32)),
    )
)


@given(logprob_pairs, st.sampled_from(sorted(rl.ESTIMATORS)),
       st.sampled_from(["natural", "straight_through", "importance_weighted"]))
def test_token_kl_values_and_gradients_finite_for_any_finite_logprobs(pair, estimator, gradient):
    """|log-ratio| up to 1e4: the default clamp keeps exp finite (k2's value is l^2/2 <= 5e7)."""
    logp, ref = (jnp.asarray(a) for a in pair)
    values = rl.token_kl(logp, ref, estimator=estimator, gradient=gradient)
    grads = jax.grad(lambda x: rl.token_kl(x, ref, estimator=estimator,
                                           gradient=gradient).sum())(logp)
    assert bool(jnp.all(jnp.isfinite(values))) and bool(jnp.all(jnp.isfinite(grads)))


@st.composite
def _values_mask_padding(draw):
    rows = draw(st.integers(1, 4))
    length = draw(st.integers(1, 6))
    pad = draw(st.integers(1, 4))
    values = draw(hnp.arrays(np.float32, (rows, length), elements=st.floats(-10, 10, width=32)))
    mask = draw(hnp.arrays(np.bool_, (rows, length)))
    junk = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    return values, mask, pad, junk


@given(_values_mask_padding(), st.sampled_from(rl.MODES))
def test_aggregate_is_invariant_to_masked_padding(args, mode):
    """Appending masked positions holding NaN/inf/huge junk changes neither value nor grad
    (seq-mean-token-sum-norm with its normaliser fixed, as the padded length changes)."""
    values, mask, pad, junk = args
    kwargs = {"normalizer": 7.0} if mode == "seq-mean-token-sum-norm" else {}
    padded_values = np.concatenate([values, np.full((values.shape[0], pad), junk, np.float32)], 1)
    padded_mask = np.concatenate([mask, np.zeros((mask.shape[0], pad), bool)], 1)
    f = lambda v, m: rl.aggregate(v, m, mode=mode, **kwargs)
    base, padded = f(jnp.asarray(values), mask), f(jnp.asarray(padded_values), padded_mask)
    np.testing.assert_allclose(padded, base, rtol=1e-6, atol=1e-6)
    grad = jax.grad(f)(jnp.asarray(padded_values), padded_mask)
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert bool(jnp.all(grad[:, values.shape[1]:] == 0))
    if not mask.any():
        assert float(base) == 0.0


@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(2, 40)),
                  elements=st.floats(-30, 30, width=32)),
       hnp.arrays(np.float32, st.just((3, 40)), elements=st.floats(-30, 30, width=32)),
       st.floats(-50, 50, width=32))
def test_full_kl_non_negative_and_zero_under_per_token_shift(logits, other, shift):
    other = other[: logits.shape[0], : logits.shape[1]]
    kl = rl.full_kl(jnp.asarray(logits), jnp.asarray(other), chunk_size=16)
    assert bool(jnp.all(kl >= 0)) and bool(jnp.all(jnp.isfinite(kl)))
    shifted = jnp.asarray(logits) + jnp.float32(shift)
    same = rl.full_kl(jnp.asarray(logits), shifted, chunk_size=16)
    # Shift-invariant in exact arithmetic; the float32 rounding of logits + shift is the
    # only error: at most ~eps * (|logit| + |shift|) per entry.
    bound = 4 * np.finfo(np.float32).eps * (np.abs(logits).max() + abs(shift) + 1)
    assert bool(jnp.all(jnp.abs(same) <= bound))


# --------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------


@given(st.floats(-20, 20), st.floats(0.05, 20), st.sampled_from(["reverse_kl", "forward_kl"]))
@settings(max_examples=6)
def test_fit_ends_finite_or_flagged(loc, scale, divergence):
    """Whatever the target's location and scale, a fit returns finite parameters or says
    it skipped non-finite steps; never a silent NaN."""
    import distrax

    from jaxkl import families

    result = jaxkl.fit(distrax.Normal(jnp.float32(loc), jnp.float32(scale)), families.gaussian(),
                       divergence=divergence, key=jax.random.key(0), num_steps=50,
                       num_samples=16)
    params_finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(result.params))
    assert params_finite
    assert bool(result.finite) == (int(result.num_nonfinite_steps) == 0)
    assert bool(jnp.all(jnp.isfinite(result.losses))) or not bool(result.finite)
