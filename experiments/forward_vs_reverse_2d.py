"""Forward and reverse KL fits of a full-covariance Gaussian to a 2-D two-mode mixture.

The 2-D version of Bishop's PRML Fig. 10.3: p is a mixture of two elongated Gaussians,
q = N(m, L L^T) with a full Cholesky factor. The forward fit (maximum likelihood on samples
of p, i.e. moment matching) spreads over both modes; reverse-KL fits from several starts
(one vmapped call) end in one of two distinct local optima, one per mode. For each mode
the best start that ended there (lowest many-sample KL estimate) is shown; the KLs in the
titles come from ``jaxkl.reference.reference_kl`` (2-D quadrature).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments._framework import Experiment, atomic_save_figure
from jaxkl import families
from jaxkl.fitting import FitOptions, fit, fit_multistart
from jaxkl.mixtures import gaussian_mixture_full
from jaxkl.reference import reference_kl

FAMILY = families.full_covariance_gaussian(2)
WEIGHTS = [0.5, 0.5]
MEANS = [[-2.5, -1.5], [2.5, 1.5]]
COVARIANCES = [[[1.0, -0.5], [-0.5, 0.6]], [[0.5, 0.15], [0.15, 1.2]]]


def target():
    return gaussian_mixture_full(jnp.asarray(MEANS), jnp.asarray(COVARIANCES),
                                 weights=jnp.asarray(WEIGHTS))


def run(config, progress):
    p = target()
    forward_key, reverse_key = jax.random.split(jax.random.key(config["seed"]))
    forward = jax.jit(lambda k: fit(p, FAMILY, divergence="forward_kl", key=k,
                                    num_steps=config["num_steps"],
                                    num_samples=config["num_samples"]))(forward_key)
    # Starts along the segment between the modes (and beyond), with unit covariance.
    t = jnp.linspace(-1.3, 1.3, config["num_starts"])
    locs = t[:, None] * jnp.asarray(MEANS[1])[None, :]
    inits = jax.vmap(lambda m: FAMILY.encode(loc=m, scale_tril=jnp.eye(2)))(locs)
    options = FitOptions(divergence="reverse_kl", num_steps=config["num_steps"],
                         num_samples=config["num_samples"])
    reverse = jax.jit(lambda k: fit_multistart(
        p, FAMILY, key=k, num_starts=config["num_starts"], options=options,
        init_params=inits))(reverse_key)
    start_means = np.asarray(reverse.starts.q.mean())
    scores = np.asarray(reverse.scores)
    distances = np.linalg.norm(start_means[:, None, :] - np.asarray(MEANS)[None], axis=-1)
    nearest = distances.argmin(axis=1)
    fits = [("forward", forward.params)]
    for mode in (0, 1):
        candidates = np.flatnonzero(nearest == mode)
        if candidates.size:
            best = int(candidates[np.argmin(scores[candidates])])
            fits.append((f"reverse (mode {mode + 1})",
                         jax.tree.map(lambda x, b=best: x[b], reverse.starts.params)))
    rows = []
    for name, params in progress.track(fits, total=len(fits), desc="reference KL"):
        q = FAMILY.distribution(params)
        rows.append({"fit": name, "mean": np.asarray(q.mean()).tolist(),
                     "covariance": np.asarray(q.covariance()).tolist(),
                     "kl_q_p": reference_kl(q, p).value, "kl_p_q": reference_kl(p, q).value})
    weights, means, covs = np.asarray(WEIGHTS), np.asarray(MEANS), np.asarray(COVARIANCES)
    moment_mean = weights @ means
    centred = means - moment_mean
    moment_cov = np.einsum("k,kij->ij", weights, covs + centred[:, :, None] * centred[:, None])
    return {"rows": rows, "moment_mean": moment_mean.tolist(),
            "moment_covariance": moment_cov.tolist(),
            "start_means": start_means.tolist(), "scores": scores.tolist(),
            "num_nonfinite_fits": int(np.sum(~np.asarray(reverse.starts.finite)))
            + int(not bool(forward.finite))}


def _gaussian_density(points, mean, cov):
    cov = np.asarray(cov)
    diff = points - np.asarray(mean)
    solved = np.linalg.solve(cov, diff.T).T
    return np.exp(-0.5 * np.sum(diff * solved, axis=-1)) / (2 * np.pi * np.sqrt(
        np.linalg.det(cov)))


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(-6, 6, 241)
    grid = np.stack(np.meshgrid(xs, xs), axis=-1).reshape(-1, 2)
    p = sum(w * _gaussian_density(grid, m, c) for w, m, c in zip(WEIGHTS, MEANS, COVARIANCES,
                                                                   strict=True))
    rows = result["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.4 * len(rows), 4.4))
    for ax, row in zip(np.atleast_1d(axes), rows, strict=True):
        q = _gaussian_density(grid, row["mean"], row["covariance"])
        ax.contour(xs, xs, p.reshape(len(xs), len(xs)), levels=5, colors="C0",
                   linewidths=1.0)
        ax.contour(xs, xs, q.reshape(len(xs), len(xs)), levels=5, colors="C3",
                   linewidths=1.2)
        ax.plot([], [], color="C0", label="p (mixture)")
        ax.plot([], [], color="C3", label="q (fit)")
        direction = "KL(p‖q)" if row["fit"] == "forward" else "KL(q‖p)"
        value = row["kl_p_q"] if row["fit"] == "forward" else row["kl_q_p"]
        ax.set(title=f"{row['fit']} fit: {direction} = {value:.3f} nats", xlabel="x1",
               ylabel="x2", aspect="equal")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Full-covariance Gaussian q fitted to a two-mode p (cf. Bishop PRML Fig. 10.3)")
    atomic_save_figure(fig, path)
    plt.close(fig)


def table(result) -> str:
    lines = ["| fit | mean | covariance | KL(q‖p) | KL(p‖q) |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        c = np.asarray(r["covariance"])
        lines.append(f"| {r['fit']} | ({r['mean'][0]:.3f}, {r['mean'][1]:.3f}) | "
                     f"[[{c[0, 0]:.3f}, {c[0, 1]:.3f}], [{c[1, 0]:.3f}, {c[1, 1]:.3f}]] | "
                     f"{r['kl_q_p']:.4f} | {r['kl_p_q']:.4f} |")
    m, c = result["moment_mean"], np.asarray(result["moment_covariance"])
    lines.append(f"| moment matching (closed form) | ({m[0]:.3f}, {m[1]:.3f}) | "
                 f"[[{c[0, 0]:.3f}, {c[0, 1]:.3f}], [{c[1, 0]:.3f}, {c[1, 1]:.3f}]] | | |")
    return "\n".join(lines)


def reading(result) -> str:
    rows = result["rows"]
    forward = rows[0]
    reverse = rows[1:]
    error = np.max(np.abs(np.asarray(forward["covariance"])
                          - np.asarray(result["moment_covariance"])))
    text = (f"The forward fit is the moment-matched Gaussian (largest covariance entry error "
            f"{error:.3f}); it spreads across both modes and the low-density gap between "
            f"them, with KL(p‖q) = {forward['kl_p_q']:.3f}. ")
    if len(reverse) == 2:
        text += (f"The reverse fits found two distinct local optima, one per mode, with "
                 f"KL(q‖p) = {reverse[0]['kl_q_p']:.3f} and {reverse[1]['kl_q_p']:.3f} "
                 "(both near log 2 = 0.693, the value for a q that matches one of two equally "
                 "weighted, well separated components); each ignores the other mode, so its "
                 f"forward KL is large ({reverse[0]['kl_p_q']:.2f}, "
                 f"{reverse[1]['kl_p_q']:.2f}).")
    else:
        text += "Only one reverse local optimum was found from these starts."
    return text


EXPERIMENT = Experiment(
    name="forward_vs_reverse_2d",
    description="Forward fit and two reverse-KL local optima on a 2-D mixture (PRML 10.3).",
    quick={"seed": 0, "num_starts": 8, "num_steps": 2000, "num_samples": 128},
    full={"seed": 0, "num_starts": 64, "num_steps": 10000, "num_samples": 1024},
    run=run, plot=plot, table=table, reading=reading, order=51,
)
