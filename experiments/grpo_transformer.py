r"""GRPO on a small causal transformer: reward against the exact sequence-level reverse KL.

The worked example for RL users: every RL piece comes from :mod:`jaxkl.rl` alone
(:func:`~jaxkl.rl.token_logprobs`, :func:`~jaxkl.rl.response_mask`,
:func:`~jaxkl.rl.group_advantages`, :func:`~jaxkl.rl.grpo_loss`,
:func:`~jaxkl.rl.kl_penalty_to_go`, :func:`~jaxkl.rl.full_kl` and the KL controllers);
the model is a decoder-only transformer in flax nnx with float32 parameters and bf16
activations and logits, as language models are trained.

**Task** (verifiable, 0/1). The vocabulary is ``V`` tokens: ``EOS = 0`` and the digits
``1 .. V-1`` (token ``d`` has value ``d``). A prompt is two digits ``(a, b)``; the
response is sampled token by token for at most ``T`` positions and right-padded with
the EOS id after its first EOS (tokenizers with ``pad = eos`` do the same; only
:func:`~jaxkl.rl.response_mask` decides which tokens count). The reward is 1 when the
response is *terminated* (has an EOS), holds at least one digit before it, and its digits
sum to ``a + b`` modulo ``modulus``; 0 otherwise. A response that ignores the prompt
gets at most ``1/modulus``, so the policy has to read it.

**Training.** The reference is the randomly initialised model, frozen; the policy starts
equal to it. Each step draws ``num_groups`` prompts, samples ``group_size`` responses
for each (``jax.random.categorical`` in a ``lax.scan`` over positions, recomputing the
prefix each time), normalises the rewards within groups and makes ``inner_steps`` Adam
updates of :func:`jaxkl.rl.grpo_loss` on the batch (the later ones off-policy, clipped).
All KL configurations and seeds train in one compiled call (``lax.scan`` over steps,
``vmap`` over seeds and configurations).

**The exact sequence KL along the samples.** For a response ``y`` of prompt ``x`` with
valid positions ``t = 1 .. |y|`` (up to and including the EOS), the chain rule gives

.. math::
    KL(\pi(\cdot|x) \| \pi_{ref}(\cdot|x))
      = \mathbb{E}_{y \sim \pi}\Big[\sum_{t \le |y|}
        KL\big(\pi(\cdot|x, y_{<t}) \,\|\, \pi_{ref}(\cdot|x, y_{<t})\big)\Big],

and each inner term is exact over the vocabulary: :func:`jaxkl.rl.full_kl` of the two
models' logits at that prefix, masked by :func:`jaxkl.rl.response_mask`. So the masked
per-sequence sum of ``full_kl``, averaged over the sampled responses (and prompts), is an
unbiased estimate of the sequence-level reverse KL, exact per prefix and Monte Carlo only
over which prefixes are visited. It replaces each sampled token's log-ratio (the k1 terms
of ``log pi(y) - log pi_ref(y)``) by its exact expectation given the prefix, and is never
negative. At step 0 (policy = reference) it is 0 up to float32 rounding.
``tests/test_experiment_grpo_transformer.py`` checks it against an enumeration of every
sequence of a tiny vocabulary. The figure plots the expected reward (the batch mean of the
0/1 rewards, an unbiased estimate) against this KL.

**KL configurations** (:data:`KL_CONFIGS`): none; k1 in the reward (the penalty-to-go
added to the advantages, whose score-function gradient is the sequence-level
reverse-KL gradient); k3 in the loss (GRPO/verl ``low_var_kl``), whose expected gradient
is the *forward* KL's; k2 in the loss (the per-token reverse-KL gradient); and k1 in the
reward with Ziegler et al.'s adaptive coefficient steering the sequence KL to a target.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._framework import Experiment, atomic_save_figure
from jaxkl import rl

EOS = 0
PROMPT_LENGTH = 2
# The estimators a configuration may put in the loss (indexed by _config_arrays).
LOSS_ESTIMATORS = ("k3", "k2")

# (label, placement, estimator, adaptive coefficient); placement None = no KL penalty.
KL_CONFIGS = (
    ("no KL", None, None, False),
    ("k1 reward (penalty-to-go)", "reward", "k1", False),
    ("k3 loss (GRPO)", "loss", "k3", False),
    ("k2 loss", "loss", "k2", False),
    ("k1 reward, adaptive β", "reward", "k1", True),
)


# ---- the model ---------------------------------------------------------------------


def make_model(config, key):
    """A decoder-only transformer: learned positions, pre-norm blocks, bf16 activations.

    Parameters are float32 (``param_dtype``); every layer computes in ``config["dtype"]``
    (bfloat16 by default), so the logits are bf16, as in large-model training.
    """
    from flax import nnx

    dtype = jnp.dtype(config["dtype"])
    width, vocab = config["d_model"], config["vocab_size"]
    length = PROMPT_LENGTH + config["response_length"]

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.attention_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
            self.attention = nnx.MultiHeadAttention(
                num_heads=config["num_heads"], in_features=width, dtype=dtype,
                decode=False, keep_rngs=False, rngs=rngs)
            self.mlp_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
            self.mlp_in = nnx.Linear(width, 4 * width, dtype=dtype, rngs=rngs)
            self.mlp_out = nnx.Linear(4 * width, width, dtype=dtype, rngs=rngs)

        def __call__(self, x, mask):
            x = x + self.attention(self.attention_norm(x), mask=mask)
            return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.mlp_norm(x))))

    class Transformer(nnx.Module):
        def __init__(self, rngs):
            self.token_embedding = nnx.Embed(vocab, width, dtype=dtype, rngs=rngs)
            self.position_embedding = nnx.Embed(length, width, dtype=dtype, rngs=rngs)
            self.blocks = nnx.List([Block(rngs) for _ in range(config["num_layers"])])
            self.final_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
            self.unembedding = nnx.Linear(width, vocab, dtype=dtype, rngs=rngs)

        def __call__(self, tokens):
            """``[B, L]`` token ids -> ``[B, L, V]`` logits; position ``i`` predicts ``i + 1``."""
            positions = jnp.arange(tokens.shape[-1])[None]  # [1, L]: one row for the batch
            x = self.token_embedding(tokens) + self.position_embedding(positions)
            mask = nnx.make_causal_mask(tokens)
            for block in self.blocks:
                x = block(x, mask)
            return self.unembedding(self.final_norm(x))

    model = Transformer(nnx.Rngs(key))
    graphdef, params = nnx.split(model, nnx.Param)

    def apply(params, tokens):
        # flax's LayerNorm promotes bf16 with float32 implicitly, which JAX's strict dtype
        # promotion (the test suite runs under it) refuses; jaxkl itself needs no such
        # promotion.
        with jax.numpy_dtype_promotion("standard"):
            return nnx.merge(graphdef, params)(tokens)

    return apply, params


# ---- task, sampling, the sequence KL -----------------------------------------------


def sample_prompts(key, config):
    """``[num_groups * group_size, 2]`` digit pairs, each group sharing one prompt."""
    prompts = jax.random.randint(key, (config["num_groups"], PROMPT_LENGTH), 1,
                                 config["vocab_size"])
    return jnp.repeat(prompts, config["group_size"], axis=0)


def sample_responses(apply, params, prompts, key, response_length):
    """Responses ``[B, T]`` sampled from the model, right-padded with EOS after the first.

    Position ``t`` recomputes the whole prefix (cheap at this size; no KV cache).
    """
    batch = prompts.shape[0]
    tokens = jnp.concatenate(
        [prompts, jnp.full((batch, response_length), EOS, prompts.dtype)], axis=1)

    def step(carry, t):
        tokens, finished = carry
        logits = apply(params, tokens)[:, PROMPT_LENGTH - 1 + t]
        sampled = jax.random.categorical(jax.random.fold_in(key, t),
                                         logits.astype(jnp.float32))
        sampled = jnp.where(finished, EOS, sampled).astype(tokens.dtype)
        tokens = tokens.at[:, PROMPT_LENGTH + t].set(sampled)
        return (tokens, finished | (sampled == EOS)), None

    (tokens, _), _ = jax.lax.scan(step, (tokens, jnp.zeros(batch, bool)),
                                  jnp.arange(response_length))
    return tokens[:, PROMPT_LENGTH:]


def response_logits(apply, params, prompts, responses):
    """``[B, T, V]``: the logits that predict each response token (the prompt and the
    response before it as context)."""
    tokens = jnp.concatenate([prompts, responses], axis=1)
    return apply(params, tokens)[:, PROMPT_LENGTH - 1:-1]


def rewards(prompts, responses, mask, modulus):
    """1.0 when the response ends with EOS, has a digit and its digits sum to ``a + b``
    modulo ``modulus``; else 0.0."""
    digits = jnp.where(mask & (responses != EOS), responses, 0)
    terminated = jnp.any(responses == EOS, axis=-1)
    nonempty = responses[:, 0] != EOS
    correct = digits.sum(-1) % modulus == prompts.sum(-1) % modulus
    return (terminated & nonempty & correct).astype(jnp.float32)


def sequence_kl(logits, ref_logits, mask):
    """``sum_t mask_t KL(pi(.|prefix_t) || ref(.|prefix_t))`` per response ``[B]``: exact
    over the vocabulary at each visited prefix; its mean over responses sampled from
    ``pi`` is an unbiased estimate of the sequence-level KL(pi || ref) (module docstring)."""
    return rl.full_kl(logits, ref_logits, mask=mask).sum(-1)


# ---- training ----------------------------------------------------------------------


def _config_arrays(config):
    """The KL configurations as arrays, one row per configuration.

    All configurations and seeds train in one compiled program (``vmap`` over both):
    one program per configuration took 18-22 s each to compile on a 2-core CPU, twice
    its 9-12 s of training at the quick size, and one program for all compiles about as
    fast as one of them. A configuration is
    therefore data: the coefficient of the KL in the reward, the coefficient of the KL in
    the loss, which loss estimator, and whether the coefficient is adaptive.
    """
    beta = config["kl_coef"]
    return {
        "reward_coef": jnp.array([beta if p == "reward" else 0.0 for _, p, _, _ in KL_CONFIGS]),
        "loss_coef": jnp.array([beta if p == "loss" else 0.0 for _, p, _, _ in KL_CONFIGS]),
        "loss_estimator": jnp.array([LOSS_ESTIMATORS.index(e) if p == "loss" else 0
                                     for _, p, e, _ in KL_CONFIGS]),
        "adaptive": jnp.array([a for _, _, _, a in KL_CONFIGS]),
    }


def make_train(config, apply, ref_params):
    """A compiled function: seed keys ``[S]`` -> per-step metrics ``[C, S, steps]`` for the
    ``C`` configurations of :data:`KL_CONFIGS`.

    Each step's metrics describe the policy that sampled that step's batch (before its
    updates), so step 0 is the reference itself.
    """
    group = config["group_size"]
    optimizer = optax.adam(config["learning_rate"])
    # The adaptive controller runs in every configuration; only those flagged adaptive
    # use its coefficient (the others keep the configured one).
    adaptive = rl.adaptive_kl_controller(config["kl_coef"], target=config["kl_target"],
                                         horizon=config["kl_horizon"])

    def loss_fn(params, batch, kl):
        logits = response_logits(apply, params, batch["prompts"], batch["responses"])
        logp = rl.token_logprobs(logits, batch["responses"])

        def penalised(kl_config):
            return rl.grpo_loss(
                logp, batch["old_logp"], batch["advantages"], batch["mask"],
                ref_logprobs=batch["ref_logp"], kl_coef=kl["loss_coef"] * kl["coef_scale"],
                kl=kl_config, clip_eps=config["clip_eps"])

        # One grpo_loss per loss estimator; the configuration selects one (under vmap
        # both are computed, which is cheap next to the model).
        branches = [functools.partial(penalised, rl.KLConfig(name)) for name in LOSS_ESTIMATORS]
        return jax.lax.switch(kl["loss_estimator"], branches)

    def step(carry, key, kl):
        params, opt_state, controller_state = carry
        prompt_key, sample_key = jax.random.split(key)
        prompts = sample_prompts(prompt_key, config)
        responses = sample_responses(apply, params, prompts, sample_key,
                                     config["response_length"])
        mask = rl.response_mask(responses, eos_token=EOS)
        reward = rewards(prompts, responses, mask, config["modulus"])
        # The policy's and the reference's logits in one batched call: both forward
        # passes are then the same computation, so equal parameters give bitwise equal
        # bf16 logits (two separate calls were fused differently by XLA and differed by
        # bf16 rounding: ~2e-5 nats of KL at step 0). What remains at step 0 is full_kl's
        # float32 rounding, ~1e-7 nats per token.
        both = jax.tree.map(lambda p, r: jnp.stack([p, r]), params, ref_params)
        logits, ref_logits = jax.vmap(response_logits, in_axes=(None, 0, None, None))(
            apply, both, prompts, responses)
        old_logp = rl.token_logprobs(logits, responses)
        ref_logp = rl.token_logprobs(ref_logits, responses)
        seq_kl = sequence_kl(logits, ref_logits, mask)

        # The controller's coefficient scales the configured one (1 when fixed).
        coef_scale = jnp.where(kl["adaptive"], controller_state.coef / config["kl_coef"], 1.0)
        # k1 in the reward: each token's advantage also pays the KL still to come,
        # computed once from the sampling policy, as PPO/RLHF pipelines do.
        advantages = rl.group_advantages(reward, group_size=group)[:, None] + (
            rl.kl_penalty_to_go(old_logp, ref_logp, mask,
                                kl_coef=kl["reward_coef"] * coef_scale))
        batch = {"prompts": prompts, "responses": responses, "mask": mask,
                 "old_logp": old_logp, "ref_logp": ref_logp, "advantages": advantages}
        kl = {**kl, "coef_scale": coef_scale}

        def update(inner, _):
            params, opt_state = inner
            grads, _ = jax.grad(loss_fn, has_aux=True)(params, batch, kl)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(
            update, (params, opt_state), None, length=config["inner_steps"])
        # The adaptive controller sees what a user sees: this batch's mean sequence KL.
        controller_state = adaptive.update(controller_state, seq_kl.mean())
        metrics = {
            "reward": reward.mean(),
            "sequence_kl": seq_kl.mean(),
            "response_length": mask.sum(-1).mean(),
            "kl_coef": (kl["reward_coef"] + kl["loss_coef"]) * coef_scale,
        }
        return (params, opt_state, controller_state), metrics

    def train(key, kl):
        carry = (ref_params, optimizer.init(ref_params), adaptive.init())
        _, history = jax.lax.scan(lambda c, k: step(c, k, kl), carry,
                                  jax.random.split(key, config["steps"]))
        return history

    @jax.jit
    def train_all(seed_keys):
        over_seeds = jax.vmap(train, in_axes=(0, None))
        return jax.vmap(over_seeds, in_axes=(None, 0))(seed_keys, _config_arrays(config))

    def train_all_standard_promotion(seed_keys):
        # optax's Adam and flax's layers (see make_model) promote dtypes implicitly, which
        # the test suite's strict promotion refuses; the setting is read while tracing
        # and lowering, so it covers the whole call.
        with jax.numpy_dtype_promotion("standard"):
            return train_all(seed_keys)

    return train_all_standard_promotion


def run(config, progress):
    del progress  # one compiled call; nothing to track
    apply, ref_params = make_model(config, jax.random.key(config["ref_seed"]))
    seed_keys = jax.random.split(jax.random.key(config["seed"]), config["num_seeds"])
    history = make_train(config, apply, ref_params)(seed_keys)
    runs = {label: {k: np.asarray(v[i], np.float64).tolist() for k, v in history.items()}
            for i, (label, *_) in enumerate(KL_CONFIGS)}
    return {"runs": runs, "final_window": config["final_window"],
            "kl_target": config["kl_target"], "response_length": config["response_length"]}


# ---- reporting ---------------------------------------------------------------------


def _smooth(x, window):
    """Trailing moving average along the last axis (shorter windows at the start), so
    that step 0 keeps its own value (the KL of the reference to itself)."""
    x = np.asarray(x, np.float64)
    cumsum = np.cumsum(x, axis=-1)
    counts = np.minimum(np.arange(1, x.shape[-1] + 1), window)
    shifted = np.concatenate([np.zeros(x.shape[:-1] + (window,)), cumsum], axis=-1)
    return (cumsum - shifted[..., : x.shape[-1]]) / counts


def _final(run, key, window):
    """Per seed: the mean of ``key`` over the last ``window`` steps."""
    return np.asarray(run[key])[:, -window:].mean(-1)


def _reference_reward(result):
    """The reference's success rate: step 0 of every run samples from the reference."""
    return float(np.mean([np.asarray(run["reward"])[:, 0] for run in result["runs"].values()]))


