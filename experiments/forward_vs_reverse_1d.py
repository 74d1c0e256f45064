"""Forward vs reverse KL fits of a Gaussian to a two-component mixture (the note's figure).

p = 0.5 N(0, 1) + 0.5 N(mu2, 1) for mu2 in {0, 2.5, 5, 7.5, 10}; q = N(m, s^2).

- forward fit: minimise KL(p||q) by maximum likelihood on fresh samples of p (its optimum
  is moment matching: m = mu2/2, s^2 = 1 + mu2^2/4, shown for comparison);
- reverse fit: minimise KL(q||p) with reparameterisation gradients, best of several
  starts spread over [-1, mu2 + 1] (it has one local optimum per well separated mode).

All fits for all mu2 run as one compiled call (vmap over the targets). The KLs of the fits,
both directions, come from ``jaxkl.reference.reference_kl`` (quadrature).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments._framework import Experiment, atomic_save_figure
from jaxkl import families
from jaxkl.fitting import FitOptions, fit, fit_multistart
from jaxkl.mixtures import gaussian_mixture_1d
from jaxkl.reference import reference_kl

FAMILY = families.gaussian()


def target(mu2):
    return gaussian_mixture_1d(jnp.stack([jnp.zeros_like(mu2), mu2]), jnp.ones(2))


def fit_both(mu2, key, *, num_starts, num_steps, num_samples):
    forward_key, reverse_key = jax.random.split(key)
    p = target(mu2)
    forward = fit(p, FAMILY, divergence="forward_kl", key=forward_key, num_steps=num_steps,
                  num_samples=num_samples)
    locs = jnp.linspace(-1.0, 1.0, num_starts) * (mu2 / 2 + 1) + mu2 / 2
    inits = jax.vmap(lambda m: FAMILY.encode(loc=m, scale=1.0))(locs)
    options = FitOptions(divergence="reverse_kl", num_steps=num_steps,
                         num_samples=num_samples)
    reverse = fit_multistart(p, FAMILY, key=reverse_key, num_starts=num_starts,
                             options=options, init_params=inits)
    return forward, reverse.best


def run(config, progress):
    mu2 = np.asarray(config["mu2"], np.float32)
    keys = jax.random.split(jax.random.key(config["seed"]), len(mu2))
    one = functools.partial(fit_both, num_starts=config["num_starts"],
                            num_steps=config["num_steps"], num_samples=config["num_samples"])
    forward, reverse = jax.jit(jax.vmap(one))(jnp.asarray(mu2), keys)
    rows = []
    for i in progress.track(range(len(mu2)), total=len(mu2), desc="reference KL"):
        p = target(jnp.float32(mu2[i]))
        q_fwd = FAMILY.distribution(jax.tree.map(lambda x, i=i: x[i], forward.params))
        q_rev = FAMILY.distribution(jax.tree.map(lambda x, i=i: x[i], reverse.params))
        rows.append({
            "mu2": float(mu2[i]),
            "forward_mean": float(q_fwd.mean()), "forward_std": float(q_fwd.stddev()),
            "reverse_mean": float(q_rev.mean()), "reverse_std": float(q_rev.stddev()),
            "moment_mean": float(mu2[i]) / 2,
            "moment_std": float(np.sqrt(1 + mu2[i] ** 2 / 4)),
            "forward_kl_p_q": reference_kl(p, q_fwd).value,
            "forward_kl_q_p": reference_kl(q_fwd, p).value,
            "reverse_kl_q_p": reference_kl(q_rev, p).value,
            "reverse_kl_p_q": reference_kl(p, q_rev).value,
            "nonfinite_steps": int(forward.num_nonfinite_steps[i])
            + int(reverse.num_nonfinite_steps[i]),
        })
    return {"rows": rows}


def _normal_pdf(x, m, s):
    return np.exp(-0.5 * ((x - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.6), sharey=True)
    for ax, row in zip(np.atleast_1d(axes), rows, strict=True):
        mu2 = row["mu2"]
        x = np.linspace(-4.0, mu2 + 4.0, 600)
        p = 0.5 * _normal_pdf(x, 0.0, 1.0) + 0.5 * _normal_pdf(x, mu2, 1.0)
        ax.fill_between(x, p, color="0.85", label="p (mixture)")
        ax.plot(x, p, color="0.4", lw=1)
        ax.plot(x, _normal_pdf(x, row["forward_mean"], row["forward_std"]), color="C0",
                label=f"forward KL(p‖q) fit\nKL(p‖q) = {row['forward_kl_p_q']:.3f} nats")
        ax.plot(x, _normal_pdf(x, row["reverse_mean"], row["reverse_std"]), color="C3",
                ls="--", label=f"reverse KL(q‖p) fit\nKL(q‖p) = {row['reverse_kl_q_p']:.3f} nats")
        ax.set(title=f"mu2 = {mu2:g}", xlabel="x", ylim=(0, 0.62))
        ax.legend(fontsize=7, loc="upper center", ncol=1, framealpha=0.9)
    np.atleast_1d(axes)[0].set_ylabel("density")
    fig.suptitle("p = 0.5 N(0,1) + 0.5 N(mu2,1): forward KL covers the mass, reverse KL "
                 "seeks a mode", y=1.02)
    atomic_save_figure(fig, path)
    plt.close(fig)


def table(result) -> str:
    lines = ["| mu2 | forward fit (mean, std) | moment matching | KL(p‖q_fwd) | "
             "reverse fit (mean, std) | KL(q_rev‖p) | KL(p‖q_rev) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['mu2']:g} | {r['forward_mean']:.3f}, {r['forward_std']:.3f} | "
            f"{r['moment_mean']:.3f}, {r['moment_std']:.3f} | {r['forward_kl_p_q']:.4f} | "
            f"{r['reverse_mean']:.3f}, {r['reverse_std']:.3f} | {r['reverse_kl_q_p']:.4f} | "
            f"{r['reverse_kl_p_q']:.3g} |")
    return "\n".join(lines)


def reading(result) -> str:
    rows = result["rows"]
    worst = max(max(abs(r["forward_mean"] - r["moment_mean"]) / r["moment_std"],
                    abs(r["forward_std"] / r["moment_std"] - 1)) for r in rows)
    last = rows[-1]
    return (
        "The forward fit matches the mixture's moments (largest deviation "
        f"{100 * worst:.2f}% of the std), so as the modes separate it spreads over both and "
        f"puts its mass in the empty middle (at mu2 = {last['mu2']:g}: std "
        f"{last['forward_std']:.2f}, KL(p‖q) = {last['forward_kl_p_q']:.3f}). The reverse "
        "fit covers both modes only while they overlap; once they separate it locks onto "
        f"one (at mu2 = {last['mu2']:g}: mean {last['reverse_mean']:.2f}, std "
        f"{last['reverse_std']:.2f}, KL(q‖p) = {last['reverse_kl_q_p']:.3f} ~ log 2), "
        f"ignoring the other, which makes its forward KL huge ({last['reverse_kl_p_q']:.3g})."
    )


EXPERIMENT = Experiment(
    name="forward_vs_reverse_1d",
    description="Forward vs reverse KL Gaussian fits to 0.5 N(0,1) + 0.5 N(mu2,1).",
    quick={"seed": 0, "mu2": [0.0, 2.5, 5.0, 7.5, 10.0], "num_starts": 8, "num_steps": 4000,
           "num_samples": 256},
    full={"seed": 0, "mu2": [0.0, 2.5, 5.0, 7.5, 10.0], "num_starts": 64, "num_steps": 10000,
          "num_samples": 1024},
    run=run, plot=plot, table=table, reading=reading, order=50,
)
