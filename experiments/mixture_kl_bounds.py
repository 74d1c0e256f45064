r"""How good are the closed-form KL approximations and bounds between Gaussian mixtures?

Random pairs of 1-D and 2-D Gaussian mixtures (1 to ``max_components`` components each,
Dirichlet weights, means N(0, 2^2), scales log-uniform in [0.3, 2] or random full
covariances) are scored against float64 adaptive quadrature
(:func:`jaxkl.reference.quadrature_kl`, error estimate below 1e-8 relative):

- Hershey & Olsen (ICASSP 2007): the variational approximation ``D_var`` and the
  product-of-Gaussians approximation ``D_prod``;
- Durrieu, Thiran & Kelly (ICASSP 2012): the lower and upper bounds, and their midpoint.

Reported: the median and 90th percentile of |approx - KL| / KL, how often each bound holds
(it must be always, up to quadrature error), and the relative width of the bound interval.
"""

from __future__ import annotations

import jax
import numpy as np

from experiments._framework import Experiment, atomic_save_figure
from jaxkl.mixtures import gaussian_mixture_1d, gaussian_mixture_full
from jaxkl.reference import mixture_kl_approximations, quadrature_kl

METHODS = ("variational", "product", "lower", "upper", "midpoint")


def _random_mixture(rng, dim: int, max_components: int):
    k = int(rng.integers(1, max_components + 1))
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(scale=2.0, size=(k, dim))
    if dim == 1:
        scales = np.exp(rng.uniform(np.log(0.3), np.log(2.0), size=k))
        return gaussian_mixture_1d(means[:, 0], scales, weights=weights)
    a = rng.normal(scale=0.8, size=(k, dim, dim))
    return gaussian_mixture_full(means, a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(dim),
                                 weights=weights)


def run(config, progress):
    rng = np.random.default_rng(config["seed"])
    out = {}
    for dim, count in ((1, config["pairs_1d"]), (2, config["pairs_2d"])):
        rows = {m: [] for m in ("truth", "truth_error", *METHODS)}
        for _ in progress.track(range(count), total=count, desc=f"{dim}-D pairs"):
            q = _random_mixture(rng, dim, config["max_components"])
            p = _random_mixture(rng, dim, config["max_components"])
            truth = quadrature_kl(q, p, rtol=1e-10)
            with jax.enable_x64(True):
                approx = mixture_kl_approximations(q, p)
                values = {k: float(v) for k, v in approx._asdict().items()}
            values["midpoint"] = (max(values["lower"], 0.0) + values["upper"]) / 2
            rows["truth"].append(truth.value)
            rows["truth_error"].append(truth.error)
            for m in METHODS:
                rows[m].append(values[m])
        out[f"{dim}d"] = rows
    return out