def least_kl(reward, reference_reward):
    """``KL(Bern(r) || Bern(p))``: no policy reaches expected reward ``r`` with a smaller
    sequence KL to a reference of success rate ``p``.

    Per prompt, the 0/1 reward is a function of the sequence, so by the data-processing
    inequality the sequence KL is at least the KL between the two Bernoulli laws of the
    reward; averaged over prompts, joint convexity of KL bounds it again by the Bernoulli
    KL of the averages (``r``, ``p``). Where ``r <= p`` the bound is 0.
    """
    r = np.clip(np.asarray(reward, np.float64), 1e-12, 1 - 1e-12)
    p = np.clip(reference_reward, 1e-12, 1 - 1e-12)
    kl = r * np.log(r / p) + (1 - r) * np.log((1 - r) / (1 - p))
    return np.where(r > p, kl, 0.0)


def table(result) -> str:
    window = result["final_window"]
    p = _reference_reward(result)
    lines = [
        f"The reference solves {p:.3f} of the prompts (step 0 of every run). Final values: "
        f"means over the last {window} steps' batches, then mean ± std over seeds. "
        "`sequence KL`: the exact sequence-level KL(π‖ref) along the sampled responses "
        "(full-vocabulary KL per prefix, summed over each response); `least KL`: "
        "KL(Bern(reward)‖Bern(reference)), below which no policy reaches that reward; "
        "`β`: the final KL coefficient.",
        "",
        "| configuration | reward | sequence KL (nats) | least KL | response length | β |",
        "|---|---|---|---|---|---|",
    ]
    for label, run in result["runs"].items():
        reward = _final(run, "reward", window)
        cells = [f"{np.mean(x):.3f} ± {np.std(x):.3f}" for x in (
            reward, _final(run, "sequence_kl", window))]
        cells.append(f"{float(least_kl(np.mean(reward), p)):.2f}")
        cells.append(f"{np.mean(_final(run, 'response_length', window)):.2f}")
        cells.append(f"{np.mean(np.asarray(run['kl_coef'])[:, -1]):.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reading(result) -> str:
    window = result["final_window"]
    runs = result["runs"]
    reward = {k: float(np.mean(_final(r, "reward", window))) for k, r in runs.items()}
    kl = {k: float(np.mean(_final(r, "sequence_kl", window))) for k, r in runs.items()}
    length = {k: float(np.mean(_final(r, "response_length", window))) for k, r in runs.items()}
    p = _reference_reward(result)
    penalised = [k for k in runs if k != "no KL"]
    best = max(penalised, key=lambda k: reward[k])
    loss_placed = [label for label, placement, *_ in KL_CONFIGS if placement == "loss"]
    adaptive = next(label for label, *_, flag in KL_CONFIGS if flag)
    return (
        f"The reference solves {p:.2f} of the prompts. Without a penalty GRPO reaches "
        f"reward {reward['no KL']:.2f} at a sequence KL of {kl['no KL']:.2f} nats (the "
        f"least KL for that reward is {float(least_kl(reward['no KL'], p)):.2f}). Of the "
        f"penalised runs {best} reaches the most reward, {reward[best]:.2f} at "
        f"{kl[best]:.2f} nats. With the KL in the loss ("
        + ", ".join(f"{k}: reward {reward[k]:.2f}, {kl[k]:.2f} nats" for k in loss_placed)
        + ") the responses grow to "
        + " and ".join(f"{length[k]:.1f}" for k in loss_placed)
        + f" tokens of at most {result.get('response_length', 'T')}, against "
        f"{length['k1 reward (penalty-to-go)']:.1f} with k1 in the reward, and their reward "
        "stays near where learning to end a response put it. One reading: a per-token "
        "loss pulls each visited next-token law, EOS included, toward the reference, which "
        "rarely ends a response, and never charges a response for the KL of its extra "
        "tokens; the penalty-to-go does (the prefix term of the sequence-level gradient). "
        "The adaptive coefficient ends at β = "
        f"{float(np.mean(np.asarray(runs[adaptive]['kl_coef'])[:, -1])):.2f} with the KL at "
        f"{kl[adaptive]:.2f} nats (target {result['kl_target']}) and reward "
        f"{reward[adaptive]:.2f}. The KL is exact per visited prefix, so its curves are "
        "smooth, and 0 (to rounding) at step 0."
    )


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = result["final_window"]
    runs = result["runs"]
    colors = plt.cm.tab10(np.arange(len(runs)))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for color, (label, run) in zip(colors, runs.items(), strict=True):
        reward = _smooth(run["reward"], window)  # [seeds, steps]
        kl = _smooth(run["sequence_kl"], window)
        steps = np.arange(reward.shape[-1])
        # Reward against KL: each seed thin, the mean over seeds bold, the end marked.
        ax = axes[0]
        for seed_kl, seed_reward in zip(kl, reward, strict=True):
            ax.plot(seed_kl, seed_reward, color=color, lw=0.6, alpha=0.35)
        ax.plot(kl.mean(0), reward.mean(0), color=color, lw=2, label=label)
        ax.plot(kl.mean(0)[-1], reward.mean(0)[-1], "o", color=color, ms=7)
        # Against steps: the mean over seeds and the spread (min to max) of the seeds.
        for ax, values in ((axes[1], reward), (axes[2], kl)):
            ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=0.15,
                            lw=0)
            ax.plot(steps, values.mean(0), color=color, lw=1.8)
    reward_grid = np.linspace(0, 1, 201)
    axes[0].plot(least_kl(reward_grid, _reference_reward(result)), reward_grid, color="k",
                 lw=2.5, alpha=0.3, label="least KL for a reward (lower bound)")
    axes[0].set(xlabel="exact sequence KL(π‖ref) along the samples (nats)",
                ylabel="reward (fraction solved)",
                title="Reward against sequence KL\n(bold: mean over seeds; thin: each seed)")
    axes[1].set(xlabel="training step", ylabel="reward (fraction solved)",
                title="Reward during training\n(mean over seeds; band: min to max)")
    axes[2].set(xlabel="training step", ylabel="exact sequence KL(π‖ref) (nats)",
                title="Sequence KL during training\n(mean over seeds; band: min to max)")
    for ax in axes:
        ax.grid(alpha=0.3)
    adaptive = next(i for i, (*_, flag) in enumerate(KL_CONFIGS) if flag)
    axes[2].axhline(result["kl_target"], color=colors[adaptive], ls="--", lw=1,
                    label="adaptive β's KL target")
    axes[2].legend(loc="upper left", fontsize=8, frameon=False)
    axes[0].set_xlim(left=0)
    axes[2].set_ylim(bottom=0)
    # One legend below the panels, where it covers no data.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(f"GRPO on a small transformer: {len(runs)} KL configurations, "
                 f"{np.asarray(next(iter(runs.values()))['reward']).shape[0]} seeds "
                 f"(curves smoothed over {window} steps)", y=1.02)
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


EXPERIMENT = Experiment(
    name="grpo_transformer",
    description="GRPO on a small flax transformer with jaxkl.rl: reward vs exact sequence KL.",
    quick={"seed": 0, "ref_seed": 1, "vocab_size": 16, "response_length": 6, "modulus": 2,
           "d_model": 32, "num_heads": 2, "num_layers": 2, "dtype": "bfloat16",
           "num_seeds": 3, "steps": 200, "num_groups": 8, "group_size": 8, "inner_steps": 2,
           "learning_rate": 0.002, "clip_eps": 0.2, "kl_coef": 0.1, "kl_target": 2.0,
           "kl_horizon": 10, "final_window": 20},
    full={"seed": 0, "ref_seed": 1, "vocab_size": 64, "response_length": 8, "modulus": 2,
          "d_model": 64, "num_heads": 4, "num_layers": 2, "dtype": "bfloat16",
          "num_seeds": 8, "steps": 1000, "num_groups": 16, "group_size": 8, "inner_steps": 2,
          "learning_rate": 0.001, "clip_eps": 0.2, "kl_coef": 0.1, "kl_target": 2.0,
          "kl_horizon": 10, "final_window": 50},
    run=run, plot=plot, table=table, reading=reading, order=75,
)
