"""The GRPO transformer experiment: the task, the sampler, the exact sequence KL
(against an enumeration of every sequence) and a tiny training run."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import grpo_transformer as gt
from experiments._framework import Experiment, Progress
from jaxkl import rl

# flax is in the `experiments` extra (scripts/setup.sh installs it); skip only where it
# is truly absent, e.g. a bare `pip install -e .`.
pytest.importorskip("flax")

TINY = {
    **gt.EXPERIMENT.quick,
    "vocab_size": 4, "response_length": 3, "d_model": 16, "num_heads": 2, "num_layers": 1,
    "num_seeds": 2, "steps": 40, "num_groups": 4, "group_size": 8, "final_window": 10,
}


def _enumerate(config):
    """Every response the sampler can produce: the ``V**T`` arrays whose tokens after the
    first EOS are all EOS (right padding), as ``[N, T]``."""
    arrays = np.array(list(itertools.product(range(config["vocab_size"]),
                                             repeat=config["response_length"])))
    after_eos = np.cumsum(arrays == gt.EOS, axis=1) - (arrays == gt.EOS) > 0
    canonical = ~np.any(after_eos & (arrays != gt.EOS), axis=1)
    return jnp.asarray(arrays[canonical], jnp.int32)


@functools.partial(jax.jit, static_argnums=0)  # one compiled call, not op-by-op dispatch
def _sequence_logprob(apply, params, prompts, responses):
    """``log pi(y)`` of whole responses (valid tokens only), their logits and mask."""
    logits = gt.response_logits(apply, params, prompts, responses)
    mask = rl.response_mask(responses, eos_token=gt.EOS)
    return jnp.where(mask, rl.token_logprobs(logits, responses), 0).sum(-1), logits, mask


@pytest.fixture(scope="module")
def two_models():
    """A reference and a different policy (another initialisation), float32 for precision."""
    config = {**TINY, "dtype": "float32"}
    apply, ref = gt.make_model(config, jax.random.key(1))
    _, policy = gt.make_model(config, jax.random.key(2))
    return config, apply, policy, ref


def test_summed_full_kl_equals_the_enumerated_sequence_kl(two_models):
    """E_{y ~ pi}[sum_t full_kl_t] = sum_y pi(y) log(pi(y) / ref(y)) (the chain rule), with
    both sides computed over every sequence of a tiny vocabulary."""
    config, apply, policy, ref = two_models
    responses = _enumerate(config)
    for prompt in ([1, 2], [3, 3]):
        prompts = jnp.tile(jnp.asarray(prompt, jnp.int32), (len(responses), 1))
        logp, logits, mask = _sequence_logprob(apply, policy, prompts, responses)
        ref_logp, ref_logits, _ = _sequence_logprob(apply, ref, prompts, responses)
        prob = np.exp(np.asarray(logp, np.float64))
        assert prob.sum() == pytest.approx(1.0, abs=1e-5)  # the enumeration is complete
        exact = float(np.sum(prob * np.asarray(logp - ref_logp, np.float64)))
        along = float(np.sum(prob * np.asarray(gt.sequence_kl(logits, ref_logits, mask))))
        assert exact > 0.05  # the two models differ: a real test, not 0 = 0
        assert along == pytest.approx(exact, rel=1e-4)


def test_sampled_estimate_is_unbiased_and_samples_follow_the_policy(two_models):
    """The experiment's estimator from its own sampler matches the enumeration within
    Monte Carlo error, and the sampled sequences' frequencies match pi(y)."""
    config, apply, policy, ref = two_models
    n = 8192
    prompts = jnp.tile(jnp.asarray([1, 2], jnp.int32), (n, 1))
    samples = gt.sample_responses(apply, policy, prompts, jax.random.key(0),
                                  config["response_length"])
    logits = gt.response_logits(apply, policy, prompts, samples)
    ref_logits = gt.response_logits(apply, ref, prompts, samples)
    estimates = np.asarray(gt.sequence_kl(logits, ref_logits,
                                          rl.response_mask(samples, eos_token=gt.EOS)))
    assert np.all(estimates >= 0)

    responses = _enumerate(config)
    every_prompt = jnp.tile(jnp.asarray([1, 2], jnp.int32), (len(responses), 1))
    logp, _, _ = _sequence_logprob(apply, policy, every_prompt, responses)
    ref_logp, _, _ = _sequence_logprob(apply, ref, every_prompt, responses)
    prob = np.exp(np.asarray(logp, np.float64))
    exact = float(np.sum(prob * np.asarray(logp - ref_logp, np.float64)))
    stderr = estimates.std() / np.sqrt(n)
    assert abs(estimates.mean() - exact) < 4 * stderr + 1e-6

    # Frequencies: every sample is one of the enumerated (canonical) sequences, and the
    # chi-square statistic over them is what sampling from pi gives.
    index = {tuple(r): i for i, r in enumerate(np.asarray(responses).tolist())}
    counts = np.bincount([index[tuple(s)] for s in np.asarray(samples).tolist()],
                         minlength=len(responses))
    expected = n * prob
    chi2 = np.sum((counts - expected) ** 2 / expected)
    dof = len(responses) - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)


