r"""Bias and spread of k1, k2, k3 and cv(lambda*) across families and true KL 1e-3 .. 10.

Five families of (q, p), each swept over the true KL(q||p) (from
:func:`jaxkl.reference.reference_kl`: analytic for Gaussians, quadrature for mixtures):

- ``location``: q = N(0, 1), p = N(mu, 1); the closed forms of docs/design.md are drawn as lines.
- ``scale, p narrower``: q = N(0, 1), p = N(0, s^2), s < 1; r = p/q is bounded.
- ``scale, p wider``: the same with s > 1. The ratio's tail is Pareto-like,
  P(r > t) ~ t^-alpha with alpha = s^2 / (s^2 - 1), so Var_q(r) is infinite once
  s >= sqrt(2) (KL >= log(2)/2 - 1/4 = 0.0966; at s = sqrt 2, alpha = 2 and E_q[r^2]
  diverges): k3 and every cv(lambda != 0) then have infinite variance,
  while k1 and k2 (polynomials in a Gaussian) keep finite variance.
- ``Gaussian vs bimodal``: q = N(0, 1), p = (N(-a, 1) + N(a, 1)) / 2.
- ``2-D mixtures``: q a two-component 2-D mixture, p the same mixture translated by t.

Per point, ``replicates`` independent runs of ``num_samples`` samples give the mean (bias)
and the per-sample std of each estimator (std/true is the std of a one-sample estimate,
as in Schulman's note). Whether Var_q(r) (and so the variance of k3 and cv*) is finite is
judged from three things, and the verdict never claims more than they support:

- the exact tail index of r (:func:`exact_tail_index`): s^2/(s^2 - 1) for the wider scale
  family; infinite, i.e. every moment finite, for the other four;
- the Hill estimate of the upper tail index of r from ``hill_samples`` draws, with its
  standard error alpha/sqrt(k);
- the growth of k3's sample std from the smallest to the largest of ``growth_sizes``.

:func:`verdict` says "heavy" where the exact index is at most 2, or (no exact index) the
Hill interval alpha +- 2 se lies below 2; "finite" only where the Hill interval lies above
2, k3's std does not keep growing with n, and the exact index (if any) is above 2; and
"uncertain" otherwise (the interval reaches 2, or the std grows: a finite variance out of
reach at this n, as in the location family at large KL where r is log-normal, looks the
same). k3/cv* stds are drawn as numbers, and take part in the ranking, only where the
verdict is "finite".

Regimes the figure shows:

- Small KL (p close to q): k1's std/true blows up like 2/mu (it sums terms of both signs
  to get a tiny mean); k2, k3 and cv* have std/true ~ sqrt(2) and k2's bias/true ~ KL/2 is
  negligible. k3 and cv* win.
- KL of order one and more: k2's bias grows (bias/true = KL/2 in the location family, so
  it is useless beyond KL ~ 0.1 unless the budget is tiny); k3 is still unbiased but its
  variance grows like exp(2 KL) in the location family.
- Heavy tails (p wider than q by more than sqrt 2): k3 is worse than k1, its variance is
  infinite, sample std/true keeps growing with n and any confidence interval built from it
  is wrong. k1 (or cv* with lambda estimated towards 0) is the safe choice.
- When p is narrower than q, r is bounded and k3 stays better than k1 at every KL.

Reference: J. Schulman, "Approximating KL Divergence", 2020; B. M. Hill, "A simple general
approach to inference about the tail of a distribution", Ann. Statist. 3, 1975.
"""

from __future__ import annotations

import distrax
import jax
import numpy as np
from scipy import optimize

from experiments._framework import Experiment, atomic_save_figure
from experiments.estimator_table import closed_form as location_closed_form
from jaxkl.mixtures import gaussian_mixture_1d, gaussian_mixture_full
from jaxkl.montecarlo import estimate, sample_log_ratios
from jaxkl.reference import reference_kl

ESTIMATORS = ("k1", "k2", "k3", "cv*")
# Estimators whose variance involves Var_q(r), infinite when r's tail index is below 2.
USES_RATIO = ("k3", "cv*")
COLORS = {"k1": "tab:blue", "k2": "tab:orange", "k3": "tab:green", "cv*": "tab:red"}


