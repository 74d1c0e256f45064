"""Toy GRPO: which KL configuration buys the most reward per nat of reverse KL?

A tabular autoregressive policy (:mod:`jaxkl.rl.tabular`; it can represent every
distribution over its ``V**T`` sequences) starts at a random reference policy and is
trained with :func:`jaxkl.rl.grpo_loss` on a verifiable 0/1 reward: the tokens sum to a
target (picked so that the reference solves it with probability ~``target_probability``).
Each step samples ``num_groups x group_size`` sequences, normalises the rewards within
groups and makes ``inner_steps`` Adam updates on them (the later ones off-policy, as in
PPO/GRPO with several updates per batch). Every KL configuration runs all seeds in one
compiled call: a ``lax.scan`` over steps, ``vmap``-ed over seeds.

The exact expected reward and the exact sequence-level reverse and forward KL to the
reference are computed by enumeration after every step. For a 0/1 reward the least
reverse KL that reaches expected reward ``r`` is ``KL(Bern(r) || Bern(p))`` (``p`` the
reference's success probability), reached by ``pi* ~ ref * exp(R / beta)``: the
frontier drawn in the figure. A configuration that follows the reverse-KL gradient
should stay near it; one that follows another divergence's gradient pays more KL for the
same reward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._framework import Experiment, atomic_save_figure
from jaxkl import rl
from jaxkl.rl import tabular

# (label, estimator, placement, gradient); placement None = no KL penalty.
KL_CONFIGS = (
    ("no KL", None, None, None),
    ("k1 loss", "k1", "loss", "natural"),
    ("k2 loss", "k2", "loss", "natural"),
    ("k3 loss (GRPO)", "k3", "loss", "natural"),
    ("k3 loss straight-through", "k3", "loss", "straight_through"),
    ("k3 loss importance-weighted", "k3", "loss", "importance_weighted"),
    ("k1 reward", "k1", "reward", "natural"),
)


def _bernoulli_kl(r, p):
    r = np.clip(r, 1e-12, 1 - 1e-12)
    return r * np.log(r / p) + (1 - r) * np.log((1 - r) / (1 - p))


def _problem(config):
    v, t = config["vocab_size"], config["length"]
    ref = config["ref_scale"] * jax.random.normal(
        jax.random.key(config["ref_seed"]), (tabular.num_nodes(v, t), v)
    )
    tokens, _, weights = tabular.sequence_weights(ref)
    sums = np.asarray(tokens).sum(-1)
    mass = np.bincount(sums, weights=np.asarray(weights), minlength=(v - 1) * t + 1)
    target = int(np.argmin(np.abs(np.log(np.maximum(mass, 1e-30) / config["target_probability"]))))
    return ref, target, float(mass[target])


def make_train(config, kl_config, ref, target):
    """A jitted function: seed keys ``[S]`` -> per-step exact metrics ``[S, steps + 1]``."""
    _, estimator, placement, gradient = kl_config
    beta = config["kl_coef"]
    batch = config["num_groups"] * config["group_size"]
    all_tokens, _, _ = tabular.sequence_weights(ref)
    all_rewards = (all_tokens.sum(-1) == target).astype(jnp.float32)
    optimizer = optax.adam(config["learning_rate"])
    mask = jnp.ones((batch, config["length"]), bool)

    def metrics(theta):
        _, _, weights = tabular.sequence_weights(theta)
        return {
            "reward": weights @ all_rewards,
            "reverse_kl": tabular.sequence_kl(theta, ref),
            "forward_kl": tabular.sequence_kl(ref, theta),
        }

    def loss(theta, tokens, old_logp, ref_logp, advantages):
        logp = tabular.token_logprobs(theta, tokens)
        coef = beta if placement == "loss" else 0.0
        if placement == "reward":
            # k1 in the reward: every token's advantage pays the penalty still to come.
            penalty = rl.token_kl(old_logp, ref_logp, estimator=estimator)
            to_go = jnp.flip(jnp.cumsum(jnp.flip(penalty, -1), -1), -1)
            advantages = advantages[:, None] - beta * to_go
        value, _ = rl.grpo_loss(
            logp, old_logp, advantages, mask, ref_logprobs=ref_logp, kl_coef=coef,
            kl=rl.KLConfig(estimator or "k3", gradient=gradient or "natural"),
            clip_eps=config["clip_eps"],
        )
        return value

    def step(carry, key):
        theta, opt_state = carry
        tokens = tabular.sample(theta, key=key, num_samples=batch)
        rewards = (tokens.sum(-1) == target).astype(jnp.float32)
        advantages = rl.group_advantages(
            rewards.reshape(config["num_groups"], config["group_size"])
        ).reshape(batch)
        old_logp = jax.lax.stop_gradient(tabular.token_logprobs(theta, tokens))
        ref_logp = tabular.token_logprobs(ref, tokens)

        def update(inner, _):
            theta, opt_state = inner
            grads = jax.grad(loss)(theta, tokens, old_logp, ref_logp, advantages)
            updates, opt_state = optimizer.update(grads, opt_state, theta)
            return (optax.apply_updates(theta, updates), opt_state), None

        (theta, opt_state), _ = jax.lax.scan(
            update, (theta, opt_state), None, length=config["inner_steps"]
        )
        return (theta, opt_state), metrics(theta)

    def train(key):
        theta = ref
        _, history = jax.lax.scan(
            step, (theta, optimizer.init(theta)), jax.random.split(key, config["steps"])
        )
        start = metrics(theta)
        return {k: jnp.concatenate([start[k][None], v]) for k, v in history.items()}

    return jax.jit(jax.vmap(train))


def run(config, progress):
    ref, target, ref_success = _problem(config)
    seed_keys = jax.random.split(jax.random.key(config["seed"]), config["num_seeds"])
    every = config["record_every"]
    runs = {}
    for kl_config in progress.track(KL_CONFIGS, total=len(KL_CONFIGS), desc="configurations"):
        history = make_train(config, kl_config, ref, target)(seed_keys)
        runs[kl_config[0]] = {k: np.asarray(v)[:, ::every].tolist() for k, v in history.items()}
    rewards = np.linspace(ref_success, 0.999, 60)
    return {
        "target": target,
        "reference_success": ref_success,
        "record_every": every,
        "runs": runs,
        "frontier": {"reward": rewards.tolist(),
                     "reverse_kl": _bernoulli_kl(rewards, ref_success).tolist()},
    }


def _final(result, label):
    run = result["runs"][label]
    last = {k: np.asarray(v)[:, -1] for k, v in run.items()}
    excess = last["reverse_kl"] - _bernoulli_kl(last["reward"], result["reference_success"])
    return last, excess


def table(result) -> str:
    lines = [
        f"Target sum {result['target']}; the reference succeeds with probability "
        f"{result['reference_success']:.3f}. Final values, mean ± std over seeds; `excess KL` "
        "= reverse KL minus the least reverse KL that reaches the same expected reward.",
        "",
        "| configuration | expected reward | reverse KL | forward KL | excess KL |",
        "|---|---|---|---|---|",
    ]
    for label in result["runs"]:
        last, excess = _final(result, label)
        cells = [f"{np.mean(x):.3f} ± {np.std(x):.3f}" for x in (
            last["reward"], last["reverse_kl"], last["forward_kl"], excess)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reading(result) -> str:
    finals = {label: _final(result, label) for label in result["runs"]}
    excess = {label: float(np.mean(e)) for label, (_, e) in finals.items()}
    reward = {label: float(np.mean(last["reward"])) for label, (last, _) in finals.items()}
    rkl = {label: float(np.mean(last["reverse_kl"])) for label, (last, _) in finals.items()}
    penalised = [label for label in result["runs"] if label not in ("no KL", "k1 loss")]
    best = min(penalised, key=excess.get)
    worst = max(penalised, key=excess.get)
    return (
        f"Without a penalty the policy reaches reward {reward['no KL']:.3f} at reverse KL "
        f"{rkl['no KL']:.2f}; k1 in the loss, whose expected gradient is 0, ends at "
        f"{reward['k1 loss']:.3f} and {rkl['k1 loss']:.2f}, no better regularised. Among the "
        f"penalised runs, {best} stays closest to the optimal frontier (excess reverse KL "
        f"{excess[best]:.3f} at reward {reward[best]:.3f}) and {worst} farthest "
        f"({excess[worst]:.3f} at reward {reward[worst]:.3f}); k3 in the loss, the GRPO "
        f"default, ends at reward {reward['k3 loss (GRPO)']:.3f}, reverse KL "
        f"{rkl['k3 loss (GRPO)']:.2f} (excess {excess['k3 loss (GRPO)']:.3f}), k1 in the "
        f"reward at {reward['k1 reward']:.3f}, {rkl['k1 reward']:.2f} (excess "
        f"{excess['k1 reward']:.3f})."
    )


# How each configuration is drawn: colour, line style, marker. k2 in the loss and k3
# straight-through have the same gradient (their runs coincide exactly) and k3
# importance-weighted nearly so: distinct styles and markers keep all three visible.
STYLES = {
    "no KL": ("0.45", "-", None),
    "k1 loss": ("tab:olive", "--", None),
    "k2 loss": ("tab:blue", "-", "o"),
    "k3 loss straight-through": ("tab:cyan", (0, (4, 3)), "x"),
    "k3 loss importance-weighted": ("tab:purple", ":", "^"),
    "k3 loss (GRPO)": ("tab:red", "-", "s"),
    "k1 reward": ("tab:green", "-", "D"),
}


def _style(label, index):
    return STYLES.get(label, (f"C{index % 10}", "-", None))


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    runs = result["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
    ax = axes[0]
    frontier = result["frontier"]
    ax.plot(frontier["reverse_kl"], frontier["reward"], color="k", lw=5, alpha=0.18,
            solid_capstyle="round")
    handles = [Line2D([], [], color="k", lw=5, alpha=0.18,
                      label=r"optimal frontier: $\pi^* \propto \mathrm{ref}\cdot e^{R/\beta}$")]
    for index, (label, run) in enumerate(runs.items()):
        color, ls, marker = _style(label, index)
        kl = np.asarray(run["reverse_kl"]).mean(0)
        reward = np.asarray(run["reward"]).mean(0)
        every = max(1, len(kl) // 8)
        style = dict(color=color, ls=ls, lw=1.6, marker=marker, ms=5, mfc="none")
        ax.plot(kl, reward, markevery=(every // 2 + index % 3, every), **style)
        ax.plot(kl[-1], reward[-1], "o", color=color, ms=7, mec="k", mew=0.6)
        excess = float(np.mean(_final(result, label)[1]))
        same = [other for other in list(runs)[:index]
                if np.array_equal(runs[other]["reverse_kl"], run["reverse_kl"])]
        note = f"; identical to {same[0]}" if same else ""
        handles.append(Line2D([], [], label=f"{label} (excess KL {excess:#.2g} nats{note})",
                              **style))
    ax.set(xlabel="exact sequence KL(π‖ref) (nats)", ylabel="exact expected reward",
           title="Reward against reverse KL during training\n(mean over seeds; "
                 "big dot: end of training)")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.grid(True, alpha=0.3)

    ax = axes[1]
    for index, (label, run) in enumerate(runs.items()):
        color, ls, marker = _style(label, index)
        fwd = np.asarray(run["forward_kl"]).mean(0)
        rev = np.asarray(run["reverse_kl"]).mean(0)
        steps = np.arange(len(rev)) * result["record_every"]
        every = max(1, len(rev) // 8)
        marks = dict(marker=marker, ms=5, mfc="none", markevery=(every // 2 + index % 3, every))
        ax.plot(steps, rev, color=color, lw=1.6, **marks)
        ax.plot(steps, fwd, color=color, lw=1.2, ls=":", **marks)
    ax.set(xlabel="training step", ylabel="exact sequence KL (nats)",
           title="Reverse KL(π‖ref) (solid) and forward KL(ref‖π) (dotted)")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=[Line2D([], [], color="k", lw=1.6, label="reverse KL(π‖ref)"),
                       Line2D([], [], color="k", lw=1.2, ls=":", label="forward KL(ref‖π)")],
              loc="lower right", fontsize=9, title="colour: configuration (legend below)",
              title_fontsize=8)
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle("Toy GRPO: which KL configuration buys the most reward per nat of reverse KL?")
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    atomic_save_figure(fig, path)
    plt.close(fig)


EXPERIMENT = Experiment(
    name="toy_grpo",
    description="GRPO on a tabular policy: reward vs exact reverse KL per KL configuration.",
    quick={"seed": 0, "ref_seed": 1, "vocab_size": 4, "length": 4, "ref_scale": 1.0,
           "target_probability": 0.05, "num_seeds": 4, "steps": 400, "num_groups": 8,
           "group_size": 8, "inner_steps": 2, "learning_rate": 0.03, "kl_coef": 0.5,
           "clip_eps": 0.2, "record_every": 5},
    full={"seed": 0, "ref_seed": 1, "vocab_size": 4, "length": 5, "ref_scale": 1.0,
          "target_probability": 0.02, "num_seeds": 32, "steps": 3000, "num_groups": 16,
          "group_size": 16, "inner_steps": 4, "learning_rate": 0.01, "kl_coef": 0.5,
          "clip_eps": 0.2, "record_every": 10},
    run=run, plot=plot, table=table, reading=reading, order=70,
)
