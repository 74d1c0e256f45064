"""The note's verification table: k1, k2, k3 and cv(lambda*) on two Gaussian pairs.

Cases (all with unit variances, so the true KL is ``mu**2 / 2`` whichever way round):

- ``note``: the note's own check, q = N(0.1, 1), p = N(0, 1), 1e7 samples;
- ``schulman_0.1``: q = N(0, 1), p = N(0.1, 1), true KL 0.005;
- ``schulman_1``: q = N(0, 1), p = N(1, 1), true KL 0.5.

For each estimator: the mean, bias/true with a 95% interval and std/true, next to the
closed forms of docs/design.md (Schulman 2020 reports std/true 20, 1.42, 1.42 at KL = 0.005 and
2, 1.73, 1.7 at KL = 0.5, and k2's bias/true 0.25 at KL = 0.5). Also the note's two sanity
checks: the fraction of samples with ``log q - log p < 0`` (the note's ~48%; exactly
Phi(-0.05) = 0.4801 for the ``note`` case), and ``log x <= x - 1`` plotted against ``x``
(the note plotted it against the array index).
"""

from __future__ import annotations

import distrax
import jax
import numpy as np
import scipy.stats

import jaxkl
from experiments._framework import Experiment, atomic_save_figure

ESTIMATORS = ("k1", "k2", "k3", "cv*")
CASES = {  # name: (q mean, p mean)
    "note": (0.1, 0.0),
    "schulman_0.1": (0.0, 0.1),
    "schulman_1": (0.0, 1.0),
}


def closed_form(mu: float) -> dict[str, dict[str, float]]:
    """bias/true and std/true for unit-variance Gaussians at distance mu (docs/design.md)."""
    kl = mu**2 / 2
    e = np.expm1(mu**2)
    var = {
        "k1": mu**2,
        "k2": (2 * mu**4 + mu**6) / 4,
        "k3": e - mu**2,
        # lam* = Cov(l, r)/Var(r) = mu^2/(e^{mu^2}-1); Var = Var(l) - Cov^2/Var(r).
        "cv*": mu**2 - mu**4 / e,
    }
    bias = {"k1": 0.0, "k2": mu**4 / 8, "k3": 0.0, "cv*": 0.0}
    return {k: {"bias_rel": bias[k] / kl, "std_rel": float(np.sqrt(var[k])) / kl} for k in var}


def _positive_log_ratio(l):
    """Indicator of log q - log p < 0; its mean is the note's "fraction" check."""
    return (l > 0).astype(l.dtype)


def run(config, progress):
    key = jax.random.key(config["seed"])
    rows = []
    for i, name in enumerate(progress.track(CASES, total=len(CASES), desc="cases")):
        q_mean, p_mean = CASES[name]
        q, p = distrax.Normal(q_mean, 1.0), distrax.Normal(p_mean, 1.0)
        true_kl = float(jaxkl.exact_kl(q, p))
        res = jaxkl.estimate(
            q, p, key=jax.random.fold_in(key, i), num_samples=config["num_samples"],
            estimators=(*ESTIMATORS, _positive_log_ratio),
        )
        mu = abs(q_mean - p_mean)
        closed = closed_form(mu)
        frac = res["_positive_log_ratio"]
        row = {
            "case": name, "q": [q_mean, 1.0], "p": [p_mean, 1.0], "true_kl": true_kl,
            "num_samples": int(frac.count),
            "fraction_log_q_minus_log_p_negative": float(frac.mean),
            "fraction_stderr": float(frac.stderr),
            # x ~ N(q_mean, 1); l > 0 iff x is on p's side of the midpoint.
            "fraction_exact": float(scipy.stats.norm.cdf(-mu / 2)),
            "estimators": {},
        }
        for est in ESTIMATORS:
            s = res[est]
            rel = jaxkl.relative_error(s, true_kl, level=0.95)
            row["estimators"][est] = {
                "mean": float(s.mean), "stderr": float(s.stderr),
                "bias_rel": float(rel.value), "bias_rel_low": float(rel.low),
                "bias_rel_high": float(rel.high), "std_rel": float(s.std / true_kl),
                "closed_bias_rel": closed[est]["bias_rel"],
                "closed_std_rel": closed[est]["std_rel"],
            }
        rows.append(row)
    return {"rows": rows}


