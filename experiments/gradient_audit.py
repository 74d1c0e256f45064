"""Gradient audit: how far each KL configuration's expected gradient is from grad KL(pi||ref).

Exact expected gradients (enumeration, float64; :mod:`jaxkl.rl.audit`) of every
configuration (estimator x placement x gradient option) on random problems:

- ``kl``: categorical policies, on-policy, reference logits ``theta + s * delta`` for a
  grid of scales ``s`` (the x axis is the median exact KL(pi || ref));
- ``off_policy``: the same at one scale, samples from ``pi_old`` with logits
  ``theta + u * eps`` (x axis: median exact KL(pi_old || pi));
- ``sequence``: a tabular autoregressive policy, on-policy, per-token losses summed over
  the sequence, against the sequence-level KL(pi || ref).

For each point the median over problems of ``1 - cosine`` and of the relative error
``|g - grad KL| / |grad KL|`` against the reverse KL gradient (and, in the table, the
forward one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments._framework import Experiment, atomic_save_figure
from jaxkl.rl import audit, tabular

CONFIG_NAMES = [c.name for c in audit.CONFIGS]
# Below this a configuration is exact (float64 round-off is ~1e-16 .. 1e-14; the smallest
# inexact value in these sweeps is ~1e-4): the figure lists it as exact instead of drawing it.
EXACT = 1e-10
# The off-policy column of the table: PPO-style updates keep KL(pi_old || pi) near this.
TABLE_OFF_POLICY_KL = 0.1


def _problems(key, num_problems, shape):
    k_theta, k_delta, k_eps = jax.random.split(key, 3)
    theta = jax.random.normal(k_theta, (num_problems, *shape), jnp.float64)
    delta = jax.random.normal(k_delta, (num_problems, *shape), jnp.float64)
    eps = jax.random.normal(k_eps, (num_problems, *shape), jnp.float64)
    return theta, delta, eps


def _summarise(out) -> dict:
    """Medians over problems (axis 0) of each configuration's bias measures."""
    med = lambda x: np.median(np.asarray(x), axis=0).tolist()
    return {
        "one_minus_cos_reverse": med(1 - out.cosine_reverse),
        "relative_error_reverse": med(out.relative_error_reverse),
        "one_minus_cos_forward": med(1 - out.cosine_forward),
        "relative_error_forward": med(out.relative_error_forward),
        "reverse_kl": float(np.median(np.asarray(out.reverse_kl))),
    }


def run(config, progress):
    with jax.enable_x64(True):
        key = jax.random.key(config["seed"])
        keys = jax.random.split(key, 2)
        v, n = config["vocab_size"], config["num_problems"]
        theta, delta, eps = _problems(keys[0], n, (v,))
        categorical = jax.jit(jax.vmap(
            lambda t, r, o: audit.audit_categorical(t, r, old_logits=o, log_ratio_clip=None)
        ))
        scales = np.geomspace(*config["kl_scales"])
        kl_sweep = []
        for s in progress.track(scales, total=len(scales), desc="KL size"):
            kl_sweep.append({"scale": float(s), **_summarise(categorical(theta, theta + s * delta,
                                                                         theta))})
        s0 = config["off_policy_scale"]
        offsets = np.geomspace(*config["off_policy_offsets"])
        off_sweep = []
        for u in progress.track(offsets, total=len(offsets), desc="off-policyness"):
            old = theta + u * eps
            out = categorical(theta, theta + s0 * delta, old)
            old_kl = jax.vmap(lambda o, t: jnp.sum(jax.nn.softmax(o) * (
                jax.nn.log_softmax(o) - jax.nn.log_softmax(t))))(old, theta)
            off_sweep.append({"offset": float(u), "old_kl": float(np.median(old_kl)),
                              **_summarise(out)})

        sv, st = config["sequence_vocab_size"], config["sequence_length"]
        shape = (tabular.num_nodes(sv, st), sv)
        theta, delta, _ = _problems(keys[1], config["sequence_problems"], shape)
        sequence = jax.jit(jax.vmap(
            lambda t, r: audit.audit_sequence(t, r, log_ratio_clip=None)
        ))
        seq_sweep = []
        for s in progress.track(scales, total=len(scales), desc="sequence KL size"):
            seq_sweep.append({"scale": float(s), **_summarise(sequence(theta, theta + s * delta))})
    return {
        "configs": CONFIG_NAMES,
        "kl": kl_sweep,
        "off_policy": off_sweep,
        "off_policy_reverse_kl": off_sweep[0]["reverse_kl"],
        "sequence": seq_sweep,
    }