def _scale_kl(s: float) -> float:
    return float(np.log(s) + 0.5 / s**2 - 0.5)


def _mixture_2d(shift: float):
    means = np.array([[-1.0, 0.0], [1.0, 0.5]])
    covariances = np.array([[[0.5, 0.2], [0.2, 0.4]], [[0.3, -0.1], [-0.1, 0.6]]])
    weights = np.array([0.4, 0.6])
    direction = np.array([1.0, 1.0]) / np.sqrt(2)
    return gaussian_mixture_full(means + shift * direction, covariances, weights=weights)


def _bimodal(a: float):
    return gaussian_mixture_1d(np.array([-a, a]), np.ones(2))


def family_pairs(name: str, targets: np.ndarray):
    """(parameter, q, p) for each target KL; parameters solve KL = target where cheap."""
    standard = distrax.Normal(0.0, 1.0)
    pairs = []
    for target in targets:
        if name == "location":
            mu = float(np.sqrt(2 * target))
            pairs.append((mu, standard, distrax.Normal(mu, 1.0)))
        elif name == "scale_narrower":
            s = optimize.brentq(lambda s, t=target: _scale_kl(s) - t, 1e-3, 1.0)
            pairs.append((s, standard, distrax.Normal(0.0, s)))
        elif name == "scale_wider":
            s = optimize.brentq(lambda s, t=target: _scale_kl(s) - t, 1.0, 1e6)
            pairs.append((s, standard, distrax.Normal(0.0, s)))
        elif name == "bimodal":
            a = optimize.brentq(
                lambda a, t=target: reference_kl(standard, _bimodal(a), rtol=1e-8).value - t,
                1e-3, 20.0, xtol=1e-4)
            pairs.append((a, standard, _bimodal(a)))
        elif name == "mixture_2d":
            # KL ~ shift^2 for this pair: a cheap grid instead of root finding in 2-D.
            t = float(np.sqrt(target))
            pairs.append((t, _mixture_2d(0.0), _mixture_2d(t)))
        else:
            raise ValueError(f"unknown family {name!r}")
    return pairs


FAMILIES = {
    "location": "location: N(0,1) vs N(mu,1)",
    "scale_narrower": "scale: N(0,1) vs N(0,s^2), s<1",
    "scale_wider": "scale: N(0,1) vs N(0,s^2), s>1 (heavy r)",
    "bimodal": "N(0,1) vs (N(-a,1)+N(a,1))/2",
    "mixture_2d": "2-D mixture vs translated copy",
}


def hill_tail_index(log_ratio: np.ndarray, k: int) -> tuple[float, float]:
    """Hill's estimate of the tail index of r = exp(l) from its k largest values, with se."""
    top = np.sort(log_ratio)[-(k + 1):]
    alpha = 1.0 / np.mean(top[1:] - top[0])
    return float(alpha), float(alpha / np.sqrt(k))


def exact_tail_index(name: str, param: float) -> float | None:
    """The tail index of r = p/q under q in closed form, where the family has one.

    ``scale_wider``: q = N(0, 1), p = N(0, s^2) gives r ~ exp(x^2 (1 - 1/s^2) / 2), so
    P(r > t) ~ t^(-s^2 / (s^2 - 1)). ``scale_narrower``: r is bounded (index infinite).
    ``location``: r = exp(mu x - mu^2 / 2) is log-normal, and ``bimodal``:
    r = exp(-a^2 / 2) cosh(a x) <= exp(a |x|); both have every moment under q (index
    infinite). ``mixture_2d``: p(x) = q(x - t), and log q(x) = -min_k Q_k(x) + O(|x|) with
    Q_k the components' quadratic forms, so log r = O(|x|) and every moment of r is finite
    under q's Gaussian tails (index infinite). Other names: None (no closed form).
    """
    if name == "scale_wider":
        return float(param**2 / (param**2 - 1))
    if name in ("scale_narrower", "location", "bimodal", "mixture_2d"):
        return float("inf")
    return None


# k3's sample std "keeps growing" with n when it is largest at the largest sample size and
# exceeds its value at the smallest by this factor (with a finite, estimable variance the
# stds scatter around one value; at s = 1.424 a full run grew 5.96 -> 8.64 from 2^12 to
# 2^22, a factor 1.45).
GROWTH_FACTOR = 1.2


