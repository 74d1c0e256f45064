"""Gradient audit: enumeration against Monte Carlo, the on-policy identities, the tree policy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkl.rl import audit, tabular, token_kl
from jaxkl.rl.audit import CONFIGS, KLConfig

V = 5


def random_logits(seed, shape=(V,), scale=1.0):
    return scale * np.random.default_rng(seed).normal(size=shape)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reverse_kl_grad_closed_form(theta, ref):
    """d/dtheta KL(softmax(theta) || softmax(ref)) = p * (a - KL), a = log p - log r."""
    p, r = softmax(theta), softmax(ref)
    a = np.log(p) - np.log(r)
    return p * (a - np.sum(p * a))


def forward_kl_grad_closed_form(theta, ref):
    """d/dtheta KL(softmax(ref) || softmax(theta)) = p - r."""
    return softmax(theta) - softmax(ref)


def by_name(result, config):
    return np.asarray(result.gradients[CONFIGS.index(config)])


# ---------------------------------------------------------------- identities (float64)


@pytest.mark.parametrize("seed", [0, 1])
def test_on_policy_identities_categorical(x64, seed):
    theta, ref = random_logits(seed), random_logits(seed + 10)
    out = audit.audit_categorical(theta, ref)
    reverse = reverse_kl_grad_closed_form(theta, ref)
    forward = forward_kl_grad_closed_form(theta, ref)
    assert out.gradients.dtype == jnp.float64
    tol = dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(out.reverse_kl_gradient), reverse, **tol)
    np.testing.assert_allclose(np.asarray(out.forward_kl_gradient), forward, **tol)

    np.testing.assert_allclose(by_name(out, KLConfig("k1")), 0, atol=1e-15)
    np.testing.assert_allclose(by_name(out, KLConfig("k2")), reverse, **tol)
    np.testing.assert_allclose(by_name(out, KLConfig("k3")), forward, **tol)
    for gradient in ("natural", "importance_weighted"):
        np.testing.assert_allclose(by_name(out, KLConfig("k1", "reward", gradient)), reverse, **tol)
    for estimator in ("k1", "k2", "k3", "abs"):
        np.testing.assert_allclose(
            by_name(out, KLConfig(estimator, "loss", "straight_through")), reverse, **tol
        )
    # Unbiased estimators, importance weighted: grad E_pi[k] = grad KL(pi || ref).
    for estimator in ("k1", "k3"):
        np.testing.assert_allclose(
            by_name(out, KLConfig(estimator, "loss", "importance_weighted")), reverse, **tol
        )
    # The summary numbers agree with the gradients they summarise.
    i, j = CONFIGS.index(KLConfig("k2")), CONFIGS.index(KLConfig("k3"))
    np.testing.assert_allclose(float(out.cosine_reverse[i]), 1, rtol=1e-12)
    np.testing.assert_allclose(float(out.relative_error_forward[j]), 0, atol=1e-12)
    np.testing.assert_allclose(float(out.scale_reverse[i]), 1, rtol=1e-12)
    g, ref_g = forward, reverse
    cosine = g @ ref_g / np.linalg.norm(g) / np.linalg.norm(ref_g)
    np.testing.assert_allclose(float(out.cosine_reverse[j]), cosine, rtol=1e-12)
    np.testing.assert_allclose(
        float(out.relative_error_reverse[j]),
        np.linalg.norm(g - ref_g) / np.linalg.norm(ref_g), rtol=1e-12,
    )
    p, r = softmax(theta), softmax(ref)
    np.testing.assert_allclose(float(out.reverse_kl), np.sum(p * np.log(p / r)), rtol=1e-12)
    np.testing.assert_allclose(float(out.forward_kl), np.sum(r * np.log(r / p)), rtol=1e-12)


def test_abs_natural_gradient_closed_form(x64):
    """E_pi[grad |log pi - log ref|] = sum_y pi(y) sign(a_y) (e_y - pi)."""
    theta, ref = random_logits(3), random_logits(4)
    out = audit.audit_categorical(theta, ref, configs=[KLConfig("abs")])
    p, r = softmax(theta), softmax(ref)
    sign = np.sign(np.log(p) - np.log(r))
    expected = p * sign - p * np.sum(p * sign)
    np.testing.assert_allclose(np.asarray(out.gradients[0]), expected, rtol=1e-12, atol=1e-15)


def test_off_policy_importance_weighting_keeps_reverse_kl_gradient(x64):
    theta, ref, old = random_logits(5), random_logits(6), random_logits(7)
    out = audit.audit_categorical(theta, ref, old_logits=old)
    reverse = reverse_kl_grad_closed_form(theta, ref)
    for estimator in ("k1", "k3"):
        np.testing.assert_allclose(
            by_name(out, KLConfig(estimator, "loss", "importance_weighted")), reverse,
            rtol=1e-12, atol=1e-14,
        )
    # Without the weights the samples' distribution shows: these are biased off-policy.
    for config in (KLConfig("k2"), KLConfig("k3", "loss", "straight_through"),
                   KLConfig("k1", "reward")):
        assert float(out.relative_error_reverse[CONFIGS.index(config)]) > 0.05


# ---------------------------------------------------------------- Monte Carlo (float64)


def per_sample_surrogate(config, theta, y, ref_logp, old_logp):
    """One sampled token's loss, written from the definitions (not from audit's code)."""
    logp = jax.nn.log_softmax(theta)[y]
    ref, old = ref_logp[y], old_logp[y]
    if config.placement == "loss":
        iw = config.gradient == "importance_weighted"
        return token_kl(logp, ref, estimator=config.estimator, gradient=config.gradient,
                        old_logprobs=old if iw else None)
    penalty = token_kl(old, ref, estimator=config.estimator)
    if config.gradient == "natural":
        return penalty * logp
    return penalty * jnp.exp(logp - old)


@pytest.mark.parametrize("off_policy", [False, True])
def test_enumeration_matches_monte_carlo_categorical(x64, off_policy):
    theta, ref = random_logits(8), random_logits(9)
    old = random_logits(10) if off_policy else theta
    out = audit.audit_categorical(theta, ref, old_logits=old if off_policy else None)
    ref_logp = jax.nn.log_softmax(jnp.asarray(ref))
    old_logp = jax.nn.log_softmax(jnp.asarray(old))
    n = 4000
    ys = jax.random.categorical(jax.random.key(11), old_logp, shape=(n,))
    for c, config in enumerate(CONFIGS):
        grads = jax.vmap(jax.grad(per_sample_surrogate, argnums=1), (None, None, 0, None, None))(
            config, jnp.asarray(theta), ys, ref_logp, old_logp
        )
        grads = np.asarray(grads)
        stderr = grads.std(0, ddof=1) / np.sqrt(n)
        error = np.abs(grads.mean(0) - np.asarray(out.gradients[c]))
        assert np.all(error <= 5 * stderr + 1e-12), (config.name, error, stderr)


# ---------------------------------------------------------------- sequence level


def numpy_tree(theta, ref, eos_token=None):
    """Reach probabilities, subtree KLs and the sequence-KL gradient by recursion.

    Independent of the enumeration: ``grad_theta_h KL_seq = P(h) pi_h (c - E_pi_h c)``
    with ``c_y = log pi(y|h) - log ref(y|h) + KL_subtree(h y)``.
    """
    vocab, length = tabular.tree_shape(theta)
    p, r = softmax(theta), softmax(ref)
    nodes = theta.shape[0]
    depth = np.zeros(nodes, int)
    for h in range(nodes):
        for y in range(vocab):
            child = vocab * h + 1 + y
            if child < nodes:
                depth[child] = depth[h] + 1
    ended = np.zeros(nodes, bool)  # the prefix already holds the EOS token
    reach = np.zeros(nodes)
    reach[0] = 1.0
    for h in range(nodes):
        for y in range(vocab):
            child = vocab * h + 1 + y
            if child < nodes:
                ended[child] = ended[h] or y == eos_token
                reach[child] = 0.0 if ended[child] else reach[h] * p[h, y]
    subtree = np.zeros(nodes)
    grad = np.zeros_like(theta)
    local = np.zeros(nodes)
    for h in reversed(range(nodes)):
        if ended[h]:
            continue
        a = np.log(p[h]) - np.log(r[h])
        future = np.array([
            subtree[vocab * h + 1 + y] if vocab * h + 1 + y < nodes else 0.0
            for y in range(vocab)
        ])
        c = a + future
        subtree[h] = p[h] @ c
        local[h] = p[h] @ a
        grad[h] = reach[h] * p[h] * (c - p[h] @ c)
    # The part per-token losses see: prefix distribution held fixed.
    partial = reach[:, None] * p * (np.log(p / r) - local[:, None])
    partial[ended] = 0
    return subtree[0], grad, partial


def tree_logits(seed, vocab=3, length=3, scale=1.0):
    return random_logits(seed, (tabular.num_nodes(vocab, length), vocab), scale)


@pytest.mark.parametrize("eos_token", [None, 2])
def test_sequence_kl_and_gradients_against_recursion(x64, eos_token):
    theta, ref = tree_logits(0), tree_logits(1)
    kl, grad, partial = numpy_tree(theta, ref, eos_token)
    configs = [KLConfig("k1", "reward"), KLConfig("k2"),
               KLConfig("k3", "loss", "straight_through"), KLConfig("k1")]
    out = audit.audit_sequence(theta, ref, configs=configs, eos_token=eos_token)
    tol = dict(rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(float(out.reverse_kl), kl, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out.reverse_kl_gradient), grad, **tol)
    # k1 in the reward with penalty-to-go: the whole sequence-level reverse-KL gradient.
    np.testing.assert_allclose(np.asarray(out.gradients[0]), grad, **tol)
    # k2 / straight-through summed over tokens: only the fixed-prefix part.
    np.testing.assert_allclose(np.asarray(out.gradients[1]), partial, **tol)
    np.testing.assert_allclose(np.asarray(out.gradients[2]), partial, **tol)
    np.testing.assert_allclose(np.asarray(out.gradients[3]), 0, atol=1e-14)
    assert float(out.relative_error_reverse[1]) > 0.05
    forward_kl, _, _ = numpy_tree(ref, theta, eos_token)
    np.testing.assert_allclose(float(out.forward_kl), forward_kl, rtol=1e-12)


def test_length_normalised_aggregations_scale_the_gradient(x64):
    theta, ref = tree_logits(2), tree_logits(3)
    config = [KLConfig("k1", "reward")]
    for mode in ("seq-mean-token-sum-norm", "seq-mean-token-mean", "token-mean"):
        out = audit.audit_sequence(theta, ref, configs=config, aggregation=mode)
        np.testing.assert_allclose(float(out.scale_reverse[0]), 1 / 3, rtol=1e-12)
        np.testing.assert_allclose(float(out.cosine_reverse[0]), 1, rtol=1e-12)
    # With an EOS token lengths vary and the per-sequence mean is no longer a multiple.
    out = audit.audit_sequence(theta, ref, configs=config, aggregation="seq-mean-token-mean",
                               eos_token=0)
    assert float(out.cosine_reverse[0]) < 1 - 1e-6


def sequence_surrogate(config, theta, tokens, ref_table, old_table, eos_token):
    """One sampled sequence's loss, from the definitions, with the per-sequence mean."""
    mask = tabular.eos_mask(tokens, eos_token)
    logp = tabular.token_logprobs(theta, tokens)
    ref = tabular.token_logprobs(ref_table, tokens)
    old = tabular.token_logprobs(old_table, tokens)
    if config.placement == "loss":
        iw = config.gradient == "importance_weighted"
        values = token_kl(logp, ref, estimator=config.estimator, gradient=config.gradient,
                          old_logprobs=old if iw else None, mask=mask)
    else:
        penalty = token_kl(old, ref, estimator=config.estimator, mask=mask)
        to_go = jnp.stack([penalty[t:].sum() for t in range(tokens.shape[-1])])
        score = logp if config.gradient == "natural" else jnp.exp(logp - old)
        values = jnp.where(mask, to_go * score, 0)
    return values.sum() / mask.sum().astype(values.dtype)