def _column(sweep, metric, name):
    i = CONFIG_NAMES.index(name)
    return np.array([point[metric][i] for point in sweep])


def _nearest_off_policy(result) -> dict:
    off = result["off_policy"]
    return min(off, key=lambda p: abs(np.log(p["old_kl"] / TABLE_OFF_POLICY_KL)))


def table(result) -> str:
    kl, seq = result["kl"], result["sequence"]
    small, large, off = kl[0], kl[-1], _nearest_off_policy(result)
    lines = [
        "Median over random problems; `rel` = |g - grad KL| / |grad KL|, `1-cos` = 1 - cosine "
        "(0.000 means exact to float64).",
        "",
        f"| configuration | 1-cos rev, KL={small['reverse_kl']:.3g} | rel rev, "
        f"KL={large['reverse_kl']:.3g} | rel fwd, KL={large['reverse_kl']:.3g} | rel rev, "
        f"off-policy KL(old‖pi)={off['old_kl']:.3g} | rel rev, sequence KL="
        f"{seq[-1]['reverse_kl']:.3g} |",
        "|---|---|---|---|---|---|",
    ]
    for i, name in enumerate(result["configs"]):
        lines.append(
            f"| {name} | {small['one_minus_cos_reverse'][i]:.3f} | "
            f"{large['relative_error_reverse'][i]:.3f} | "
            f"{large['relative_error_forward'][i]:.3f} | "
            f"{off['relative_error_reverse'][i]:.3f} | "
            f"{seq[-1]['relative_error_reverse'][i]:.3f} |"
        )
    return "\n".join(lines)


def reading(result) -> str:
    kl, seq = result["kl"], result["sequence"]
    off = [_nearest_off_policy(result)]
    rel = lambda sweep, name, j=-1: _column(sweep, "relative_error_reverse", name)[j]
    fwd = lambda sweep, name, j=-1: _column(sweep, "relative_error_forward", name)[j]
    return (
        "On-policy, k2 in the loss, every straight-through option and k1 in the reward follow "
        f"grad KL(pi||ref) exactly at every KL size (relative error "
        f"{max(rel(kl, 'k2 loss natural'), rel(kl, 'k1 reward natural')):.1e}); k1 in the loss "
        "has expected gradient 0 (relative error 1), and k3 in the loss follows the forward "
        f"KL instead (relative error to grad KL(ref||pi) {fwd(kl, 'k3 loss natural'):.1e}), "
        f"which departs from the reverse-KL gradient as the KL grows: relative error "
        f"{rel(kl, 'k3 loss natural', 0):.3f} at KL {kl[0]['reverse_kl']:.3g} and "
        f"{rel(kl, 'k3 loss natural'):.3f} at KL {kl[-1]['reverse_kl']:.3g}. Off-policy "
        f"(KL(pi_old||pi) = {off[-1]['old_kl']:.3g}) only the importance-weighted unbiased "
        f"estimators stay exact (k3: {rel(off, 'k3 loss importance_weighted'):.1e}); "
        f"straight-through reaches {rel(off, 'k3 loss straight_through'):.3f}, k2 "
        f"{rel(off, 'k2 loss natural'):.3f}, k1 in the reward "
        f"{rel(off, 'k1 reward natural'):.3f} without the ratio and "
        f"{rel(off, 'k1 reward importance_weighted'):.3f} with it (the penalty, computed at "
        "sampling time, is stale: its bias is grad KL(pi||pi_old)). At sequence level, "
        "per-token losses summed over the sequence miss the prefixes' score-function term: "
        "even k2/straight-through has "
        f"relative error {rel(seq, 'k2 loss natural', 0):.3f} at sequence KL "
        f"{seq[0]['reverse_kl']:.3g} and {rel(seq, 'k2 loss natural'):.3f} at "
        f"{seq[-1]['reverse_kl']:.3g}, while k1 in the reward with the penalty-to-go stays "
        f"exact ({rel(seq, 'k1 reward natural'):.1e})."
    )


SWEEPS = (("kl", "one_minus_cos_reverse"), ("kl", "relative_error_reverse"),
          ("off_policy", "one_minus_cos_reverse"), ("off_policy", "relative_error_reverse"),
          ("sequence", "one_minus_cos_reverse"), ("sequence", "relative_error_reverse"))