def std_grows(growth: dict[str, list[float]]) -> bool:
    """Whether k3's sample std keeps growing with n (see GROWTH_FACTOR)."""
    k3 = growth["k3"]
    return bool(k3[-1] >= max(k3) and k3[-1] > GROWTH_FACTOR * k3[0])


def verdict(alpha: float, se: float, exact: float | None = None, grows: bool = False) -> str:
    """"heavy", "uncertain" or "finite": whether Var_q(r), hence the variance of k3 and
    cv*, is finite and estimable at this n (see the module docstring)."""
    if exact is not None and exact <= 2:
        return "heavy"
    if alpha + 2 * se < 2:
        # Below 2 at the sampled depth: infinite, unless the exact index says the variance
        # is finite but out of reach at this n (log-normal r with a large sigma).
        return "uncertain" if exact is not None else "heavy"
    if alpha - 2 * se > 2 and not grows:
        return "finite"
    return "uncertain"


def sweep_point(q, p, true_kl: float, *, key, num_samples: int, replicates: int) -> dict:
    """Pooled bias and replicate spread of the per-sample std, for each estimator."""
    runs = [estimate(q, p, key=jax.random.fold_in(key, r), num_samples=num_samples,
                     estimators=ESTIMATORS) for r in range(replicates)]
    out = {}
    for name in ESTIMATORS:
        means = np.array([float(run[name].mean) for run in runs])
        stderrs = np.array([float(run[name].stderr) for run in runs])
        stds = np.array([float(run[name].std) for run in runs])
        bias = float(means.mean() - true_kl)
        out[name] = {
            "mean": float(means.mean()),
            "bias": bias,
            "bias_se": float(np.sqrt(np.sum(stderrs**2)) / replicates),
            "std": float(stds.mean()),
            "std_min": float(stds.min()),
            "std_max": float(stds.max()),
            "std_se": float(stds.std(ddof=1) / np.sqrt(replicates)) if replicates > 1 else 0.0,
        }
    return out


def std_growth(q, p, *, key, sizes) -> dict[str, list[float]]:
    """Sample std of k1 and k3 at increasing sample sizes (one independent run each)."""
    growth = {"k1": [], "k3": []}
    for i, n in enumerate(sizes):
        res = estimate(q, p, key=jax.random.fold_in(key, 1000 + i), num_samples=int(n),
                       estimators=("k1", "k3"))
        for name in growth:
            growth[name].append(float(res[name].std))
    return growth


def run(config, progress):
    key = jax.random.key(config["seed"])
    targets = np.geomspace(config["kl_min"], config["kl_max"], config["num_kl"])
    families = []
    work = [(f, i) for f in config["families"] for i in range(len(targets))]
    bar = iter(progress.track(work, total=len(work), desc="points"))
    for f_index, name in enumerate(config["families"]):
        rows = []
        for i, (param, q, p) in enumerate(family_pairs(name, targets)):
            next(bar, None)
            ref = reference_kl(q, p)
            point_key = jax.random.fold_in(jax.random.fold_in(key, f_index), i)
            log_ratio = np.asarray(sample_log_ratios(q, p, key=jax.random.fold_in(point_key, 7),
                                                     num_samples=config["hill_samples"]),
                                   np.float64)
            alpha, alpha_se = hill_tail_index(log_ratio, int(np.sqrt(config["hill_samples"])))
            growth = std_growth(q, p, key=point_key, sizes=config["growth_sizes"])
            exact = exact_tail_index(name, float(param))
            row = {
                "param": float(param),
                "true_kl": ref.value,
                "reference_method": ref.method,
                "reference_error": ref.error,
                "estimators": sweep_point(q, p, ref.value, key=point_key,
                                          num_samples=config["num_samples"],
                                          replicates=config["replicates"]),
                "tail_index": alpha,
                "tail_index_se": alpha_se,
                "tail_index_exact": exact,
                "k3_std_grows": std_grows(growth),
                "variance": verdict(alpha, alpha_se, exact, std_grows(growth)),
                "growth": growth,
            }
            if name == "location":
                row["closed_form"] = location_closed_form(float(param))
            rows.append(row)
        families.append({"name": name, "label": FAMILIES[name], "points": rows})
    return {"families": families, "budget": config["budget"],
            "growth_sizes": [int(n) for n in config["growth_sizes"]]}


