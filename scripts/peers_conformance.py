"""Conformance of jaxkl.rl's pieces with verl's, TRL's and tunix's own functions (issue 17, item 4).

Pieces: per-token KL estimators (``rl.token_kl``), aggregation (``rl.aggregate``), group
advantages (``rl.group_advantages``), ``rl.token_logprobs``, ``rl.entropy``,
``rl.response_mask``, and the whole loss ``rl.grpo_loss(**preset.loss_kwargs())`` under
``rl.presets.verl()`` / ``trl()`` / ``tunix()`` (and variants of the options they map) against
verl's ``ppo_loss``, TRL's ``GRPOTrainer._compute_loss`` and tunix's ``grpo_loss_fn``: loss value,
d loss / d logprobs and the metrics both log. Each is compared with the peer functions that
compute the same quantity, called through the adapters in scripts/_peers.py (the peers'
installed code, never a copy), on random right-padded batches (varied lengths, one full row, one
row of length 1, one empty row where the peer allows it), float32 and bf16 inputs and several
group sizes.

Command (from the repository root, in the peers' environment; see scripts/peers_env.sh)::

    PYTHONPATH=. .venv-peers/bin/python scripts/peers_conformance.py [--quick]

Output: one markdown row per (piece, jaxkl call, peer call, dtype, group size):

* ``value`` / ``grad``: max relative error of jaxkl's value and gradient against the peer's,
  elementwise ``|a - b| / |b|`` over the compared entries (valid tokens for per-token values;
  every entry otherwise); for gradients with respect to logits ``|a - b|`` is divided by the
  largest ``|b|`` of the token's vocabulary row (entries of ``p_v (log p_v + H)`` pass through
  0, where an elementwise ratio measures only cancellation). The gradient is with respect to
  the log-probs (KL), the per-token values (aggregation) or the logits (log-probs, entropy):
  d sum / d input.
* ``jaxkl~f64`` / ``peer~f64``: the same error of each side against an independent float64
  NumPy computation from the definition, on the same (bf16-rounded, for bf16) inputs.
* ``result``: PASS when value and gradient agree within the tolerance; ``peer-rounding`` when
  they do not but jaxkl is within the tolerance of float64 and the peer is not (the peer's own
  float32/bf16 rounding, explained in docs/conformance.md); FAIL otherwise.
  Tolerance: 1e-5 in float32; 2e-2 in bf16 (unit roundoff 2^-8 = 3.9e-3; verl and TRL compute
  in bf16 where tunix and jaxkl upcast to float32, so a few roundings of 2^-8 separate them,
  ~1% as the peers differ among themselves; jaxkl's bf16 gradients are rounded to bf16 too).

Exit status 1 if any float32 row is FAIL.

A run (full, 2 shared CPU cores, 80 s wall; ``--quick`` 49 s), excerpt; the whole table and
every disagreement explained are in docs/conformance.md::

    | piece | jaxkl options | peer | dtype | G | value | grad | jaxkl~f64 (v/g) | peer~f64 (v/g) | tol | result |
    | token_kl | 'k3', log_ratio_clip=20, value_clip=10 | verl 'low_var_kl' | float32 | 4 | 7.0e-02 | 3.0e-05 | 1.1e-07 / 5.6e-08 | 6.5e-02 / 3.0e-05 | 1.0e-05 | peer-rounding |
    | aggregate | 'seq-mean-token-sum-norm' | tunix 'sequence-mean-token-scale' | float32 | 4 | 6.7e-07 | 0 | 3.2e-07 / 3.0e-08 | 3.4e-07 / 3.0e-08 | 1.0e-05 | PASS |
    | group_advantages | scale_rewards="group", eps=0.0001 | TRL scale_rewards='group' (eps 1e-4) | float32 | 4 | 1.9e-07 | - | 1.2e-07 / - | 6.8e-08 / - | 1.0e-05 | PASS |
    | entropy |  | tunix compute_entropy_from_logits | bfloat16 | 4 | 9.4e-03 | 5.4e-02 | 9.6e-07 / 3.8e-03 | 9.5e-03 / 4.9e-02 | 2.0e-02 | peer-rounding |
    | grpo_loss | presets.verl() | verl ppo_loss vanilla loss_agg_mode='token-mean', kl_loss_type='low_var_kl', kl_loss_coef=0.001 | float32 | 4 | 1.5e-07 | 5.1e-06 | 1.1e-07 / 8.8e-08 | 4.7e-08 / 5.1e-06 | 1.0e-05 | PASS |
    | grpo_loss | presets.trl(), kl_coef=0.04 | TRL _compute_loss loss_type='dapo', beta=0.04 | float32 | 4 | 4.4e-07 | 5.9e-06 | 3.2e-07 / 1.2e-07 | 1.3e-07 / 5.8e-06 | 1.0e-05 | PASS |
    | grpo_loss | presets.tunix() | tunix grpo_loss_fn GRPOConfig() | float32 | 4 | 9.1e-06 | 8.8e-08 | 2.5e-06 / 1.0e-07 | 1.2e-05 / 1.0e-07 | 1.0e-05 | PASS |
    381 rows: {'PASS': 304, 'peer-rounding': 77, 'FAIL': 0}; float32 FAIL: 0; 75.9 s
"""  # noqa: E501

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _peers as P  # noqa: E402