def test_enumeration_matches_monte_carlo_sequences(x64):
    theta, ref, old = tree_logits(4), tree_logits(5), tree_logits(6, scale=0.5)
    eos_token = 1
    configs = [KLConfig("k3"), KLConfig("k2", "loss", "importance_weighted"),
               KLConfig("k1", "reward", "importance_weighted"), KLConfig("abs", "reward")]
    out = audit.audit_sequence(theta, ref, old_logits=old, configs=configs,
                               aggregation="seq-mean-token-mean", eos_token=eos_token)
    n = 3000
    samples = tabular.sample(jnp.asarray(old), key=jax.random.key(0), num_samples=n)
    for c, config in enumerate(configs):
        # Per-sample gradients depend only on the sequence: weight unique ones by counts.
        unique, counts = np.unique(np.asarray(samples), axis=0, return_counts=True)
        grad = jax.grad(lambda t, s, c=config: sequence_surrogate(c, t, s, ref, old, eos_token))
        grads = np.asarray(jax.jit(jax.vmap(grad, (None, 0)))(jnp.asarray(theta), unique))
        mean = np.tensordot(counts, grads, 1) / n
        second = np.tensordot(counts, grads**2, 1) / n
        stderr = np.sqrt(np.maximum(second - mean**2, 0) * n / (n - 1) / n)
        error = np.abs(mean - np.asarray(out.gradients[c]))
        assert np.all(error <= 5 * stderr + 1e-12), config.name