def test_padding_mask_and_rewards():
    eos = gt.EOS
    responses = jnp.array([
        [2, 1, eos, eos],    # sum 3, terminated
        [3, eos, eos, eos],  # sum 3, terminated
        [eos, eos, eos, eos],  # empty: no digit
        [1, 1, 1, 2],        # never terminated
        [1, eos, eos, eos],  # sum 1
    ], jnp.int32)
    prompts = jnp.array([[1, 2]] * 5, jnp.int32)  # a + b = 3
    mask = rl.response_mask(responses, eos_token=eos)
    np.testing.assert_array_equal(mask.sum(-1), [3, 2, 1, 4, 2])  # the EOS counts
    np.testing.assert_array_equal(gt.rewards(prompts, responses, mask, modulus=2),
                                  [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(gt.rewards(prompts, responses, mask, modulus=3),
                                  [1, 1, 0, 0, 0])


def test_sampler_pads_with_eos_after_the_first_eos(two_models):
    config, apply, policy, _ = two_models
    prompts = gt.sample_prompts(jax.random.key(3), {**config, "num_groups": 64})
    samples = np.asarray(gt.sample_responses(apply, policy, prompts, jax.random.key(4),
                                             config["response_length"]))
    after_eos = np.cumsum(samples == gt.EOS, axis=1) - (samples == gt.EOS) > 0
    assert np.all(samples[after_eos] == gt.EOS)
    assert after_eos.any() and (~after_eos).any()
    assert samples.min() >= 0 and samples.max() < config["vocab_size"]
    # Groups share their prompt; prompts are digits.
    grouped = np.asarray(prompts).reshape(64, config["group_size"], 2)
    assert np.all(grouped == grouped[:, :1]) and np.asarray(prompts).min() >= 1


@pytest.fixture(scope="module")
def tiny_result():
    return gt.run(TINY, Progress("grpo_transformer", enabled=False))


def test_tiny_run_metrics_are_sound(tiny_result):
    runs = tiny_result["runs"]
    assert list(runs) == [label for label, *_ in gt.KL_CONFIGS]
    for label, run in runs.items():
        reward = np.asarray(run["reward"])
        kl = np.asarray(run["sequence_kl"])
        assert reward.shape == kl.shape == (TINY["num_seeds"], TINY["steps"]), label
        assert np.all((reward >= 0) & (reward <= 1)), label
        assert np.all(kl >= 0) and np.all(np.isfinite(kl)), label
        # Step 0 samples from the reference itself: the KL is 0 up to full_kl's float32
        # rounding (the bf16 logits of the two models are bitwise equal there).
        assert np.all(kl[:, 0] < 1e-6), label
        assert np.all(kl[:, -1] > kl[:, 0]), label
        assert np.all(np.asarray(run["response_length"]) >= 1), label
    fixed = np.asarray(runs["k3 loss (GRPO)"]["kl_coef"])
    assert np.all(fixed == np.float32(TINY["kl_coef"]))
    assert np.all(np.asarray(runs["no KL"]["kl_coef"]) == 0)
    adaptive = np.asarray(runs["k1 reward, adaptive β"]["kl_coef"])
    assert np.any(adaptive[:, -1] != adaptive[:, 0])  # the controller acted


def test_tiny_run_without_penalty_learns(tiny_result):
    """Without a KL penalty the policy moves away from the reference and its reward rises
    (averaged over seeds, first steps against last)."""
    run = tiny_result["runs"]["no KL"]
    reward = np.asarray(run["reward"]).mean(0)
    assert reward[-10:].mean() > reward[:10].mean() + 0.1
    assert np.asarray(run["sequence_kl"])[:, -1].min() > 0.01


def test_report_functions_accept_the_result(tiny_result, tmp_path):
    from PIL import Image

    assert isinstance(gt.EXPERIMENT, Experiment)
    table = gt.table(tiny_result)
    assert table.count("\n| ") == len(gt.KL_CONFIGS) + 1
    assert "nats" in gt.reading(tiny_result)
    gt.plot(tiny_result, tmp_path / "grpo_transformer.png")
    with Image.open(tmp_path / "grpo_transformer.png") as image:
        assert image.format == "PNG" and image.width > 800
