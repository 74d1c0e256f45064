"""Hypothesis property tests across the public API (issue 9).

Properties, not examples: they hold for every input the strategies can draw, and
Hypothesis shrinks any counterexample to a minimal one. Profiles are deterministic
(``derandomize``) so CI runs are reproducible.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
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
        size = float(np.abs(x).max())
        np.testing.assert_allclose(total.mean, x.mean(0), rtol=1e-12, atol=1e-14 * size)
        centred = x - x.mean(0)
        np.testing.assert_allclose(total.comoment, centred.T @ centred, rtol=1e-9,
                                   atol=1e-13 * size**2 * len(x))


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
