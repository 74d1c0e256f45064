"""Where does the best reverse-KL Gaussian stop covering both modes?

p = 0.5 N(-d/2, 1) + 0.5 N(d/2, 1) for separations d from 0 to 10, q = N(m, s^2). For
every d, ``num_starts`` reverse-KL fits from random starts (locations uniform on
[-d/2 - 1, d/2 + 1], scales log-uniform on [0.5, 3]) run as ONE compiled call
(``jit(vmap(fit_multistart))`` over d), and the best start is kept by a 4096-sample
estimate of KL(q||p) with a common key.

Two branches of local optima exist: the symmetric one (m = 0, s growing with d) and, from
d ~ 5, a pair of mode-locked ones (m ~ +-d/2, s ~ 1). The critical separation d_c is where
the mode-locked branch becomes the better one. It is located two ways:

- from the fits: per d, the best score on each branch (starts classified by |m| < d/4);
  d_c is the zero crossing of their difference, linearly interpolated between grid points;
- independently, in float64: both branches' optima by Gauss-Hermite quadrature and
  scipy.optimize, and the root of KL_sym(d) - KL_locked(d) by Brent's method.

The KL of each best fit is evaluated with ``jaxkl.reference.reference_kl`` (quadrature).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize, special

from experiments._framework import Experiment, atomic_save_figure
from jaxkl import families
from jaxkl.fitting import FitOptions, fit_multistart
from jaxkl.mixtures import gaussian_mixture_1d
from jaxkl.reference import reference_kl

FAMILY = families.gaussian()


def target(d):
    return gaussian_mixture_1d(jnp.stack([-d / 2, d / 2]), jnp.ones(2))


def sweep_one(d, key, *, num_starts, num_steps, num_samples):
    """The multistart reverse fit at separation d (traced: vmapped over d)."""
    loc_key, scale_key, fit_key = jax.random.split(key, 3)
    half = d / 2 + 1
    locs = jax.random.uniform(loc_key, (num_starts,), minval=-half, maxval=half)
    scales = jnp.exp(jax.random.uniform(scale_key, (num_starts,), minval=np.log(0.5),
                                        maxval=np.log(3.0)))
    inits = jax.vmap(lambda m, s: FAMILY.encode(loc=m, scale=s))(locs, scales)
    options = FitOptions(divergence="reverse_kl", num_steps=num_steps,
                         num_samples=num_samples)
    return fit_multistart(target(d), FAMILY, key=fit_key, num_starts=num_starts,
                          options=options, init_params=inits)


def make_sweep(num_starts, num_steps, num_samples):
    """The whole sweep as one jitted function of (separations, keys)."""
    one = functools.partial(sweep_one, num_starts=num_starts, num_steps=num_steps,
                            num_samples=num_samples)
    return jax.jit(jax.vmap(one))


# ---------------------------------------------------------------------------------------
# Independent float64 reference: the two branches by quadrature.
# ---------------------------------------------------------------------------------------

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(200)
_WEIGHTS = _WEIGHTS / np.sqrt(2 * np.pi)


def _quadrature_kl(m, log_s, d):
    x = m + np.exp(log_s) * _NODES
    log_p = special.logsumexp(np.stack([-0.5 * (x + d / 2) ** 2, -0.5 * (x - d / 2) ** 2]),
                              axis=0) + np.log(0.5) - 0.5 * np.log(2 * np.pi)
    log_q = -0.5 * _NODES**2 - log_s - 0.5 * np.log(2 * np.pi)
    return float(np.sum(_WEIGHTS * (log_q - log_p)))


def symmetric_branch(d):
    res = optimize.minimize_scalar(lambda ls: _quadrature_kl(0.0, ls, d), bounds=(-3, 3),
                                   method="bounded", options={"xatol": 1e-12})
    return 0.0, float(np.exp(res.x)), float(res.fun)


def locked_branch(d):
    """The mode-locked local optimum started at (d/2, 1); None where it does not exist."""
    res = optimize.minimize(lambda t: _quadrature_kl(t[0], t[1], d), [d / 2, 0.0],
                            method="Nelder-Mead", options={"xatol": 1e-11, "fatol": 1e-14})
    m, s = float(res.x[0]), float(np.exp(res.x[1]))
    return (m, s, float(res.fun)) if d > 1 and abs(m) > 0.25 * d else None


def quadrature_critical_separation():
    """The root of KL_sym(d) - KL_locked(d) (Brent), bracketed where both branches exist."""
    def gap(d):
        return symmetric_branch(d)[2] - locked_branch(d)[2]
    grid = np.arange(4.0, 10.01, 0.25)
    exists = [d for d in grid if locked_branch(d) is not None]
    lo = next(d for d in exists if gap(d) < 0 and gap(d + 0.25) > 0)
    return float(optimize.brentq(gap, lo, lo + 0.25, xtol=1e-10)), float(min(exists))


def _interpolated_crossing(d, gap):
    """First zero crossing (from < 0 to > 0) of gap(d), linearly interpolated; or None."""
    for i in range(len(d) - 1):
        if np.isfinite(gap[i]) and np.isfinite(gap[i + 1]) and gap[i] < 0 <= gap[i + 1]:
            return float(d[i] - gap[i] * (d[i + 1] - d[i]) / (gap[i + 1] - gap[i]))
    return None


def run(config, progress):
    d = np.linspace(0.0, config["max_separation"], config["num_separations"])
    keys = jax.random.split(jax.random.key(config["seed"]), len(d))
    sweep = make_sweep(config["num_starts"], config["num_steps"], config["num_samples"])
    out = sweep(jnp.asarray(d, jnp.float32), keys)
    best_mean = np.asarray(out.best.q.mean(), np.float64)
    best_std = np.asarray(out.best.q.stddev(), np.float64)
    start_mean = np.asarray(out.starts.q.mean(), np.float64)
    start_std = np.asarray(out.starts.q.stddev(), np.float64)
    scores = np.asarray(out.scores, np.float64)
    locked = np.abs(start_mean) >= d[:, None] / 4
    best_symmetric = np.where(~locked, scores, np.inf).min(axis=1)
    best_locked = np.where(locked & (d[:, None] > 0), scores, np.inf).min(axis=1)
    both = np.isfinite(best_symmetric) & np.isfinite(best_locked)
    # > 0 where the locked branch wins; undefined where a branch has no start.
    gap = np.where(both, best_symmetric - np.where(both, best_locked, 0.0), np.nan)
    crossing = _interpolated_crossing(d, gap)
    jump = [i for i in range(1, len(d)) if abs(best_mean[i]) > d[i] / 4 >= abs(best_mean[i - 1])]
    best_kl = []
    indices = range(0, len(d), config["reference_every"])
    for i in progress.track(indices, total=len(indices), desc="reference KL"):
        q = FAMILY.distribution(jax.tree.map(lambda x, i=i: x[i], out.best.params))
        best_kl.append([float(d[i]), reference_kl(q, target(jnp.float32(d[i]))).value])
    d_quad, d_spinodal = quadrature_critical_separation()
    branch_d = np.linspace(0.0, config["max_separation"], 81)
    branches = []
    for x in branch_d:
        sym, lock = symmetric_branch(x), locked_branch(x)
        branches.append({"d": float(x), "sym_s": sym[1], "sym_kl": sym[2],
                         "locked_m": lock[0] if lock else None,
                         "locked_s": lock[1] if lock else None,
                         "locked_kl": lock[2] if lock else None})
    return {
        "separations": d.tolist(),
        "best_mean": best_mean.tolist(),
        "best_std": best_std.tolist(),
        "best_score": scores.min(axis=1).tolist(),
        "start_mean": start_mean.tolist(),
        "start_std": start_std.tolist(),
        "num_nonfinite_fits": int(np.sum(~np.asarray(out.starts.finite))),
        "best_kl_reference": best_kl,
        "critical_from_fits": crossing,
        "jump_between": [float(d[jump[0] - 1]), float(d[jump[0]])] if jump else None,
        "critical_quadrature": d_quad,
        "locked_branch_appears": d_spinodal,
        "branches": branches,
    }


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = np.asarray(result["separations"])
    start_mean, start_std = np.asarray(result["start_mean"]), np.asarray(result["start_std"])
    br = result["branches"]
    bd = np.array([b["d"] for b in br])

    def branch(name):  # NaN where the branch does not exist, so lines break there
        return np.array([np.nan if b[name] is None else b[name] for b in br])

    lm, ls, lkl = branch("locked_m"), branch("locked_s"), branch("locked_kl")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [(axes[0], np.abs(start_mean), np.abs(result["best_mean"]), "|mean| of q"),
              (axes[1], start_std, result["best_std"], "std of q")]
    for ax, starts, best, label in panels:
        ax.scatter(np.repeat(d, starts.shape[1]), starts.ravel(), s=6, color="0.7",
                   label="all starts (local optima)")
        ax.plot(d, best, "o", ms=3.5, color="C3", label="best of the starts")
        ax.set(xlabel="separation d", ylabel=label)
    axes[0].plot(bd, np.zeros_like(bd), color="C0", lw=1, label="symmetric branch (quadrature)")
    axes[0].plot(bd, lm, color="C2", lw=1, label="mode-locked branch (quadrature)")
    axes[0].plot(d, d / 2, ":", color="k", lw=0.8, label="component mean d/2")
    axes[1].plot(bd, [b["sym_s"] for b in br], color="C0", lw=1)
    axes[1].plot(bd, ls, color="C2", lw=1)
    axes[0].set_title("reverse-KL fit location")
    axes[1].set_title("reverse-KL fit scale")
    ax = axes[2]
    ax.plot(bd, [b["sym_kl"] for b in br], color="C0", label="symmetric branch")
    ax.plot(bd, lkl, color="C2", label="mode-locked branch")
    ref = np.asarray(result["best_kl_reference"])
    ax.plot(ref[:, 0], ref[:, 1], "o", ms=3.5, color="C3", label="best fit (reference_kl)")
    ax.axhline(np.log(2), color="k", ls=":", lw=0.8, label="log 2")
    ax.set(xlabel="separation d", ylabel="KL(q‖p) (nats)", title="KL of the optima", ylim=(0, 1.5))
    for a in axes:
        a.axvline(result["critical_quadrature"], color="k", lw=0.8, ls="--")
    axes[0].legend(fontsize=7, loc="upper left")
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"p = 0.5 N(-d/2,1) + 0.5 N(d/2,1): the best reverse-KL Gaussian locks onto "
                 f"one mode beyond d_c = {result['critical_quadrature']:.3f} (dashed)")
    atomic_save_figure(fig, path)
    plt.close(fig)


def table(result) -> str:
    d = np.asarray(result["separations"])
    rows = ["| d | best mean | best std | best KL(q‖p) estimate |", "|---|---|---|---|"]
    for i in np.linspace(0, len(d) - 1, 11).round().astype(int):
        rows.append(f"| {d[i]:.2f} | {result['best_mean'][i]:+.3f} | "
                    f"{result['best_std'][i]:.3f} | {result['best_score'][i]:.4f} |")
    rows += ["", "| critical separation | value |", "|---|---|",
             f"| from the fits (branch scores cross) | {_fmt(result['critical_from_fits'])} |",
             f"| best fit jumps between grid points | {_fmt_pair(result['jump_between'])} |",
             f"| quadrature (float64, Brent) | {result['critical_quadrature']:.4f} |",
             f"| mode-locked optima first exist (quadrature, 0.25 grid) | "
             f"{result['locked_branch_appears']:.2f} |"]
    return "\n".join(rows)


def _fmt(x):
    return "n/a" if x is None else f"{x:.3f}"


def _fmt_pair(pair):
    return "n/a" if pair is None else f"{pair[0]:.3f} and {pair[1]:.3f}"


def reading(result) -> str:
    d_c = result["critical_quadrature"]
    d = np.asarray(result["separations"])
    covering = np.abs(np.asarray(result["best_mean"])) < d / 4
    i = int(np.flatnonzero(covering & (d < d_c))[-1])
    return (
        f"For small d the best reverse-KL Gaussian sits between the modes and widens with d "
        f"(std {result['best_std'][i]:.2f} at d = {d[i]:.2f}); from "
        f"d ~ {result['locked_branch_appears']:.2f} a second, mode-locked family of local "
        f"optima exists (grey points at |mean| ~ d/2), and at d_c = {d_c:.3f} (float64 "
        f"quadrature; the fits' own branch scores cross at "
        f"{_fmt(result['critical_from_fits'])}) it becomes the better one. The transition is "
        "first-order: the best fit jumps from mean 0 to one mode (between d = "
        f"{_fmt_pair(result['jump_between'])}) rather than splitting gradually, and the symmetric "
        "optimum stays a local minimum beyond d_c, so a single start can miss the better "
        f"fit. {result['num_nonfinite_fits']} fits had non-finite steps."
    )


EXPERIMENT = Experiment(
    name="separation_sweep",
    description="Reverse-KL Gaussian fit to a two-mode mixture vs separation: critical d.",
    quick={"seed": 0, "num_separations": 64, "max_separation": 10.0, "num_starts": 16,
           "num_steps": 2000, "num_samples": 32, "reference_every": 4},
    full={"seed": 0, "num_separations": 256, "max_separation": 10.0, "num_starts": 64,
          "num_steps": 4000, "num_samples": 128, "reference_every": 1},
    run=run, plot=plot, table=table, reading=reading, order=52,
)