def table(result) -> str:
    lines = [
        "| case | true KL | estimator | mean | bias/true [95% CI] | closed bias/true "
        "| std/true | closed std/true |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        for est, e in row["estimators"].items():
            lines.append(
                f"| {row['case']} | {row['true_kl']:.4g} | {est} | {e['mean']:.5g} | "
                f"{e['bias_rel']:+.4f} [{e['bias_rel_low']:+.4f}, {e['bias_rel_high']:+.4f}] | "
                f"{e['closed_bias_rel']:.4f} | {e['std_rel']:.3f} | {e['closed_std_rel']:.3f} |"
            )
    lines.append("")
    lines.append("| case | fraction with log q - log p < 0 | exact |")
    lines.append("|---|---|---|")
    for row in result["rows"]:
        lines.append(
            f"| {row['case']} | {row['fraction_log_q_minus_log_p_negative']:.4f} "
            f"± {row['fraction_stderr']:.4f} | {row['fraction_exact']:.4f} |"
        )
    return "\n".join(lines)


def reading(result) -> str:
    by_case = {r["case"]: r for r in result["rows"]}
    small, large = by_case["schulman_0.1"], by_case["schulman_1"]
    fmt = lambda row: ", ".join(
        f"{k} {row['estimators'][k]['std_rel']:.2f}" for k in ("k1", "k2", "k3"))
    note = by_case["note"]
    return (
        f"std/true at KL = 0.005: {fmt(small)} (Schulman: 20, 1.42, 1.42); at KL = 0.5: "
        f"{fmt(large)} (Schulman: 2, 1.73, 1.7). k2's bias/true is "
        f"{small['estimators']['k2']['bias_rel']:.4f} and "
        f"{large['estimators']['k2']['bias_rel']:.3f} (closed forms 0.0025 and 0.25); k1, k3 "
        "and cv(lambda*) are unbiased within their intervals, and cv(lambda*) has the smallest "
        f"spread ({large['estimators']['cv*']['std_rel']:.2f} at KL = 0.5). The note's check: "
        f"{100 * note['fraction_log_q_minus_log_p_negative']:.2f}% of samples have "
        f"log q - log p < 0 (exactly {100 * note['fraction_exact']:.2f}%), which is why k1 is "
        "negative so often. The left panel is the inequality log x <= x - 1 behind k3 >= 0."
    )


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(0.01, 5, 0.01)
    ax = axes[0]
    ax.plot(x, np.log(x), label=r"$\log x$")
    ax.plot(x, x - 1, label=r"$x - 1$")
    ax.axvline(1.0, color="grey", lw=0.6, ls=":")
    ax.set(xlabel="x", ylabel="value", title=r"$\log x \leq x - 1$ (so $k_3 \geq 0$)",
           ylim=(-4, 4))
    ax.legend()

    ax = axes[1]
    cases = [r for r in result["rows"] if r["case"].startswith("schulman")]
    width = 0.38
    positions = np.arange(len(ESTIMATORS))
    for j, row in enumerate(cases):
        measured = [row["estimators"][e]["std_rel"] for e in ESTIMATORS]
        closed = [row["estimators"][e]["closed_std_rel"] for e in ESTIMATORS]
        offset = (j - 0.5) * width
        ax.bar(positions + offset, measured, width, label=f"KL = {row['true_kl']:.3g} nats")
        ax.scatter(positions + offset, closed, color="k", marker="_", s=300, zorder=3,
                   label="closed form" if j == 0 else None)
    ax.set_yscale("log")
    ax.set_yticks([1, 1.5, 2, 5, 10, 20], ["1", "1.5", "2", "5", "10", "20"])
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(positions, ESTIMATORS)
    ax.set(ylabel="std / true KL", title="Estimator spread (q = N(0,1), p = N(mu,1))")
    ax.legend()
    fig.tight_layout()
    atomic_save_figure(fig, path)
    plt.close(fig)


EXPERIMENT = Experiment(
    name="estimator_table",
    description="The note's k1/k2/k3 table (and cv*) against Schulman's closed forms.",
    quick={"seed": 0, "num_samples": 10_000_000},
    full={"seed": 0, "num_samples": 1_000_000_000},
    run=run, plot=plot, table=table, reading=reading, order=10,
)