def test_sample_frequencies_match_enumerated_weights(x64):
    theta = tree_logits(7, vocab=2, length=3)
    _, _, weights = tabular.sequence_weights(jnp.asarray(theta))
    n = 20000
    samples = np.asarray(tabular.sample(jnp.asarray(theta), key=jax.random.key(1),
                                        num_samples=n))
    index = (samples * np.array([4, 2, 1])).sum(-1)  # lexicographic, as enumerated
    freq = np.bincount(index, minlength=8) / n
    w = np.asarray(weights)
    assert np.all(np.abs(freq - w) <= 5 * np.sqrt(w * (1 - w) / n))


def test_eos_weights_give_each_sequence_its_probability(x64):
    theta = tree_logits(8, vocab=2, length=3)
    tokens, mask, weights = tabular.sequence_weights(jnp.asarray(theta), eos_token=0)
    p = softmax(theta)
    np.testing.assert_allclose(float(weights.sum()), 1, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(mask[:4]), [[True, False, False]] * 4)
    # The four arrays starting with EOS share the sequence (0,): together P(y_1 = 0).
    np.testing.assert_allclose(float(weights[:4].sum()), p[0, 0], rtol=1e-12)
    # (1, 0, *): P(1) P(0 | 1); node of prefix (1,) is 2.
    np.testing.assert_allclose(float(weights[4:6].sum()), p[0, 1] * p[2, 0], rtol=1e-12)