TOL = {"float32": 1e-5, "bfloat16": 2e-2, "int": 0.0}
NUM_GROUPS = 3
T = 12
V = 48
EOS, PAD = 2, 0


# --------------------------------------------------------------------------------------------------
# inputs and errors
# --------------------------------------------------------------------------------------------------


def _on_grid(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to ``dtype`` and back to float32 (exact), so every side gets the same input."""
    import jax.numpy as jnp

    return np.asarray(jnp.asarray(x, jnp.float32).astype(P._jdt(dtype)).astype(jnp.float32))


def make_batch(group_size: int, dtype: str, seed: int) -> dict:
    """``NUM_GROUPS`` prompts x ``group_size`` completions, right-padded to ``T``: row 0 full,
    row 1 of length 1, the last row empty (``lengths0``: the same without the empty row)."""
    rng = np.random.default_rng(seed)
    B = group_size * NUM_GROUPS
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0], lengths[1], lengths[-1] = T, 1, 0
    mask = np.arange(T)[None, :] < lengths[:, None]
    lengths0 = np.where(lengths == 0, 3, lengths)
    lp = rng.normal(-1.0, 0.5, (B, T))
    ref = lp + rng.normal(0.0, 0.3, (B, T))
    # A few valid tokens beyond the clamps: |l| > 20, and k3 > 10 with |l| < 20.
    for (i, t), l in zip([(0, 1), (0, 3), (0, 5), (0, 7)], [25.0, -25.0, 3.0, -12.0],
                           strict=True):
        ref[i, t] = lp[i, t] + l
    rewards = rng.normal(0.0, 1.0, B)
    rewards[:group_size] = 1.0  # one constant group (advantage 0)
    rewards[group_size:2 * group_size] = rng.integers(0, 2, group_size)  # binary
    logits = rng.normal(0.0, 3.0, (B, T, V)) + rng.normal(0.0, 10.0, (B, T, 1))
    tokens = rng.integers(0, V, size=(B, T))
    ids = rng.integers(3, V, size=(B, T))
    for i, n in enumerate(lengths0):
        if i != 0:  # row 0 never emits EOS
            ids[i, n - 1] = EOS
        ids[i, n:] = PAD
    ids[2, 0] = EOS  # EOS first
    ids[3, :4] = [5, EOS, 7, EOS]  # two EOS
    f32 = np.float32
    return dict(
        G=group_size, B=B, mask=mask, lengths0=lengths0,
        lp=_on_grid(lp.astype(f32), dtype), ref=_on_grid(ref.astype(f32), dtype),
        loss_mat=_on_grid(rng.normal(0.0, 1.0, (B, T)).astype(f32), dtype),
        rewards=rewards.astype(f32), logits=_on_grid(logits.astype(f32), dtype),
        tokens=tokens, ids=ids,
    )


def rel_err(a, b, where=None, per_token: bool = False) -> float:
    """max ``|a - b| / |b|`` over ``where`` (entries equal on both sides, zeros and infinities
    included, count as 0; ``b = 0 != a`` gives inf). ``per_token``: for ``[..., V]`` gradients
    with respect to logits, ``|a - b|`` over the largest ``|b|`` of the token's vocabulary row."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if not np.all(np.isfinite(a[~same])) or not np.all(np.isfinite(b[~same])):
        return float("inf")
    b_abs = np.where(np.isfinite(b), np.abs(b), 0.0)
    scale = np.max(b_abs, axis=-1, keepdims=True) if per_token else b_abs
    a, b = np.where(same, 0.0, a), np.where(same, 0.0, b)
    with np.errstate(divide="ignore", invalid="ignore"):  # |b| = 0 < |a - b|: inf
        err = np.where(same, 0.0, np.abs(a - b) / scale)
    if where is not None:
        err = err[where]
    return float(np.max(err)) if err.size else 0.0


def _jax_value_grad(fn, x, dtype: str):
    """``fn(x)`` and d sum(fn) / d x, with ``x`` given to jaxkl in ``dtype``."""
    import jax
    import jax.numpy as jnp

    v, vjp = jax.vjp(fn, P._jx(x, dtype))
    (g,) = vjp(jnp.ones_like(v))
    return np.asarray(v, np.float64), np.asarray(g.astype(jnp.float32), np.float64)


def row(piece, jaxkl_call, peer_call, dtype, G, mine, peer, ref, where=None,
        per_token_grad: bool = False, grad_where=None) -> dict:
    """One table row: ``mine``, ``peer``, ``ref`` are (value, grad or None); ``where`` selects
    the compared entries of both, ``grad_where`` (default ``where``) those of the gradient."""
    r = dict(piece=piece, jaxkl=jaxkl_call, peer=peer_call, dtype=dtype, G=G)
    has_grad = mine[1] is not None and peer[1] is not None
    r["value"] = rel_err(mine[0], peer[0], where)
    pt, gw = per_token_grad, where if grad_where is None else grad_where
    r["grad"] = rel_err(mine[1], peer[1], gw, pt) if has_grad else None
    r["jaxkl_f64"] = (rel_err(mine[0], ref[0], where),
                      rel_err(mine[1], ref[1], gw, pt) if has_grad else None)
    r["peer_f64"] = (rel_err(peer[0], ref[0], where),
                     rel_err(peer[1], ref[1], gw, pt) if has_grad else None)
    tol = TOL[dtype]

    def ok(v, g):
        return v <= tol and (g is None or g <= tol)

    if ok(r["value"], r["grad"]):
        r["result"] = "PASS"
    elif ok(*r["jaxkl_f64"]) and not ok(*r["peer_f64"]):
        r["result"] = "peer-rounding"
    else:
        r["result"] = "FAIL"
    return r


# --------------------------------------------------------------------------------------------------
# pieces
# --------------------------------------------------------------------------------------------------


def _k_f64(estimator: str, l: np.ndarray, lclip, vclip, straight_through=False):
    """float64 value and d/d logprob of the estimator at ``l = ref - logp`` with the clamps."""
    lc = l if lclip is None else np.clip(l, -lclip, lclip)
    k = {"k1": -lc, "k2": 0.5 * lc**2, "k3": np.expm1(lc) - lc, "abs": np.abs(lc)}[estimator]
    dk = {"k1": -np.ones_like(lc), "k2": lc, "k3": np.expm1(lc), "abs": np.sign(lc)}[estimator]
    g = -dk  # d l / d logp = -1
    if lclip is not None:
        g = np.where(np.abs(l) > lclip, 0.0, g)
    if vclip is not None:
        g = np.where(np.abs(k) > vclip, 0.0, g)
        k = np.clip(k, -vclip, vclip)
    if straight_through:
        g = -l
    return k, g


# (jaxkl estimator, gradient, log_ratio_clip, value_clip) <- peer call
KL_CASES = [
    ("verl", "kl", ("k1", "natural", None, None)),
    ("verl", "k1", ("k1", "natural", None, None)),
    ("verl", "mse", ("k2", "natural", None, None)),
    ("verl", "k2", ("k2", "natural", None, None)),
    ("verl", "low_var_kl", ("k3", "natural", 20.0, 10.0)),
    ("verl", "k3", ("k3", "natural", 20.0, 10.0)),
    ("verl", "abs", ("abs", "natural", None, None)),
    ("verl", "k1+", ("k1", "straight_through", None, None)),
    ("verl", "k3+", ("k3", "straight_through", None, 10.0)),
    ("verl", "abs+", ("abs", "straight_through", None, None)),
    ("tunix", "kl", ("k1", "natural", None, None)),
    ("tunix", "mse_kl", ("k2", "natural", None, None)),
    ("tunix", "low_var_kl", ("k3", "natural", None, None)),
    ("tunix", "low_var_kl clamp_value=10", ("k3", "natural", None, 10.0)),
]


def check_token_kl(batch: dict, dtype: str) -> list[dict]:
    from jaxkl import rl

    lp, ref, mask = batch["lp"], batch["ref"], batch["mask"]
    l64 = ref.astype(np.float64) - lp.astype(np.float64)
    rows = []
    for peer, name, (est, grad, lclip, vclip) in KL_CASES:
        if peer == "verl":
            res = P.verl_kl_penalty(lp, ref, name, dtype=dtype)
        else:
            method, _, clamp = name.partition(" clamp_value=")
            res = P.tunix_kl(lp, ref, method, dtype=dtype,
                             clamp_value=float(clamp) if clamp else None)
        refj = P._jx(ref, dtype)
        mine = _jax_value_grad(
            lambda x, refj=refj, est=est, grad=grad, lclip=lclip, vclip=vclip: rl.token_kl(
                x, refj, estimator=est, gradient=grad, mask=mask, log_ratio_clip=lclip,
                value_clip=vclip),
            lp, dtype)
        ref64 = _k_f64(est, l64, lclip, vclip, grad == "straight_through")
        opts = [f"'{est}'"] + ([f"gradient='{grad}'"] if grad != "natural" else [])
        opts += [f"log_ratio_clip={lclip:g}" if lclip else "log_ratio_clip=None"]
        opts += [f"value_clip={vclip:g}"] if vclip else []
        rows.append(row("token_kl", ", ".join(opts), f"{peer} '{name}'", dtype, batch["G"],
                        mine, (res.value, res.grad), ref64, where=mask))
    return rows


# jaxkl mode (, normalizer) <- verl agg_loss mode (, loss_scale_factor) / tunix aggregate_loss mode
AGG_CASES = [
    ("token-mean", None, "verl", "token-mean"),
    ("token-sum", None, "verl", "token-sum"),
    ("seq-mean-token-sum", None, "verl", "seq-mean-token-sum"),
    ("seq-mean-token-mean", None, "verl", "seq-mean-token-mean"),
    ("seq-mean-token-sum-norm", None, "verl", "seq-mean-token-sum-norm"),
    ("seq-mean-token-sum-norm", 512.0, "verl", "seq-mean-token-sum-norm"),
    ("token-mean", None, "tunix", "token-mean"),
    ("seq-mean-token-sum", None, "tunix", "seq-mean-token-sum"),
    ("seq-mean-token-sum", None, "tunix", "sequence-mean-token-sum-norm"),
    ("seq-mean-token-mean", None, "tunix", "sequence-mean-token-mean"),
    ("seq-mean-token-sum-norm", None, "tunix", "sequence-mean-token-scale"),
    ("seq-mean-token-sum-norm", 512.0, "tunix", "sequence-mean-token-scale"),
]


def _agg_f64(x: np.ndarray, mask: np.ndarray, mode: str, normalizer):
    """float64 value and d value / d x from the definitions in jaxkl/_src/rl/aggregate.py."""
    m = mask.astype(np.float64)
    n = m.sum(-1)
    S = max(int((n > 0).sum()), 1)
    xm = x.astype(np.float64) * m
    if mode == "token-sum":
        return xm.sum(), m
    if mode == "token-mean":
        return xm.sum() / m.sum(), m / m.sum()
    if mode == "seq-mean-token-mean":
        nn = np.maximum(n, 1)[:, None]
        return (xm / nn).sum() / S, m / nn / S
    c = S * (T if normalizer is None else normalizer) if mode.endswith("-norm") else S
    return xm.sum() / c, m / c


def check_aggregate(batch: dict, dtype: str) -> list[dict]:
    from jaxkl import rl

    x, mask = batch["loss_mat"], batch["mask"]
    rows = []
    for mode, norm, peer, peer_mode in AGG_CASES:
        if peer == "verl":
            res = P.verl_agg_loss(x, mask, peer_mode, dtype=dtype, loss_scale_factor=norm)
            call = f"verl '{peer_mode}'" + (f" loss_scale_factor={norm:g}" if norm else "")
        else:
            res = P.tunix_aggregate_loss(x, mask, peer_mode, dtype=dtype, norm=norm)
            call = f"tunix '{peer_mode}'" + (f" norm={norm:g}" if norm else "")
        kw = {} if norm is None else {"normalizer": norm}
        mine = _jax_value_grad(lambda v, mode=mode, kw=kw: rl.aggregate(v, mask, mode=mode, **kw),
                               x, dtype)
        opts = f"'{mode}'" + (f", normalizer={norm:g}" if norm else "")
        rows.append(row("aggregate", opts, call, dtype, batch["G"], mine,
                        (res.value, res.grad), _agg_f64(x, mask, mode, norm)))
    return rows


def _adv_f64(r: np.ndarray, G: int, normalize_std: bool, eps: float) -> np.ndarray:
    g = r.astype(np.float64).reshape(-1, G)
    c = g - g.mean(-1, keepdims=True)
    if normalize_std:
        c = c / (g.std(-1, ddof=1, keepdims=True) + eps)
    return c.reshape(-1)


def check_group_advantages(batch: dict, dtype: str) -> list[dict]:
    """Value only (no peer differentiates its advantages); rewards are float32 in every peer."""
    from jaxkl import rl

    G, r = batch["G"], batch["rewards"]
    mask0 = np.arange(T)[None, :] < batch["lengths0"][:, None]  # verl: no empty row (see doc)
    completions = [list(batch["ids"][i, :n]) for i, n in enumerate(batch["lengths0"])]
    cases = [
        (True, 1e-6, "verl grpo norm_adv_by_std_in_grpo=True (eps 1e-6)",
         lambda: P.verl_outcome_advantages(r, mask0, G).value[:, 0]),
        (False, 1e-6, "verl grpo norm_adv_by_std_in_grpo=False",
         lambda: P.verl_outcome_advantages(r, mask0, G, norm_adv_by_std_in_grpo=False).value[:, 0]),
        (True, 1e-6, "tunix 'grpo' (eps 1e-6)", lambda: P.tunix_advantages(r, G).value),
        (False, 1e-6, "tunix 'drgrpo'", lambda: P.tunix_advantages(r, G, name="drgrpo").value),
        (True, 1e-4, "TRL scale_rewards='group' (eps 1e-4)",
         lambda: P.trl_generate_and_score(completions, r, eos_token_id=EOS, pad_token_id=PAD,
                                          num_generations=G, scale_rewards="group").value),
        (False, 1e-4, "TRL scale_rewards='none'",
         lambda: P.trl_generate_and_score(completions, r, eos_token_id=EOS, pad_token_id=PAD,
                                          num_generations=G, scale_rewards="none").value),
    ]
    rows = []
    for norm, eps, call, peer in cases:
        scale = "group" if norm else "none"
        mine = np.asarray(rl.group_advantages(r, group_size=G, scale_rewards=scale, eps=eps))
        opts = f"scale_rewards={scale!r}" + (f", eps={eps:g}" if norm else "")
        rows.append(row("group_advantages", opts, call, dtype, G, (mine.reshape(-1), None),
                        (peer(), None), (_adv_f64(r, G, norm, eps), None)))
    return rows


def _log_softmax_f64(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def check_logits(batch: dict, dtype: str) -> list[dict]:
    from jaxkl import rl

    z, tok = batch["logits"], batch["tokens"]
    tokj = np.asarray(tok, np.int32)
    rows = []
    for tau in (1.0, 0.7):
        lsm = _log_softmax_f64(z / tau)
        onehot = np.eye(V)[tok]
        ref = (np.take_along_axis(lsm, tok[..., None], -1)[..., 0],
               (onehot - np.exp(lsm)) / tau)
        mine = _jax_value_grad(lambda x, tau=tau: rl.token_logprobs(x, tokj, temperature=tau),
                               z, dtype)
        peers = [("TRL selective_log_softmax" + (f" temperature={tau:g}" if tau != 1 else ""),
                  P.trl_selective_log_softmax(z, tok, temperature=tau, dtype=dtype))]
        if tau == 1.0:  # verl's and tunix's functions take no temperature
            peers += [("verl logprobs_from_logits",
                       P.verl_logprobs_from_logits(z, tok, dtype=dtype)),
                      ("tunix selective_log_softmax",
                       P.tunix_selective_log_softmax(z, tok, dtype=dtype))]
        for call, res in peers:
            rows.append(row("token_logprobs", f"temperature={tau:g}", call, dtype, batch["G"],
                            mine, (res.value, res.grad), ref, per_token_grad=True))
    lsm = _log_softmax_f64(z)
    p = np.exp(lsm)
    H = -(p * lsm).sum(-1)
    ref = (H, -p * (lsm + H[..., None]))
    mine = _jax_value_grad(rl.entropy, z, dtype)
    for call, res in [("verl entropy_from_logits", P.verl_entropy_from_logits(z, dtype=dtype)),
                      ("TRL entropy_from_logits", P.trl_entropy_from_logits(z, dtype=dtype)),
                      ("tunix compute_entropy_from_logits",
                       P.tunix_compute_entropy_from_logits(z, dtype=dtype))]:
        rows.append(row("entropy", "", call, dtype, batch["G"], mine, (res.value, res.grad), ref,
                        per_token_grad=True))
    return rows


def check_response_mask(batch: dict) -> list[dict]:
    """Exact comparison (value = fraction of differing entries)."""
    from jaxkl import rl

    ids = batch["ids"]
    before = np.cumsum(np.isin(ids, [EOS]), -1) - np.isin(ids, [EOS])
    two = [EOS, 5]
    before2 = np.cumsum(np.isin(ids, two), -1) - np.isin(ids, two)
    cases = [
        (EOS, "verl get_response_mask", P.verl_get_response_mask(ids, EOS).value, before == 0),
        (two, "verl get_response_mask", P.verl_get_response_mask(ids, two).value, before2 == 0),
        (EOS, "tunix make_completion_mask", P.tunix_make_completion_mask(ids, EOS).value,
         before == 0),
    ]
    rows = []
    for eos, call, peer, ref in cases:
        mine = np.asarray(rl.response_mask(np.asarray(ids, np.int32), eos_token=eos))
        r = row("response_mask", f"eos_token={eos}", f"{call} eos={eos}", "int", batch["G"],
                (mine.astype(float), None), (peer.astype(float), None), (ref.astype(float), None))
        r["value"] = float(np.mean(mine != peer))
        r["jaxkl_f64"] = (float(np.mean(mine != ref)), None)
        r["peer_f64"] = (float(np.mean(peer != ref)), None)
        r["result"] = "PASS" if r["value"] == 0 else "FAIL"
        rows.append(r)
    return rows


# --------------------------------------------------------------------------------------------------
# grpo_loss under the presets
# --------------------------------------------------------------------------------------------------


def _grpo_inputs(batch: dict, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``old`` and ``ref`` log-probs for the loss rows: ``old = logp - d`` with ``d ~ N(0, 0.15)``
    and, on every row, token 2 at ``d = +1.5`` (ratio 4.5: above ``1 + eps`` and, with a negative
    advantage, above the dual clip's 3) and token 4 at ``d = -1.5`` (ratio 0.22, below ``1 - eps``);
    ``ref`` is the batch's, with its two ``|l| = 25`` tokens moved to ``l = +-6`` (TRL's and tunix's
    unclamped k3 of ``l = 25`` is 7e10: it would make the loss value that one token's KL)."""
    rng = np.random.default_rng(1000 + batch["G"])
    lp = batch["lp"]
    d = rng.normal(0.0, 0.15, lp.shape)
    d[:, 2], d[:, 4] = 1.5, -1.5
    old = _on_grid((lp - d).astype(np.float32), dtype)
    ref = batch["ref"].copy()
    ref[0, 1], ref[0, 3] = lp[0, 1] + 6.0, lp[0, 3] - 6.0
    return old, _on_grid(ref, dtype)


_EST64 = {"kl": "k1", "k1": "k1", "mse": "k2", "mse_kl": "k2", "k2": "k2", "low_var_kl": "k3",
          "k3": "k3", "abs": "abs"}


def _grpo_f64(lp, old, ref, adv, mask, *, kl_coef, kl, clip_eps, clip_eps_high, clip_ratio_c,
              log_ratio_clip, aggregation, importance_sampling_level, normalizer=None,
              global_count=None):
    """float64 GRPO loss, d loss / d logp and metrics, from the definition: the clipped surrogate
    (token or sequence ratio, dual clip), ``kl_coef`` times the clamped KL estimator, aggregated."""
    from jaxkl._src import vocabulary

    lp, old, ref = (np.asarray(x, np.float64) for x in (lp, old, ref))
    m = np.asarray(mask, np.float64)
    n = m.sum(-1)
    A = np.asarray(adv, np.float64)[:, None] * np.ones_like(lp)
    lo, hi = clip_eps, clip_eps if clip_eps_high is None else clip_eps_high
    seq = importance_sampling_level == "sequence"
    raw = lp - old
    if seq:
        raw = np.broadcast_to(((raw * m).sum(-1) / np.maximum(n, 1))[:, None], lp.shape)
    lr = raw if log_ratio_clip is None else np.clip(raw, -log_ratio_clip, log_ratio_clip)
    ratio = np.exp(lr)
    unc, clp = ratio * A, np.clip(ratio, 1 - lo, 1 + hi) * A
    pg = -np.minimum(unc, clp)
    clipped = clp < unc
    dpg = np.where(clipped, 0.0, -ratio * A)  # d pg / d log-ratio
    if log_ratio_clip is not None:
        dpg = np.where(np.abs(raw) > log_ratio_clip, 0.0, dpg)
    dual = np.zeros(lp.shape, bool)
    if clip_ratio_c is not None:
        dual = (A < 0) & (pg > -clip_ratio_c * A)
        pg, dpg = np.where(dual, -clip_ratio_c * A, pg), np.where(dual, 0.0, dpg)
    est = vocabulary.TOKEN_ESTIMATOR_ALIASES.get(kl.estimator, kl.estimator)
    k, dk = _k_f64(est, ref - lp, kl.log_ratio_clip, kl.value_clip,
                   kl.gradient == "straight_through")
    if kl.gradient == "importance_weighted":  # w k, w = pi / pi_old: d(w k) = w k + w dk
        lw = lp - old
        if kl.log_ratio_clip is not None:
            lw = np.clip(lw, -kl.log_ratio_clip, kl.log_ratio_clip)
        w = np.exp(lw)
        k, dk = w * k, w * (k + dk)
    mode = vocabulary.AGGREGATION_ALIASES.get(aggregation, aggregation)
    S = max(int((n > 0).sum()), 1)
    rows = S if global_count is None else global_count
    if mode == "token-mean":
        w = m / (m.sum() if global_count is None else global_count)
    elif mode == "seq-mean-token-mean":
        w = m / np.maximum(n, 1)[:, None] / rows
    elif mode == "seq-mean-token-sum-norm":
        w = m / (rows * (lp.shape[-1] if normalizer is None else normalizer))
    else:
        raise ValueError(mode)
    per_token = pg + kl_coef * k
    loss = float((np.where(m > 0, per_token, 0.0) * w).sum())
    if seq:  # the row's log-ratio is the mean of its tokens': d / d logp_t = m_t / n_i
        gpg = (w * dpg).sum(-1, keepdims=True) * m / np.maximum(n, 1)[:, None]
    else:
        gpg = w * dpg
    grad = gpg + kl_coef * w * dk

    def mean(x):
        return float((x * m).sum() / max(m.sum(), 1))

    metrics = dict(clip_fraction=mean(clipped), clip_fraction_low=mean(clipped & (A < 0)),
                   clip_fraction_high=mean(clipped & (A >= 0)), dual_clip_fraction=mean(dual),
                   ppo_kl=mean(old - lp), kl=mean(k))
    return loss, grad, metrics


# (label, jaxkl preset + overrides, extra jaxkl kwargs, peer, peer kwargs, metrics jaxkl -> peer)
def _grpo_cases(T_: int, B: int):
    from jaxkl import rl

    verl_m = {"clip_fraction": "actor/pg_clipfrac", "dual_clip_fraction": "actor/pg_clipfrac_lower",
              "ppo_kl": "actor/ppo_kl", "kl": "kl_loss"}
    trl_m = {"clip_fraction_low": "clip_ratio/low_mean",
             "clip_fraction_high": "clip_ratio/high_mean",
             "clip_fraction": "clip_ratio/region_mean"}
    trl_kl = dict(trl_m, kl="kl")
    tunix_m = {"clip_fraction": "pg_clipfrac", "ppo_kl": "ppo_kl", "kl": "kl"}
    v, t, x = rl.presets.verl(), rl.presets.trl(), rl.presets.tunix()
    return [
        # verl: ppo_loss = vanilla policy loss (dual clip c=3) + 0.001 * agg(low_var_kl)
        ("presets.verl()", v, {}, "verl", dict(use_kl_loss=True), verl_m),
        ("presets.verl(), aggregation='seq-mean-token-mean', global_count=B",
         v._replace(aggregation="seq-mean-token-mean"), dict(global_count=B), "verl",
         dict(use_kl_loss=True, loss_agg_mode="seq-mean-token-mean"),
         {k: v_ for k, v_ in verl_m.items() if k != "kl"}),
        ("presets.verl(), clip_eps_high=0.28, kl_coef=0.04",
         v._replace(clip_eps_high=0.28, kl_coef=0.04), {}, "verl",
         dict(use_kl_loss=True, clip_ratio_high=0.28, kl_loss_coef=0.04), verl_m),
        # TRL: GRPOTrainer._compute_loss (dr_grpo: max_completion_length, default 512)
        ("presets.trl()", t, {}, "trl", {}, trl_m),
        ("presets.trl(), kl_coef=0.04", t._replace(kl_coef=0.04), {}, "trl", dict(beta=0.04),
         trl_kl),
        ("presets.trl(), kl_coef=0.04, aggregation='grpo', global_count=B",
         t._replace(kl_coef=0.04, aggregation="grpo"), dict(global_count=B), "trl",
         dict(beta=0.04, loss_type="grpo"), trl_kl),
        ("presets.trl(), kl_coef=0.04, aggregation='bnpo'",
         t._replace(kl_coef=0.04, aggregation="bnpo"), {}, "trl",
         dict(beta=0.04, loss_type="bnpo"), trl_kl),
        ("presets.trl(), kl_coef=0.04, aggregation='dr_grpo', normalizer=512, global_count=B",
         t._replace(kl_coef=0.04, aggregation="dr_grpo"), dict(normalizer=512.0, global_count=B),
         "trl", dict(beta=0.04, loss_type="dr_grpo"), trl_kl),
        # TRL weights the KL by the sequence ratio at the sequence level (jaxkl: the token's)
        ("presets.trl(), kl_coef=0.04, kl=KLConfig('k3', log_ratio_clip=None), "
         "importance_sampling_level='sequence'",
         t._replace(kl_coef=0.04, kl=rl.KLConfig("k3", log_ratio_clip=None),
                    importance_sampling_level="sequence"), {}, "trl",
         dict(beta=0.04, importance_sampling_level="sequence", use_bias_correction_kl=False),
         {"kl": "kl"}),
        ("presets.trl(), kl_coef=0.04, clip_eps_high=0.28, clip_ratio_c=3",
         t._replace(kl_coef=0.04, clip_eps_high=0.28, clip_ratio_c=3.0), {}, "trl",
         dict(beta=0.04, epsilon_high=0.28, delta=3.0), trl_kl),
        # tunix: algo_core.grpo_loss_fn with GRPOConfig
        ("presets.tunix()", x, {}, "tunix", {}, tunix_m),
        ("presets.tunix(), kl=KLConfig('k3', None, value_clip=10), clip_eps_high=0.28, "
         "clip_ratio_c=3, aggregation='token-mean'",
         x._replace(kl=rl.KLConfig("k3", log_ratio_clip=None, value_clip=10.0),
                    clip_eps_high=0.28, clip_ratio_c=3.0, aggregation="token-mean"), {},
         "tunix", dict(kl_loss_mode="low_var_kl", kl_clamp_value=10.0, epsilon_high=0.28,
                       epsilon_c=3.0, loss_agg_mode="token-mean"),
         dict(tunix_m, dual_clip_fraction="pg_clipfrac_lower")),
        ("presets.tunix(), importance_sampling_level='sequence'",
         x._replace(importance_sampling_level="sequence"), {}, "tunix",
         dict(loss_algo="gspo-token"), {"ppo_kl": "ppo_kl", "kl": "kl"}),
    ]


def _peer_call(peer: str, pkw: dict) -> str:
    if peer == "verl":
        opts = {"loss_agg_mode": "token-mean", "use_kl_loss": True,
                "kl_loss_type": "low_var_kl", "kl_loss_coef": 0.001, **pkw}
        return "verl ppo_loss vanilla " + ", ".join(f"{k}={v!r}" for k, v in opts.items()
                                                    if k != "use_kl_loss")
    if peer == "trl":
        opts = {"loss_type": "dapo", "beta": 0.0, **pkw}
        return "TRL _compute_loss " + ", ".join(f"{k}={v!r}" for k, v in opts.items())
    return "tunix grpo_loss_fn " + (", ".join(f"{k}={v!r}" for k, v in pkw.items())
                                    or "GRPOConfig()")


def check_grpo_loss(batch: dict, dtype: str) -> list[dict]:
    """``rl.grpo_loss(**preset.loss_kwargs())`` against the peer's whole loss: value, d loss /
    d logprobs (valid tokens) and, as a separate row, the metrics both compute."""
    import jax

    from jaxkl import rl

    lp, mask, G, B = batch["lp"], batch["mask"], batch["G"], batch["B"]
    old, ref = _grpo_inputs(batch, dtype)
    rows = []
    for label, preset, extra, peer, pkw, metric_names in _grpo_cases(T, B):
        adv = np.asarray(rl.group_advantages(batch["rewards"], group_size=G,
                                             **preset.advantage_kwargs()), np.float32)
        kw = dict(preset.loss_kwargs(), **extra)
        if peer == "verl":
            res = P.verl_actor_loss(old, lp, adv, mask, ref, dtype=dtype, **pkw)
        elif peer == "trl":
            res = P.trl_grpo_loss(lp, adv, mask, old, ref if pkw.get("beta") else None,
                                  dtype=dtype, **pkw)
        else:
            res = P.tunix_grpo_loss(lp, adv, mask, old, ref, dtype=dtype, **pkw)
        oldj, refj = P._jx(old, dtype), P._jx(ref, dtype)

        def f(x, oldj=oldj, refj=refj, adv=adv, kw=kw):
            return rl.grpo_loss(x, oldj, adv, mask, ref_logprobs=refj, **kw)

        (loss, metrics), g = jax.value_and_grad(f, has_aux=True)(P._jx(lp, dtype))
        mine = (np.asarray(loss, np.float64), np.asarray(g.astype(np.float32), np.float64))
        r64 = _grpo_f64(lp, old, ref, adv, mask, **kw)
        call = _peer_call(peer, pkw)
        rows.append(row("grpo_loss", label, call, dtype, G, mine, (res.value, res.grad),
                        r64[:2], grad_where=mask))
        names = sorted(metric_names)
        mine_m = np.array([float(getattr(metrics, k)) for k in names])
        peer_m = np.array([float(res.extra[metric_names[k]]) for k in names])
        ref_m = np.array([r64[2][k] for k in names])
        rows.append(row("grpo_loss metrics", label + ": " + ", ".join(names), call, dtype, G,
                        (mine_m, None), (peer_m, None), (ref_m, None)))
    return rows


# --------------------------------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------------------------------


def _f(x) -> str:
    return "-" if x is None else "0" if x == 0 else f"{x:.1e}"


def print_table(rows: list[dict]) -> None:
    head = ["piece", "jaxkl options", "peer", "dtype", "G", "value", "grad", "jaxkl~f64 (v/g)",
            "peer~f64 (v/g)", "tol", "result"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        tol = TOL.get(r["dtype"], 0)
        cells = [r["piece"], r["jaxkl"], r["peer"], r["dtype"], str(r["G"]), _f(r["value"]),
                 _f(r["grad"]), " / ".join(map(_f, r["jaxkl_f64"])),
                 " / ".join(map(_f, r["peer_f64"])), _f(tol), r["result"]]
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one group size (4)")
    ap.add_argument("--group-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = args.group_sizes or ([4] if args.quick else [2, 4, 8])
    t0 = time.perf_counter()
    print("versions:", ", ".join(f"{k} {v}" for k, v in P.versions().items()))
    import jaxkl

    print("jaxkl:", os.path.dirname(jaxkl.__file__))
    rows = []
    for G in sizes:
        for dtype in P.DTYPES:
            batch = make_batch(G, dtype, args.seed + G)
            rows += check_token_kl(batch, dtype)
            rows += check_aggregate(batch, dtype)
            rows += check_logits(batch, dtype)
            rows += check_grpo_loss(batch, dtype)
            if dtype == "float32":
                rows += check_group_advantages(batch, dtype)
                rows += check_response_mask(batch)
    print()
    print_table(rows)
    fails = [r for r in rows if r["result"] == "FAIL" and r["dtype"] != "bfloat16"]
    counts = {k: sum(r["result"] == k for r in rows) for k in ("PASS", "peer-rounding", "FAIL")}
    print(f"\n{len(rows)} rows: {counts}; float32 FAIL: {len(fails)}; "
          f"{time.perf_counter() - t0:.1f} s")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
