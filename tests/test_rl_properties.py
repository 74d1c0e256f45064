"""Hypothesis properties of token_kl's gradients (issue 14).

For every estimator x gradient option x clamp setting, and float32, bfloat16 and float64
inputs: the gradient with respect to ``logprobs`` is finite wherever the log-ratio is
finite (or ``-inf`` at a masked or clamped token), 0 at masked and clamped tokens, and
equal, to a few ulps away from the clamps, to the analytic gradient computed here with
mpmath from the exact inputs:

- natural: ``-k'(l)`` (k1: 1, k2: ``-l``, k3: ``-(e^l - 1)``, abs: ``-sign l``);
- straight-through: ``-l`` (k2's gradient);
- importance-weighted: ``w (k(l) - k'(l))``, ``w = pi / pi_old``: ``-w l`` for k3; for k1
  it is ``w (1 - l)`` (the extra ``w`` is the score of k1's constant part, 0 in
  expectation, so the expected gradient is ``-w l`` too); k2 ``w l (l/2 - 1)``, abs
  ``w (|l| - sign l)``.

The inputs are drawn so that ``ref - logp`` and ``logp - old`` are exact in the input
dtype (multiples of 2**-10, or one side 0): the analytic gradient is then that of the
numbers the function receives, and any error is the function's.
"""

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxkl import rl
from tests import _reference as ref

settings.register_profile("jaxkl-rl", max_examples=50, deadline=None, derandomize=True,
                          print_blob=True)

N = 8  # tokens per example (one shape: one compilation per configuration)
ESTIMATORS = ("k1", "k2", "k3", "abs")
LOG_RATIO_CLIPS = (None, 20.0, 3.0)
VALUE_CLIPS = (None, 10.0, 0.5)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


@functools.cache
def _grad_fn(estimator, gradient, log_ratio_clip, value_clip, with_old, with_mask):
    def loss(logp, ref_logp, old, mask):
        return rl.token_kl(logp, ref_logp, estimator=estimator, gradient=gradient,
                           old_logprobs=old if with_old else None,
                           mask=mask if with_mask else None, log_ratio_clip=log_ratio_clip,
                           value_clip=value_clip).sum()

    return jax.jit(jax.grad(loss))


def _dyadic(lo, hi):
    return st.integers(int(lo * 1024), int(hi * 1024)).map(lambda k: k / 1024)


@st.composite
def _token(draw, dtype_name):
    kind = draw(st.sampled_from(["grid", "grid", "grid", "tiny", "ref_minus_inf", "masked"]))
    r = draw(_dyadic(-4, 4))  # log(pi / pi_old)
    if dtype_name == "bfloat16":
        # Any two bf16 numbers of this size differ by an exact float32 number.
        logp = float(jnp.asarray(draw(st.floats(-40, 0)), jnp.bfloat16))
        ref_logp = float(jnp.asarray(draw(st.floats(-40, 0)), jnp.bfloat16))
        r = float(jnp.asarray(r, jnp.bfloat16))
    elif kind == "tiny":
        logp, ref_logp = 0.0, draw(st.floats(-2.0**-10, 2.0**-10, width=32))
    else:
        logp = draw(_dyadic(-40, 0))
        ref_logp = logp + draw(_dyadic(-30, 30))
    if kind == "ref_minus_inf":
        ref_logp = -np.inf
    masked = kind == "masked"
    if masked:
        logp, ref_logp = draw(st.sampled_from([(-np.inf, -np.inf), (np.nan, 0.0),
                                               (-np.inf, -1.0), (-1.0, -np.inf)]))
    return logp, ref_logp, logp - r if np.isfinite(logp) else logp, not masked