def test_prefix_nodes_and_tree_shape():
    tokens = np.array(list(itertools.product(range(3), repeat=2)))
    nodes = np.asarray(tabular.prefix_nodes(jnp.asarray(tokens), 3))
    np.testing.assert_array_equal(nodes[:, 0], 0)
    np.testing.assert_array_equal(nodes[:, 1], 1 + tokens[:, 0])
    assert tabular.tree_shape(np.zeros((1 + 3 + 9, 3))) == (3, 3)
    assert tabular.num_nodes(4, 5) == 341
    with pytest.raises(ValueError, match="not \\(V\\*\\*T - 1\\)"):
        tabular.tree_shape(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="vocab_size >= 2"):
        tabular.tree_shape(np.zeros((5,)))
    with pytest.raises(TypeError, match="`tokens`"):
        tabular.prefix_nodes(jnp.zeros((2, 2)), 3)


# ---------------------------------------------------------------- transforms, dtypes, errors


def test_jit_and_vmap_match_eager():
    configs = (KLConfig("k2"), KLConfig("k3", "loss", "importance_weighted"),
               KLConfig("abs", "reward"))
    thetas = jnp.asarray(random_logits(12, (2, V)), jnp.float32)
    ref = jnp.asarray(random_logits(13), jnp.float32)
    old = jnp.asarray(random_logits(14), jnp.float32)
    run = lambda t: audit.audit_categorical(t, ref, old_logits=old, configs=configs)
    eager = [run(t) for t in thetas]
    jitted = jax.jit(run)(thetas[0])
    batched = jax.vmap(run)(thetas)
    for got, want in [(jitted, eager[0]), *[
        (jax.tree.map(lambda x, i=i: x[i], batched), e) for i, e in enumerate(eager)
    ]]:
        for field in ("gradients", "cosine_reverse", "relative_error_forward", "reverse_kl"):
            np.testing.assert_allclose(np.asarray(getattr(got, field)),
                                       np.asarray(getattr(want, field)), rtol=1e-5, atol=1e-7)
    table = jnp.asarray(tree_logits(15, vocab=2, length=2), jnp.float32)
    seq = jax.jit(lambda t: audit.audit_sequence(t, 0 * t, configs=configs,
                                                 aggregation="token-mean"))(table)
    assert seq.gradients.shape == (3, 3, 2)
    np.testing.assert_allclose(
        np.asarray(seq.gradients),
        np.asarray(audit.audit_sequence(table, 0 * table, configs=configs,
                                        aggregation="token-mean").gradients),
        rtol=1e-5, atol=1e-7,
    )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_low_precision_inputs_compute_in_float32(dtype):
    theta = jnp.asarray(random_logits(15), dtype)
    ref = jnp.asarray(random_logits(16), dtype)
    out = audit.audit_categorical(theta, ref)
    assert out.gradients.dtype == jnp.float32
    exact = reverse_kl_grad_closed_form(np.asarray(theta, np.float64),
                                        np.asarray(ref, np.float64))
    np.testing.assert_allclose(by_name(out, KLConfig("k2")), exact, rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    theta, ref = jnp.zeros(V), jnp.zeros(V)
    with pytest.raises(ValueError, match="gradient"):
        audit.audit_categorical(theta, ref, configs=[KLConfig("k1", "reward", "straight_through")])
    with pytest.raises(ValueError, match="`estimator`"):
        audit.audit_categorical(theta, ref, configs=[KLConfig("k9")])
    with pytest.raises(ValueError, match="`placement`"):
        audit.audit_categorical(theta, ref, configs=[("k1", "critic", "natural")])
    with pytest.raises(TypeError, match="`configs`"):
        audit.audit_categorical(theta, ref, configs=["k1"])
    with pytest.raises(ValueError, match="at least one"):
        audit.audit_categorical(theta, ref, configs=[])
    with pytest.raises(ValueError, match="`ref_logits`"):
        audit.audit_categorical(theta, jnp.zeros(V + 1))
    with pytest.raises(ValueError, match="`old_logits`"):
        audit.audit_categorical(theta, ref, old_logits=jnp.zeros(V + 1))
    with pytest.raises(TypeError, match="`logits`"):
        audit.audit_categorical(jnp.zeros(V, jnp.int32), ref)
    with pytest.raises(ValueError, match="shape \\[V\\]"):
        audit.audit_categorical(jnp.zeros((2, V)), jnp.zeros((2, V)))
    table = jnp.zeros((7, 2))
    with pytest.raises(ValueError, match="`aggregation`"):
        audit.audit_sequence(table, table, aggregation="token-sum")
    with pytest.raises(ValueError, match="rows, which is not"):
        audit.audit_sequence(jnp.zeros((6, 2)), jnp.zeros((6, 2)))
    with pytest.raises(ValueError, match="`eos_token`"):
        audit.audit_sequence(table, table, eos_token=2)


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


# ---- 4. audit_categorical with a -inf logit ----


def _numpy_audit(logits, ref_logits, config):
    """Exact expected gradient of one configuration, from the definitions, in float64."""
    log_pi = logits - np.log(np.sum(np.exp(logits)))
    log_ref = ref_logits - np.log(np.sum(np.exp(ref_logits)))
    pi = np.exp(log_pi)
    k = {"k1": lambda l: -l, "k2": lambda l: l * l / 2, "k3": lambda l: np.expm1(l) - l,
         "abs": np.abs}[config.estimator]
    dk = {"k1": lambda l: -np.ones_like(l), "k2": lambda l: l, "k3": np.expm1,
          "abs": np.sign}[config.estimator]
    grad = np.zeros_like(logits)
    for y in np.flatnonzero(pi > 0):  # a token pi cannot sample has weight 0
        l = np.clip(log_ref[y] - log_pi[y], -20, 20)
        if config.placement == "reward":
            d_logp = k(l)  # sg(K) grad log pi; on-policy pi / pi_old has the same gradient
        elif config.gradient == "natural":
            d_logp = -dk(l)
        elif config.gradient == "straight_through":
            d_logp = -l
        else:
            d_logp = k(l) - dk(l)  # w = 1 on-policy
        grad += pi[y] * d_logp * (np.eye(len(logits))[y] - pi)
    return grad


@pytest.mark.parametrize("jit", [False, True])
def test_audit_categorical_with_a_minus_inf_logit_is_finite_and_exact(dtype, jit):
    logits = jnp.array([0.0, -jnp.inf, 1.0], dtype)
    out = _run(lambda a, b: audit.audit_categorical(a, b), jit, logits, jnp.zeros(3, dtype))
    assert np.isfinite(np.asarray(out.gradients)).all()
    tol = {jnp.bfloat16: 1e-6, jnp.float32: 1e-6, jnp.float64: 1e-14}[dtype]
    logits64, zeros = np.array([0.0, -np.inf, 1.0]), np.zeros(3)
    for config, got in zip(audit.CONFIGS, out.gradients, strict=True):
        np.testing.assert_allclose(np.asarray(got, np.float64),
                                   _numpy_audit(logits64, zeros, config), rtol=tol, atol=tol,
                                   err_msg=config.name)
    # k2 straight-through is the reverse-KL gradient pi (a - KL) = [-0.197, 0, 0.197].
    st = out.gradients[audit.CONFIGS.index(audit.KLConfig("k2", "loss", "straight_through"))]
    pi = np.exp(logits64 - np.log(np.sum(np.exp(logits64))))
    a = np.where(pi > 0, np.log(np.where(pi > 0, pi, 1)) + np.log(3), 0)
    np.testing.assert_allclose(np.asarray(st, np.float64), pi * (a - np.sum(pi * a)),
                               rtol=tol, atol=tol)


def test_check_configs_gives_every_configuration_the_audits_clamps():
    configs = audit.check_configs([("k1", "reward"), KLConfig("k3", value_clip=10.0)],
                                  value_clip=10.0)
    assert all(c.value_clip == 10.0 and c.log_ratio_clip == 20.0 for c in configs)
    with pytest.raises(ValueError, match="`configs\\[0\\].value_clip`"):
        audit.check_configs([KLConfig("k3", value_clip=5.0)], value_clip=10.0)
