"""estimate(): closed forms, NumPy float64 recomputation, streaming, memory, errors."""

import json
import subprocess
import sys
import textwrap

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import jaxkl
from jaxkl import stats
from jaxkl._src.montecarlo import engine

KEY = jax.random.key(2026)


def _gaussian_pair(mu):
    return distrax.Normal(0.0, 1.0), distrax.Normal(mu, 1.0)


@pytest.mark.parametrize("mu", [0.1, 0.5, 1.0])
def test_means_and_variances_match_closed_forms(mu):
    """q = N(0,1), p = N(mu,1) (docs/design.md): every mean and variance within 5 stderr.

    The variance is checked as the mean of the squared deviation from the known mean, whose
    own standard error estimate() reports.
    """
    q, p = _gaussian_pair(mu)
    kl = mu**2 / 2
    closed = {
        "k1": (kl, mu**2),
        "k2": (kl + mu**4 / 8, (2 * mu**4 + mu**6) / 4),
        "k3": (kl, np.exp(mu**2) - 1 - mu**2),
    }
    estimators = dict(engine.KERNELS)
    for name, (mean, _) in closed.items():
        kernel = estimators[name]
        estimators[f"{name}_sqdev"] = lambda l, k=kernel, m=mean: jnp.square(k(l) - m)
    wanted = {n: estimators[n] for n in [*closed, *(f"{n}_sqdev" for n in closed)]}
    res = jaxkl.estimate(q, p, key=KEY, num_samples=2_000_000, estimators=wanted)
    for name, (mean, var) in closed.items():
        assert abs(float(res[name].mean) - mean) <= 5 * float(res[name].stderr), name
        sq = res[f"{name}_sqdev"]
        assert abs(float(sq.mean) - var) <= 5 * float(sq.stderr), name


def test_optimal_control_variate_is_unbiased_and_no_worse_than_k1_or_k3():
    q, p = _gaussian_pair(1.0)
    res = jaxkl.estimate(q, p, key=KEY, num_samples=1_000_000, estimators=("k1", "k3", "cv*"))
    cv = res["cv*"]
    assert abs(float(cv.mean) - 0.5) <= 5 * float(cv.stderr)
    assert float(cv.std) <= float(res["k3"].std) and float(cv.std) <= float(res["k1"].std)
    # Closed form: lam* = mu^2 / (e^{mu^2} - 1); Var = mu^2 - mu^4 / (e^{mu^2} - 1).
    assert abs(float(cv.std) ** 2 - (1 - 1 / np.expm1(1.0))) < 0.01


def test_forward_and_f_divergences_match_quadrature():
    """Each estimator's mean equals its divergence computed by scipy quadrature.

    p is narrower than q, so r = p/q is bounded and every estimator has finite variance
    (a wider p would make Var(chi^2 estimator) infinite and its stderr meaningless).
    """
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(0.5, 0.8)
    pdf_q = scipy.stats.norm(0.0, 1.0).pdf
    pdf_p = scipy.stats.norm(0.5, 0.8).pdf

    def integral(f):  # D_f(p||q) = int q f(p/q)
        return scipy.integrate.quad(lambda x: pdf_q(x) * f(pdf_p(x) / pdf_q(x)), -30, 30,
                                    limit=200)[0]

    truth = {
        "forward": float(p.kl_divergence(q)),
        "jensen_shannon": integral(lambda u: (u * np.log(u) - (1 + u) * np.log((1 + u) / 2)) / 2),
        "squared_hellinger": integral(lambda u: (np.sqrt(u) - 1) ** 2),
        "total_variation": integral(lambda u: abs(u - 1) / 2),
        "pearson_chi2": integral(lambda u: (u - 1) ** 2),
    }
    res = jaxkl.estimate(q, p, key=KEY, num_samples=2_000_000, estimators=tuple(truth))
    for name, value in truth.items():
        assert abs(float(res[name].mean) - value) <= 5 * float(res[name].stderr), name