def summary(rows: dict) -> dict:
    truth = np.array(rows["truth"])
    slack = np.array(rows["truth_error"]) + 1e-12 * (1 + truth)
    stats = {}
    for m in METHODS:
        rel = np.abs(np.array(rows[m]) - truth) / truth
        stats[m] = {"median_rel_error": float(np.median(rel)),
                    "p90_rel_error": float(np.quantile(rel, 0.9))}
    stats["lower"]["holds"] = float(np.mean(np.array(rows["lower"]) <= truth + slack))
    stats["upper"]["holds"] = float(np.mean(truth <= np.array(rows["upper"]) + slack))
    width = (np.array(rows["upper"]) - np.maximum(np.array(rows["lower"]), 0)) / truth
    stats["width"] = {"median": float(np.median(width)), "p90": float(np.quantile(width, 0.9))}
    stats["count"] = int(truth.size)
    return stats


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    colors = {"variational": "tab:blue", "product": "tab:orange", "lower": "tab:green",
              "upper": "tab:red", "midpoint": "tab:purple"}
    markers = {"variational": "o", "product": "s", "lower": "v", "upper": "^", "midpoint": "D"}
    for ax, key in zip(axes[:2], ("1d", "2d"), strict=True):
        rows = result[key]
        truth = np.array(rows["truth"])
        lim = [truth.min() * 0.5, truth.max() * 2]
        values = np.concatenate([np.array(rows[m]) for m in METHODS])
        # Non-positive values (a lower bound or an approximation below 0) are drawn on a
        # strip below every positive one.
        floor = min(lim[0], values[values > 0].min()) / 4
        for m in METHODS:
            value = np.array(rows[m])
            positive = value > 0
            label = m if positive.all() else f"{m} ({(~positive).sum()} ≤ 0: at the bottom)"
            ax.scatter(truth[positive], value[positive], s=10, alpha=0.6, color=colors[m],
                       marker=markers[m], label=label)
            ax.scatter(truth[~positive], np.full((~positive).sum(), floor), s=10, alpha=0.6,
                       color=colors[m], marker=markers[m])
        ax.plot(lim, lim, "k-", lw=1, label="y = KL (quadrature, the truth)")
        if any(np.min(result[key][m]) <= 0 for m in METHODS):
            ax.axhline(floor * 1.8, color="0.6", lw=0.6, ls="--")
            ax.text(0.98, floor * 1.3, "values ≤ 0", transform=ax.get_yaxis_transform(),
                    ha="right", va="top", fontsize=8, color="0.4")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("KL(q‖p) by quadrature (nats)")
        ax.set_ylabel("approximation or bound (nats)")
        ax.set_title(f"{key[0]}-D mixture pairs (n = {truth.size})")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(True, alpha=0.3)
    ax = axes[2]
    positions = np.arange(len(METHODS))
    fills = {"1d": "lightblue", "2d": "wheat"}
    for offset, key in ((-0.18, "1d"), (0.18, "2d")):
        truth = np.array(result[key]["truth"])
        rel = [np.abs(np.array(result[key][m]) - truth) / truth for m in METHODS]
        ax.boxplot(rel, positions=positions + offset, widths=0.3, showfliers=False,
                   patch_artist=True, boxprops={"facecolor": fills[key]},
                   medianprops={"color": "k"})
    ax.set_xticks(positions, METHODS, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("|approx − KL| / KL")
    ax.set_title("relative error per method")
    ax.legend(handles=[Patch(facecolor=fills["1d"], edgecolor="k", label="1-D pairs"),
                       Patch(facecolor=fills["2d"], edgecolor="k", label="2-D pairs")],
              title="box: quartiles, line: median,\nwhiskers: 1.5 IQR", fontsize=8,
              title_fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.suptitle("Gaussian-mixture KL: Hershey-Olsen approximations and Durrieu et al. bounds "
                 "against quadrature")
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


def table(result) -> str:
    lines = ["| dim | method | median rel. error | 90% rel. error | bound holds |",
             "|---|---|---|---|---|"]
    for key in ("1d", "2d"):
        s = summary(result[key])
        for m in METHODS:
            holds = f"{100 * s[m]['holds']:.1f}%" if "holds" in s[m] else ""
            lines.append(f"| {key} | {m} | {s[m]['median_rel_error']:.3g} | "
                         f"{s[m]['p90_rel_error']:.3g} | {holds} |")
    return "\n".join(lines)


def reading(result) -> str:
    parts = []
    for key in ("1d", "2d"):
        s = summary(result[key])
        best = min(("variational", "product", "midpoint"),
                   key=lambda m: s[m]["median_rel_error"])
        parts.append(
            f"{key.upper()} ({s['count']} pairs): the lower bound held in "
            f"{100 * s['lower']['holds']:.0f}% and the upper in {100 * s['upper']['holds']:.0f}%"
            f" of pairs; the bound interval is {s['width']['median']:.2g}x KL wide (median), "
            f"so the bounds certify an order of magnitude, not digits. The best point "
            f"approximation is {best} (median relative error {s[best]['median_rel_error']:.2g}"
            f"; product: {s['product']['median_rel_error']:.2g}).")
    parts.append("Quadrature remains the reference wherever d <= 2.")
    return " ".join(parts)


EXPERIMENT = Experiment(
    name="mixture_kl_bounds",
    description="Hershey-Olsen approximations and Durrieu et al. bounds vs quadrature.",
    quick={"seed": 0, "pairs_1d": 200, "pairs_2d": 24, "max_components": 4},
    full={"seed": 0, "pairs_1d": 2000, "pairs_2d": 500, "max_components": 6},
    run=run,
    plot=plot,
    table=table,
    reading=reading,
    order=45,
)