def coinciding(result) -> list[list[str]]:
    """The configurations grouped by their results: two share a group when every number
    of every sweep agrees (to 1e-6 relative), e.g. every straight-through option and k2
    in the loss. Groups are in the order of their first member in ``result["configs"]``."""
    names = result["configs"]
    vectors = {name: np.concatenate([_column(result[sweep], metric, name)
                                     for sweep, metric in SWEEPS]) for name in names}
    groups: list[list[str]] = []
    for name in names:
        for group in groups:
            if np.allclose(vectors[group[0]], vectors[name], rtol=1e-6, atol=EXACT):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    groups = coinciding(result)
    tags = [chr(ord("A") + i) for i in range(len(groups))]
    palette = plt.get_cmap("tab20").colors
    colors = [palette[(2 * i) % 20 if i < 10 else (2 * i - 19) % 20] for i in range(len(groups))]
    markers = {"natural": "o", "straight_through": "s", "importance_weighted": "^"}
    styles = []
    for group, color in zip(groups, colors, strict=True):
        _, placement, gradient = group[0].split(" ")
        styles.append(dict(color=color, ls="-" if placement == "loss" else "--",
                           marker=markers[gradient], ms=4.5, lw=1.4))
    sweeps = [
        ("kl", "reverse_kl", "exact KL(π‖ref) (nats)", "on-policy, categorical"),
        ("off_policy", "old_kl", "exact KL(π_old‖π) (nats)",
         f"off-policy, categorical (KL(π‖ref) ≈ {result['off_policy_reverse_kl']:.2g} nats)"),
        ("sequence", "reverse_kl", "exact sequence KL(π‖ref) (nats)",
         "on-policy, sequences, token sum"),
    ]
    metrics = [("one_minus_cos_reverse", "1 − cos(g, ∇KL(π‖ref))"),
               ("relative_error_reverse", "|g − ∇KL(π‖ref)| / |∇KL(π‖ref)|")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.6), sharey="row")
    for col, (sweep, xkey, xlabel, title) in enumerate(sweeps):
        points = result[sweep]
        x = np.array([p[xkey] for p in points])
        for row, (metric, ylabel) in enumerate(metrics):
            ax = axes[row, col]
            exact = []
            for tag, group, style in zip(tags, groups, styles, strict=True):
                y = _column(points, metric, group[0])
                if np.all(np.abs(y) < EXACT):
                    exact.append(tag)
                    continue
                ax.plot(x, np.where(np.abs(y) < EXACT, np.nan, y), **style)
                ax.annotate(tag, (x[-1], y[-1]), xytext=(4, 0), textcoords="offset points",
                            va="center", fontsize=7, color=style["color"])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            ax.set(xlabel=xlabel)
            ax.text(0.02, 0.03, "exact (< 1e-10), not drawn: " + ", ".join(exact),
                    transform=ax.transAxes, fontsize=8, va="bottom",
                    bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
            if col == 0:
                ax.set_ylabel(ylabel)
            if row == 0:
                ax.set_title(title)
    for row in range(2):  # room below the lowest curve for the "exact" box
        low, high = axes[row, 0].get_ylim()
        axes[row, 0].set_ylim(low / 30, high)
    handles = [Line2D([], [], **style, label=f"{tag}: " + " = ".join(group))
               for tag, group, style in zip(tags, groups, styles, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8.5, frameon=False,
               title="configurations (estimator placement gradient); one entry per set whose "
                     "numbers coincide everywhere. Solid: loss, dashed: reward; "
                     "o natural, ■ straight-through, ▲ importance-weighted",
               title_fontsize=8.5)
    fig.suptitle("Bias of the expected KL-penalty gradient against the reverse-KL gradient "
                 "(exact enumeration, median over random problems)")
    fig.tight_layout(rect=(0, 0.2, 1, 0.97))
    atomic_save_figure(fig, path)
    plt.close(fig)


EXPERIMENT = Experiment(
    name="gradient_audit",
    description="Exact expected gradient of each KL configuration vs grad KL(pi||ref).",
    quick={"seed": 0, "vocab_size": 16, "num_problems": 64, "kl_scales": [0.05, 3.0, 9],
           "off_policy_scale": 1.0, "off_policy_offsets": [0.03, 2.0, 8],
           "sequence_vocab_size": 3, "sequence_length": 4, "sequence_problems": 16},
    full={"seed": 0, "vocab_size": 256, "num_problems": 2048, "kl_scales": [0.02, 5.0, 25],
          "off_policy_scale": 1.0, "off_policy_offsets": [0.01, 3.0, 25],
          "sequence_vocab_size": 4, "sequence_length": 5, "sequence_problems": 256},
    run=run, plot=plot, table=table, reading=reading, order=60,
)