def _numpy_recompute(q, p, key, num_samples, chunk_size):
    """The same samples as estimate() (chunk i uses fold_in(key, i)), in NumPy float64."""
    parts = []
    for i in range(-(-num_samples // chunk_size)):
        l = engine.sample_log_ratio(q, p, jax.random.fold_in(key, i), chunk_size)
        parts.append(np.asarray(l, np.float64))
    return np.concatenate(parts)[:num_samples]


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_other_prng_implementations_are_reproducible_and_exact(impl):
    """A key of another PRNG implementation (jax.random.key(seed, impl=...); faster on
    some backends, see BENCHMARKS.md) streams the same way: the chunks' samples are those
    of fold_in(key, chunk), the result is reproducible and matches NumPy float64."""
    key = jax.random.key(7, impl=impl)
    q, p = distrax.Normal(0.3, 0.8), distrax.Normal(-0.2, 1.1)
    run = lambda: jaxkl.estimate(q, p, key=key, num_samples=10_001, chunk_size=4096)
    first, again = run(), run()
    l = _numpy_recompute(q, p, key, 10_001, 4096)
    for name, values in {"k1": -l, "k3": np.expm1(l) - l}.items():
        assert float(first[name].mean) == float(again[name].mean)
        np.testing.assert_allclose(float(first[name].mean), values.mean(), rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(float(first[name].std), values.std(ddof=1), rtol=2e-5)


@pytest.mark.parametrize("num_samples", [1000, 4096 * 3, 50_001])
def test_agrees_with_numpy_float64_on_same_samples(num_samples):
    q, p = distrax.Normal(0.3, 0.8), distrax.Normal(-0.2, 1.1)
    chunk = 4096
    res = jaxkl.estimate(q, p, key=KEY, num_samples=num_samples, chunk_size=chunk,
                         estimators=("k1", "k2", "k3", "cv*"))
    used_chunk = engine.make_plan(q, p, num_samples=num_samples, estimators=("k1",),
                                  chunk_size=chunk).chunk_size
    l = _numpy_recompute(q, p, KEY, num_samples, used_chunk)
    r1 = np.expm1(l)
    k3 = r1 - l
    lam = np.cov(l, r1)[0, 1] / np.var(r1, ddof=1)
    want = {"k1": -l, "k2": l * l / 2, "k3": k3, "cv*": -l + lam * r1}
    for name, values in want.items():
        s = res[name]
        # cv*'s lam is fitted to the same samples: its residual has n - 2 degrees of freedom.
        ddof = 2 if name == "cv*" else 1
        assert int(s.count) == num_samples
        np.testing.assert_allclose(float(s.mean), values.mean(), rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(float(s.std), values.std(ddof=ddof), rtol=2e-5)
        np.testing.assert_allclose(float(s.stderr),
                                   values.std(ddof=ddof) / np.sqrt(num_samples), rtol=2e-5)


def test_float64_under_x64(x64):
    q, p = distrax.Normal(jnp.float64(0.0), 1.0), distrax.Normal(jnp.float64(0.1), 1.0)
    res = jaxkl.estimate(q, p, key=KEY, num_samples=10_000)
    assert res["k3"].mean.dtype == jnp.float64
    l = _numpy_recompute(q, p, KEY, 10_000, engine.make_plan(
        q, p, num_samples=10_000, estimators=("k1",), chunk_size=2**18).chunk_size)
    np.testing.assert_allclose(float(res["k3"].mean), np.mean(np.expm1(l) - l), rtol=1e-12)


def test_does_not_recompile_for_new_sample_counts_or_parameters():
    q, p = _gaussian_pair(0.3)
    jaxkl.estimate(q, p, key=KEY, num_samples=300_000)
    before = engine._stream._cache_size()
    jaxkl.estimate(q, p, key=jax.random.key(5), num_samples=700_000)
    jaxkl.estimate(distrax.Normal(1.0, 2.0), distrax.Normal(0.0, 3.0), key=KEY,
                   num_samples=200_000)
    assert engine._stream._cache_size() == before


def test_objects_that_are_not_pytrees_work():
    class Custom:
        """Only the distrax methods estimate() needs."""

        def sample(self, *, seed, sample_shape):
            return jax.random.normal(seed, sample_shape)

        def log_prob(self, x):
            return jax.scipy.stats.norm.logpdf(x)

    res = jaxkl.estimate(Custom(), distrax.Normal(0.5, 1.0), key=KEY, num_samples=200_000)
    assert abs(float(res["k3"].mean) - 0.125) <= 5 * float(res["k3"].stderr)


def test_merge_is_order_independent():
    x = jax.random.normal(KEY, (1000, 3)) * jnp.array([[1.0, 10.0, 0.1]]) + 100.0
    parts = [stats.from_samples(x[i:i + 250]) for i in range(0, 1000, 250)]
    forward, backward = parts[0], parts[-1]
    for m in parts[1:]:
        forward = stats.merge(forward, m)
    for m in parts[-2::-1]:
        backward = stats.merge(m, backward)
    whole = np.asarray(x, np.float64)
    for m in (forward, backward):
        np.testing.assert_allclose(m.mean, whole.mean(0), rtol=1e-6)
        np.testing.assert_allclose(m.comoment, np.cov(whole.T) * 999, rtol=1e-4, atol=1e-2)


_MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys, distrax, jax, jaxkl
    n = int(float(sys.argv[1]))
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(0.1, 1.0)
    jaxkl.estimate(q, p, key=jax.random.key(0), num_samples=1000)  # compile, warm up
    res = jaxkl.estimate(q, p, key=jax.random.key(0), num_samples=n)
    jax.block_until_ready(res)
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "count": int(res["k1"].count)}))
""")


def _peak_rss_kb(num_samples: float) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(num_samples)],
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_num_samples():
    """1e8 samples would need 400 MB per float32 array if materialised; the peak RSS must
    stay within 10% of the 1e6-sample run."""
    small, large = _peak_rss_kb(1e6), _peak_rss_kb(1e8)
    assert large["count"] == 100_000_000
    assert large["maxrss_kb"] <= 1.10 * small["maxrss_kb"], (small, large)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"num_samples": -5}, ValueError, "num_samples"),
        ({"num_samples": 2.5}, TypeError, "num_samples"),
        ({"num_samples": 10, "estimators": ("k4",)}, ValueError, "estimator"),
        ({"num_samples": 10, "estimators": ()}, ValueError, "estimators"),
        ({"num_samples": 10, "chunk_size": 0}, ValueError, "chunk_size"),
        ({"num_samples": 10, "key": 3}, TypeError, "key"),
        ({"num_samples": 10, "q": object()}, TypeError, "`q`"),
        ({"num_samples": 10, "p": jnp.ones(3)}, TypeError, "`p`"),
        ({"num_samples": 10, "p": distrax.Normal(jnp.zeros(2), 1.0)}, ValueError, "batch shape"),
        # Invalid concrete parameters gave NaN statistics; reference_kl already raised.
        ({"num_samples": 10, "q": distrax.Normal(0.0, -1.0)}, ValueError, "`q` has scale"),
        ({"num_samples": 10, "q": distrax.Normal(jnp.nan, 1.0)}, ValueError, "`q` has a non-"),
        ({"num_samples": 10, "p": distrax.Normal(0.0, 0.0)}, ValueError, "`p` has scale"),
        ({"num_samples": 10, "p": distrax.MultivariateNormalDiag(jnp.zeros(2))}, ValueError,
         r"`q` has event shape \(\) but `p` has event shape \(2,\)"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, error, match):
    args = {"q": distrax.Normal(0.0, 1.0), "p": distrax.Normal(1.0, 1.0), "key": KEY, **kwargs}
    q, p = args.pop("q"), args.pop("p")
    with pytest.raises(error, match=match):
        jaxkl.estimate(q, p, **args)


def test_relative_error_interval_covers_truth_for_unbiased_estimators():
    q, p = _gaussian_pair(1.0)
    res = jaxkl.estimate(q, p, key=KEY, num_samples=1_000_000)
    for name in ("k1", "k3"):
        rel = jaxkl.relative_error(res[name], 0.5, level=0.999)
        assert float(rel.low) <= 0.0 <= float(rel.high), name
    rel_k2 = jaxkl.relative_error(res["k2"], 0.5)
    assert float(rel_k2.low) <= 0.25 <= float(rel_k2.high)


def test_is_pytree_cache_follows_registration():
    """is_pytree caches only 'yes' per type: a type registered after a first call is a
    pytree at the next one, and leaves (arrays, callables) are never cached as nodes."""
    is_pytree = engine.is_pytree

    class Box:
        def __init__(self, value):
            self.value = value

    box = Box(jnp.ones(2))
    assert not is_pytree(box)
    jax.tree_util.register_pytree_node(Box, lambda b: ((b.value,), None),
                                       lambda _, children: Box(*children))
    assert is_pytree(box) and is_pytree(Box(jnp.zeros(3)))
    assert not is_pytree(jnp.ones(3)) and not is_pytree(lambda x: x)
    assert is_pytree(distrax.Normal(0.0, 1.0))


def test_results_keep_the_requested_order():
    """The result's keys follow `estimators` (a dict leaves jit with sorted keys), on one
    device and through the sharded front-end."""
    q, p = distrax.Normal(0.1, 1.0), distrax.Normal(0.0, 1.0)
    names = ("k3", "cv*", "k1", "forward_kl")
    got = jaxkl.estimate(q, p, key=jax.random.key(0), num_samples=1000, estimators=names)
    assert tuple(got) == names
    mesh = jax.make_mesh((1,), ("d",))
    got = jaxkl.sharding.estimate_sharded(q, p, key=jax.random.key(0), num_samples=1000,
                                          estimators=names, mesh=mesh)
    assert tuple(got) == names
    named = jaxkl.estimate(q, p, key=jax.random.key(0), num_samples=1000,
                           estimators={"b": jaxkl.k3, "a": jaxkl.k1})
    assert tuple(named) == ("b", "a")


def test_traced_num_samples_and_parameters():
    """A traced sample count is a clear TypeError (it fixes the loop); traced parameters
    cannot be checked and are estimated as given."""
    q, p = distrax.Normal(0.0, 1.0), distrax.Normal(1.0, 1.0)
    with pytest.raises(TypeError, match="`num_samples` must be a Python int, not a traced"):
        jax.jit(lambda n: jaxkl.estimate(q, p, key=KEY, num_samples=n))(100)
    mean = jax.jit(lambda s: jaxkl.estimate(distrax.Normal(0.0, s), p, key=KEY,
                                            num_samples=10_000)["k1"].mean)(1.0)
    np.testing.assert_allclose(float(mean), 0.5, atol=0.05)  # KL(N(0,1)||N(1,1)) = 0.5