def _analytic(estimator, gradient, logp, ref_logp, old, log_ratio_clip, value_clip):
    """(gradient, near a clamp boundary?) from the definitions, in mpmath."""
    l = mpmath.mpf(ref_logp) - mpmath.mpf(logp)
    if log_ratio_clip is not None and abs(l) > log_ratio_clip:
        return 0.0, False
    k = {"k1": -l, "k2": l * l / 2, "k3": mpmath.expm1(l) - l, "abs": abs(l)}[estimator]
    dk = {"k1": mpmath.mpf(-1), "k2": l, "k3": mpmath.expm1(l),
          "abs": mpmath.sign(l)}[estimator]
    near = value_clip is not None and abs(abs(k) - value_clip) < 1e-4 * value_clip
    if gradient == "straight_through":
        return float(-l), False
    if value_clip is not None and abs(k) > value_clip:
        return 0.0, near
    if gradient == "natural":
        return float(-dk), near
    r = mpmath.mpf(logp) - mpmath.mpf(old)
    if log_ratio_clip is not None and abs(r) > log_ratio_clip:
        return 0.0, False
    return float(mpmath.exp(r) * (k - dk)), near


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("gradient", rl.GRADIENTS)
@settings(settings.get_profile("jaxkl-rl"))
@given(
    data=st.data(),
    log_ratio_clip=st.sampled_from(LOG_RATIO_CLIPS),
    value_clip=st.sampled_from(VALUE_CLIPS),
    dtype_name=st.sampled_from(list(DTYPES)),
    jit=st.booleans(),
)
def test_token_kl_gradient_is_finite_and_analytic(data, estimator, gradient, log_ratio_clip,
                                                  value_clip, dtype_name, jit):
    tokens = data.draw(st.lists(_token(dtype_name), min_size=N, max_size=N))
    logp, ref_logp, old, valid = (np.array(c) for c in zip(*tokens, strict=True))
    dtype = DTYPES[dtype_name]
    with_old = gradient == "importance_weighted"
    with_mask = not valid.all()
    with jax.enable_x64(dtype == jnp.float64):
        args = [jnp.asarray(x, dtype) for x in (logp, ref_logp, old)] + [jnp.asarray(valid)]
        fn = _grad_fn(estimator, gradient, log_ratio_clip, value_clip, with_old, with_mask)
        if not jit:
            fn = jax.grad(lambda *a: rl.token_kl(
                a[0], a[1], estimator=estimator, gradient=gradient,
                old_logprobs=a[2] if with_old else None, mask=a[3] if with_mask else None,
                log_ratio_clip=log_ratio_clip, value_clip=value_clip).sum())
        grad = np.asarray(fn(*args), np.float64)
        exact_inputs = [np.asarray(a, np.float64) for a in args[:3]]
    assert grad.dtype == np.float64 and grad.shape == (N,)
    out_dtype = jnp.bfloat16 if dtype == jnp.bfloat16 else np.dtype(jnp.dtype(dtype).name)
    budget = 1.0 if dtype == jnp.bfloat16 else 4.0
    for i in range(N):
        lp, rf, od = (x[i] for x in exact_inputs)
        if not valid[i]:
            assert grad[i] == 0.0, (i, lp, rf)
            continue
        want, near = _analytic(estimator, gradient, lp, rf, od if with_old else lp,
                               log_ratio_clip, value_clip)
        # XLA flushes subnormal floats to zero (CPU and GPU alike), so a log-ratio below
        # the dtype's smallest normal is 0 there; |l|'s derivative jumps at 0, so the
        # exact sign(l) is not what the float environment can give.
        if estimator == "abs" and abs(rf - lp) < jnp.finfo(dtype).tiny:
            near = True
        if np.isfinite(rf) or log_ratio_clip is not None:
            assert np.isfinite(grad[i]), (i, lp, rf, grad[i])
        if near:
            continue
        if not np.isfinite(want):
            assert grad[i] == want
            continue
        ulps = ref.mp_ulp_error(np.array([grad[i]]), [mpmath.mpf(want)], out_dtype)[0]
        assert ulps <= budget, (i, lp, rf, od, grad[i], want, ulps)