def _rmse_at_budget(point: dict, name: str, budget: int) -> float:
    """RMSE of the n-sample mean: unbiased ones use bias 0; k3/cv* count as infinite
    unless their variance is judged finite (their measured std cannot be trusted)."""
    e = point["estimators"][name]
    if name in USES_RATIO and point["variance"] != "finite":
        return float("inf")
    bias = e["bias"] if name == "k2" else 0.0
    return float(np.sqrt(bias**2 + e["std"] ** 2 / budget))


def winners(result: dict) -> list[list[str]]:
    return [[min(ESTIMATORS, key=lambda n: _rmse_at_budget(pt, n, result["budget"]))
             for pt in fam["points"]] for fam in result["families"]]


def _kl_label(kl: float) -> str:
    return f"{kl:.2g}" if kl < 1 else f"{kl:.3g}"


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogLocator, NullFormatter

    families = result["families"]
    fig = plt.figure(figsize=(15, 13.5))
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1, 0.62], hspace=0.42, wspace=0.22,
                            top=0.86, bottom=0.06, left=0.06, right=0.8)
    slots = [grid[0, 0], grid[0, 1], grid[0, 2], grid[1, 0], grid[1, 1]]
    first = None
    boundary = _scale_kl(np.sqrt(2.0))
    for slot, fam in zip(slots, families, strict=False):  # the five FAMILIES at most
        ax = fig.add_subplot(slot, sharey=first)
        first = first or ax
        kl = np.array([pt["true_kl"] for pt in fam["points"]])
        hidden = np.array([pt["variance"] != "finite" for pt in fam["points"]])
        for name in ESTIMATORS:
            e = [pt["estimators"][name] for pt in fam["points"]]
            std = np.array([x["std"] for x in e]) / kl
            lo = np.array([x["std_min"] for x in e]) / kl
            hi = np.array([x["std_max"] for x in e]) / kl
            hide = hidden if name in USES_RATIO else np.zeros_like(hidden)
            shown = np.where(hide, np.nan, std)
            ax.errorbar(kl, shown, yerr=[np.where(hide, 0, std - lo), np.where(hide, 0, hi - std)],
                        fmt="o-", ms=3.5, color=COLORS[name], capsize=2, lw=1.3)
            if hide.any():
                height = 0.96 if name == "k3" else 0.9
                ax.plot(kl[hide], np.full(hide.sum(), height), "^", color=COLORS[name], ms=7,
                        transform=ax.get_xaxis_transform())
        k2 = [pt["estimators"]["k2"] for pt in fam["points"]]
        bias = np.array([x["bias"] for x in k2])
        significant = np.abs(bias) > 2 * np.array([x["bias_se"] for x in k2])
        ax.plot(kl[significant], np.abs(bias[significant]) / kl[significant], "x--",
                color=COLORS["k2"], ms=6, lw=1)
        if fam["name"] == "location":
            mu = np.sqrt(2 * np.geomspace(kl.min(), kl.max(), 100))
            forms = [location_closed_form(m) for m in mu]
            for name in ESTIMATORS:
                ax.plot(mu**2 / 2, [f[name]["std_rel"] for f in forms], ":", color=COLORS[name],
                        lw=1.2)
        if fam["name"] == "scale_wider":
            ax.axvspan(boundary, kl.max() * 1.5, color="tab:red", alpha=0.07, lw=0)
            ax.text(boundary * 1.15, 0.03, "s ≥ √2: Var_q(r) = ∞", color="tab:red",
                    fontsize=8, transform=ax.get_xaxis_transform())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(numticks=12))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("true KL(q‖p) (nats)")
        ax.set_ylabel("std / true KL (one sample)")
        ax.set_title(fam["label"], fontsize=10)
        ax.grid(True, which="major", alpha=0.3)

    low, _ = first.get_ylim()
    first.set_ylim(low, 2e3)  # the location family's k3 closed form leaves through the top
    ax_g = fig.add_subplot(grid[1, 2])
    heavy = next((f for f in families if f["name"] == "scale_wider"), families[0])
    sizes = np.array(result["growth_sizes"])
    cmap = plt.get_cmap("viridis")
    points = heavy["points"]
    growth_handles = []
    for i, pt in enumerate(points):
        color = cmap(i / max(1, len(points) - 1))
        ax_g.plot(sizes, np.array(pt["growth"]["k3"]) / pt["true_kl"], "o-", ms=3.5,
                  color=color)
        ax_g.plot(sizes, np.array(pt["growth"]["k1"]) / pt["true_kl"], ":", color=color,
                  lw=1.2)
        growth_handles.append(Line2D([], [], color=color, marker="o", ms=3.5,
                                     label=f"KL {_kl_label(pt['true_kl'])} ({pt['variance']})"))
    growth_handles.append(Line2D([], [], color="0.3", ls=":", label="k1, same colour = same KL"))
    ax_g.set_xscale("log", base=2)
    ax_g.set_yscale("log")
    ax_g.yaxis.set_minor_formatter(NullFormatter())
    ax_g.set_xlabel("sample size n")
    ax_g.set_ylabel("sample std / true KL")
    ax_g.set_title(f"{heavy['name']}: k3's sample std vs n (solid)", fontsize=10)
    ax_g.grid(True, which="major", alpha=0.3)
    ax_g.legend(handles=growth_handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1),
                title="k3 at each KL", title_fontsize=8, frameon=False)

    ax_w = fig.add_subplot(grid[2, :])
    names = list(ESTIMATORS)
    table = winners(result)
    codes = np.array([[names.index(w) for w in row] for row in table])
    cmap = matplotlib.colors.ListedColormap([COLORS[n] for n in names])
    ax_w.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, aspect="auto")
    for (i, j), code in np.ndenumerate(codes):
        ax_w.text(j, i, names[code], ha="center", va="center", fontsize=9, color="white")
    kl0 = [pt["true_kl"] for pt in families[0]["points"]]
    ax_w.set_xticks(range(len(kl0)), [_kl_label(k) for k in kl0], fontsize=9)
    ax_w.set_yticks(range(len(families)), [f["name"] for f in families], fontsize=9)
    ax_w.set_xlabel("target KL (nats; each family's true KL at a point is in the table)")
    ax_w.set_title(f"lowest RMSE of the mean of n = {result['budget']} samples (k3/cv* only "
                   "where Var_q(r) is judged finite)", fontsize=10)

    handles = [Line2D([], [], color=COLORS[n], marker="o", ms=4, label=f"{n}: std/true "
                      "(bars: min-max over replicates)") for n in ESTIMATORS]
    handles += [
        Line2D([], [], color=COLORS["k2"], marker="x", ls="--", lw=1,
               label="k2: |bias| / true (where > 2 se; k1, k3, cv* are unbiased)"),
        Line2D([], [], color="0.3", ls=":", lw=1.2,
               label="closed forms (location family), same colours"),
        Line2D([], [], color="0.3", marker="^", ls="none", ms=7,
               label="k3 / cv*: std not estimable here (tail heavy or uncertain)"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=9, frameon=False,
               bbox_to_anchor=(0.43, 0.955))
    fig.suptitle("Estimators of KL(q‖p): one-sample spread (std/true) and k2's bias across "
                 "five families", y=0.985)
    atomic_save_figure(fig, path)
    plt.close(fig)


def _exact(pt: dict) -> str:
    exact = pt.get("tail_index_exact")
    return "-" if exact is None else "inf" if np.isinf(exact) else f"{exact:.2f}"


def table(result) -> str:
    lines = ["| family | true KL | var(r) | tail index: Hill (exact) | k3 std, last/first n | "
             + " | ".join(f"{n} std/true" for n in ESTIMATORS)
             + " | k2 bias/true | best at n=budget |",
             "|---" * (7 + len(ESTIMATORS)) + "|"]
    for fam, wins in zip(result["families"], winners(result), strict=True):
        for pt, win in zip(fam["points"], wins, strict=True):
            alpha = f"{pt['tail_index']:.2f}+-{pt['tail_index_se']:.2f} ({_exact(pt)})"
            growth = f"{pt['growth']['k3'][-1] / pt['growth']['k3'][0]:.2f}x"
            if pt["k3_std_grows"]:
                growth += " (grows)"
            stds = []
            for n in ESTIMATORS:
                if n in USES_RATIO and pt["variance"] != "finite":
                    stds.append(f"n/a ({pt['variance']})")
                else:
                    stds.append(f"{pt['estimators'][n]['std'] / pt['true_kl']:.3g}")
            k2 = pt["estimators"]["k2"]
            lines.append(
                f"| {fam['name']} | {pt['true_kl']:.3g} | {pt['variance']} | {alpha} | "
                f"{growth} | " + " | ".join(stds)
                + f" | {k2['bias'] / pt['true_kl']:.3g} | {win} |")
    return "\n".join(lines)


def reading(result) -> str:
    fams = {f["name"]: f for f in result["families"]}
    parts = []
    if "location" in fams:
        pt = fams["location"]["points"][0]
        cf = pt["closed_form"]
        parts.append(
            f"Location family at KL={pt['true_kl']:.2g}: k1 std/true "
            f"{pt['estimators']['k1']['std'] / pt['true_kl']:.3g} (closed form "
            f"{cf['k1']['std_rel']:.3g}), k3 {pt['estimators']['k3']['std'] / pt['true_kl']:.3g}"
            f" ({cf['k3']['std_rel']:.3g}): near p = q, k3/cv* beat k1 by far.")
        last = fams["location"]["points"][-1]
        parts.append(
            f"At KL={last['true_kl']:.2g}, k2's bias/true is "
            f"{last['estimators']['k2']['bias'] / last['true_kl']:.3g} (closed form "
            f"{last['closed_form']['k2']['bias_rel']:.3g}).")
    if "scale_wider" in fams:
        pts = fams["scale_wider"]["points"]
        inf = [p for p in pts if p["tail_index_exact"] <= 2]
        if inf:
            by_hill = sum(p["tail_index"] + 2 * p["tail_index_se"] < 2 for p in inf)
            grew = max(inf, key=lambda p: p["growth"]["k3"][-1] / p["growth"]["k3"][0])
            g = grew["growth"]["k3"]
            parts.append(
                f"When p is wider than q (scale family), {len(inf)} of {len(pts)} points have "
                f"an exact tail index s^2/(s^2-1) of r at most 2 (from KL="
                f"{inf[0]['true_kl']:.2g}; s >= sqrt 2, KL >= {_scale_kl(np.sqrt(2)):.4f}): "
                "Var(k3) is infinite "
                f"there and reported as such, not as a number (Hill's estimate alone puts "
                f"{by_hill} of them clearly below 2); k3's sample std grew "
                f"{g[-1] / g[0]:.3g}x from n={result['growth_sizes'][0]} to "
                f"n={result['growth_sizes'][-1]} at KL={grew['true_kl']:.2g} while k1's "
                "stayed put (at the largest KLs the heavy tail starts beyond the sampled "
                "range, so only the exact index sees it); k1 is the estimator to use there.")
    verdicts = [p["variance"] for f in result["families"] for p in f["points"]]
    parts.append("Verdicts on Var(r): " + ", ".join(
        f"{v} {verdicts.count(v)}" for v in ("finite", "uncertain", "heavy")) + " points.")
    wins = winners(result)
    counts = {n: sum(row.count(n) for row in wins) for n in ESTIMATORS}
    parts.append("Winners by RMSE at n=" + str(result["budget"]) + ": "
                 + ", ".join(f"{n} {c}" for n, c in counts.items()) + " points.")
    return " ".join(parts)


EXPERIMENT = Experiment(
    name="estimator_sweep",
    description="Bias/std of k1, k2, k3, cv* over five (q, p) families, KL 1e-3..10.",
    quick={"seed": 0, "families": list(FAMILIES), "kl_min": 1e-3, "kl_max": 10.0,
           "num_kl": 7, "num_samples": 2**15, "replicates": 4, "hill_samples": 2**17,
           "growth_sizes": [2**10, 2**12, 2**14, 2**16], "budget": 1024},
    full={"seed": 0, "families": list(FAMILIES), "kl_min": 1e-3, "kl_max": 10.0,
          "num_kl": 17, "num_samples": 2**22, "replicates": 16, "hill_samples": 2**22,
          "growth_sizes": [2**12, 2**14, 2**16, 2**18, 2**20, 2**22], "budget": 1024},
    run=run,
    plot=plot,
    table=table,
    reading=reading,
    order=40,
)
