"""Smoke test of the peer adapters (scripts/_peers.py): every adapter, both dtypes, two group sizes.

Run inside the peers' environment, from the repository root::

    bash scripts/peers_env.sh                          # once: makes .venv-peers/
    .venv-peers/bin/python scripts/peers_smoke.py      # ~2-4 min on 2 cores
    .venv-peers/bin/python scripts/peers_smoke.py --group-sizes 4 --dtypes float32 --only tunix

It prints the installed versions, where each peer function lives (module, signature, file:line),
what a CPU machine lacks (flash-attn, Triton, vLLM ...) and which fallback the peers take, then one
row per call: adapter, case, dtype, group size, status, value and gradient shapes, a few values and
the largest |gradient| on padded positions (0 expected), or for the cross-check rows ("==") the
largest loss / gradient differences: verl's whole actor loss against its pieces, and
trl_grpo_loss's minimal trainer object against a real GRPOTrainer built by its own __init__.
A call that raises prints its exception instead of stopping the run. Exit status 1 when a call
failed that is not one of the peers' own documented refusals (EXPECTED below), else 0.

The batch: ``num_groups`` prompts x ``G`` completions, right-padded to ``T`` tokens with random
lengths (one row full, one of length 1), log-probs ~ N(-1, 0.5), old = current + N(0, 0.1),
ref = current + N(0, 0.3), binary rewards and group z-scored advantages (made here with NumPy only
as inputs; each peer's own advantage code is exercised by its advantage adapter).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _peers as P  # noqa: E402

# The peers' own refusals, printed but not counted as failures.
EXPECTED = {
    ("verl_kl_penalty", "full"): "verl raises NotImplementedError for 'full' in kl_penalty_forward",
}


def make_batch(group_size: int, num_groups: int, T: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    B = group_size * num_groups
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0], lengths[-1] = T, 1
    mask = np.arange(T)[None, :] < lengths[:, None]
    lp = rng.normal(-1.0, 0.5, (B, T)).astype(np.float32)
    old = (lp + rng.normal(0, 0.1, (B, T))).astype(np.float32)
    ref = (lp + rng.normal(0, 0.3, (B, T))).astype(np.float32)
    rewards = rng.integers(0, 2, size=B).astype(np.float32)
    g = rewards.reshape(num_groups, group_size)
    adv = ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-6)).reshape(B)
    V = 11
    eos, pad = 2, 0
    ids = rng.integers(3, V, size=(B, T))
    truncated = np.zeros(B, bool)
    truncated[0] = True  # the full-length row never emits EOS
    for i, n in enumerate(lengths):
        if not truncated[i]:
            ids[i, n - 1] = eos
        ids[i, n:] = pad
    completions = [list(ids[i, : lengths[i]]) for i in range(B)]
    logits = rng.normal(0, 2, (B, T, V)).astype(np.float32)
    loss_mat = rng.normal(0, 1, (B, T)).astype(np.float32)
    return dict(B=B, T=T, G=group_size, mask=mask, lp=lp, old=old, ref=ref, rewards=rewards,
                adv=adv.astype(np.float32), ids=ids, completions=completions, logits=logits,
                loss_mat=loss_mat, eos=eos, pad=pad, lengths=lengths)


def same(a, b, tol: float):
    """``a`` with the largest |loss| and |gradient| differences to ``b`` in ``extra``; raises
    AssertionError when one exceeds ``tol`` (so the row reads FAIL with both numbers)."""
    dv = float(np.max(np.abs(np.asarray(a.value, np.float64) - np.asarray(b.value, np.float64))))
    dg = float(np.max(np.abs(np.asarray(a.grad, np.float64) - np.asarray(b.grad, np.float64))))
    if not (dv <= tol and dg <= tol):
        raise AssertionError(f"differs: |d loss| {dv:.3g}, |d grad| {dg:.3g} (tolerance {tol:g})")
    return a._replace(extra={"|d loss|": dv, "|d grad|": dg})


def verl_pieces(b: dict, coef: float):
    """verl's GRPO actor loss composed from the pieces (float32): policy loss + coef * k3 loss, with
    the global batch info ppo_loss sets for one mini-batch on one rank."""
    m, lp, old, ref, adv = b["mask"], b["lp"], b["old"], b["ref"], b["adv"]
    info = dict(dp_size=1, batch_num_tokens=int(m.sum()), global_batch_size=b["B"],
                loss_scale_factor=None)
    pg = P.verl_policy_loss(old, lp, adv, m, global_batch_info=info)
    kl = P.verl_kl_penalty(lp, ref, "low_var_kl")
    agg = P.verl_agg_loss(kl.value, m, "token-mean", batch_num_tokens=info["batch_num_tokens"],
                          global_batch_size=b["B"])
    grad = pg.grad + coef * agg.grad * kl.grad
    return P.Result(np.float32(pg.value + coef * agg.value), grad, {})


def cases(b: dict, dt: str):
    """(adapter, case, peer, thunk) for every call."""
    m, lp, old, ref, adv = b["mask"], b["lp"], b["old"], b["ref"], b["adv"]
    out = []

    def add(adapter, case, peer, thunk):
        out.append((adapter, case, peer, thunk))

    # verl
    for name in P.VERL_KL_CANDIDATES:
        add("verl_kl_penalty", name, "verl", lambda n=name: P.verl_kl_penalty(lp, ref, n, dtype=dt))
    for mode in P.VERL_AGG_MODES:
        add("verl_agg_loss", mode, "verl",
            lambda mo=mode: P.verl_agg_loss(b["loss_mat"], m, mo, dtype=dt))
        add("verl_agg_loss", mode + " global", "verl", lambda mo=mode: P.verl_agg_loss(
            b["loss_mat"], m, mo, dtype=dt, dp_size=2, batch_num_tokens=2 * int(m.sum()),
            global_batch_size=2 * b["B"], loss_scale_factor=b["T"]))
    try:
        names = P.verl_policy_loss_names()
    except Exception:  # noqa: BLE001 - the import failure is reported by the call below
        names = ["vanilla", "gspo"]
    extra_cfg = {"dro": {"policy_loss": {"dro_beta": 0.1}}}
    for name in names:
        add("verl_policy_loss", name, "verl", lambda n=name: P.verl_policy_loss(
            old, lp, adv, m, loss_mode=n, dtype=dt, **extra_cfg.get(n, {})))
    add("verl_policy_loss", "vanilla dual-clip c=3 low=.2 high=.28", "verl",
        lambda: P.verl_policy_loss(old, lp, adv, m, dtype=dt, clip_ratio_c=3.0,
                                   clip_ratio_low=0.2, clip_ratio_high=0.28))
    add("verl_policy_loss", "gspo seq-mean-token-mean", "verl", lambda: P.verl_policy_loss(
        old, lp, adv, m, loss_mode="gspo", loss_agg_mode="seq-mean-token-mean", dtype=dt))
    add("verl_actor_loss", "grpo recipe: vanilla + k3 kl_loss 0.001", "verl",
        lambda: P.verl_actor_loss(old, lp, adv, m, ref, dtype=dt, use_kl_loss=True))
    add("verl_actor_loss", "seq-mean-token-sum-norm + entropy 0.01", "verl",
        lambda: P.verl_actor_loss(old, lp, adv, m, ref, dtype=dt, use_kl_loss=True,
                                  loss_agg_mode="seq-mean-token-sum-norm", entropy=np.abs(ref),
                                  entropy_coeff=0.01))
    if dt == "float32":
        add("verl_actor_loss", "== policy loss + 0.001 k3 (pieces)", "verl", lambda: same(
            P.verl_actor_loss(old, lp, adv, m, ref, use_kl_loss=True), verl_pieces(b, 0.001), 1e-6))
    for name in ("grpo", "grpo_vectorized", "rloo", "rloo_vectorized", "opo", "grpo_passk"):
        add("verl_outcome_advantages", name, "verl",
            lambda n=name: P.verl_outcome_advantages(b["rewards"], m, b["G"], name=n))
    add("verl_outcome_advantages", "grpo no std (Dr. GRPO)", "verl",
        lambda: P.verl_outcome_advantages(b["rewards"], m, b["G"], norm_adv_by_std_in_grpo=False))
    add("verl_logprobs_from_logits", "", "verl",
        lambda: P.verl_logprobs_from_logits(b["logits"], b["ids"], dtype=dt))
    add("verl_entropy_from_logits", "", "verl",
        lambda: P.verl_entropy_from_logits(b["logits"], dtype=dt))
    add("verl_get_response_mask", "eos=2", "verl",
        lambda: P.verl_get_response_mask(b["ids"], b["eos"]))

    # TRL
    for lt in P.TRL_LOSS_TYPES:
        for level in ("token", "sequence"):
            add("trl_grpo_loss", f"{lt} {level} beta=0.04", "trl",
                lambda lt=lt, level=level: P.trl_grpo_loss(
                    lp, adv, m, old, ref, dtype=dt, loss_type=lt, importance_sampling_level=level,
                    beta=0.04, max_completion_length=b["T"]))
    add("trl_grpo_loss", "defaults (dapo, beta=0, on-policy)", "trl",
        lambda: P.trl_grpo_loss(lp, adv, m, dtype=dt))
    add("trl_grpo_loss", "grpo eps .2/.28 delta=3 no-bias-corr", "trl", lambda: P.trl_grpo_loss(
        lp, adv, m, old, ref, dtype=dt, loss_type="grpo", beta=0.04, epsilon_high=0.28, delta=3.0,
        use_bias_correction_kl=False))
    add("trl_grpo_loss", "dapo grad-accum 2, num_items 2x", "trl", lambda: P.trl_grpo_loss(
        lp, adv, m, old, dtype=dt, gradient_accumulation_steps=2, num_items_in_batch=2 * m.sum()))
    # The minimal trainer object of trl_grpo_loss against a real GRPOTrainer (its own __init__).
    for lt in P.TRL_LOSS_TYPES:
        kw = dict(loss_type=lt, beta=0.04, epsilon_high=0.28, max_completion_length=b["T"],
                  num_generations=b["G"], gradient_accumulation_steps=2)
        add("trl_real_trainer_loss", f"{lt} == trl_grpo_loss", "trl", lambda kw=kw: same(
            P.trl_real_trainer_loss(lp, adv, m, old, ref, dtype=dt, **kw),
            P.trl_grpo_loss(lp, adv, m, old, ref, dtype=dt, **kw), 0.0))
    for kw in ({}, {"scale_rewards": "batch"}, {"scale_rewards": "none"},
               {"mask_truncated_completions": True}):
        case = " ".join(f"{k}={v}" for k, v in kw.items()) or "defaults (scale_rewards=group)"
        add("trl_generate_and_score", case, "trl", lambda kw=kw: P.trl_generate_and_score(
            b["completions"], b["rewards"], eos_token_id=b["eos"], pad_token_id=b["pad"],
            num_generations=b["G"], **kw))
    add("trl_selective_log_softmax", "", "trl",
        lambda: P.trl_selective_log_softmax(b["logits"], b["ids"], dtype=dt))
    add("trl_entropy_from_logits", "", "trl",
        lambda: P.trl_entropy_from_logits(b["logits"], dtype=dt))

    # tunix
    for variant in ("grpo", "dapo", "drgrpo"):
        add("tunix_grpo_loss", f"{variant} defaults", "tunix", lambda v=variant: P.tunix_grpo_loss(
            lp, adv, m, old, ref, variant=v, dtype=dt, num_generations=b["G"]))
    add("tunix_grpo_loss", "grpo on-policy (old=None)", "tunix", lambda: P.tunix_grpo_loss(
        lp, adv, m, None, ref, dtype=dt, num_generations=b["G"]))
    add("tunix_grpo_loss", "gspo-token eps_high=.28 eps_c=3 k3", "tunix", lambda: P.tunix_grpo_loss(
        lp, adv, m, old, ref, dtype=dt, num_generations=b["G"], loss_algo="gspo-token",
        epsilon_high=0.28, epsilon_c=3.0, kl_loss_mode="low_var_kl"))
    for mode in P.TUNIX_AGG_MODES:
        add("tunix_grpo_loss", f"grpo {mode}", "tunix", lambda mo=mode: P.tunix_grpo_loss(
            lp, adv, m, old, ref, dtype=dt, num_generations=b["G"], loss_agg_mode=mo))
        add("tunix_aggregate_loss", mode, "tunix", lambda mo=mode: P.tunix_aggregate_loss(
            b["loss_mat"], m, mo, dtype=dt))
    add("tunix_ppo_policy_loss", "eps_c=3", "tunix", lambda: P.tunix_ppo_policy_loss(
        lp, adv, m, old, ref, dtype=dt, epsilon_c=3.0))
    for method in P.TUNIX_KL_METHODS:
        add("tunix_kl", method, "tunix", lambda me=method: P.tunix_kl(lp, ref, me, dtype=dt))
    for name in ("grpo", "rloo", "drgrpo"):
        add("tunix_advantages", name, "tunix",
            lambda n=name: P.tunix_advantages(b["rewards"], b["G"], name=n))
    add("tunix_selective_log_softmax", "", "tunix",
        lambda: P.tunix_selective_log_softmax(b["logits"], b["ids"], dtype=dt))
    add("tunix_compute_entropy_from_logits", "", "tunix",
        lambda: P.tunix_compute_entropy_from_logits(b["logits"], dtype=dt))
    add("tunix_make_completion_mask", "eos=2", "tunix",
        lambda: P.tunix_make_completion_mask(b["ids"], b["eos"]))
    return out


def fmt(a, n=3) -> str:
    a = np.asarray(a, np.float64)
    if a.ndim == 0:
        return f"{float(a):.6g}"
    flat = a.reshape(-1)[:n]
    return "[" + " ".join(f"{x:.4g}" for x in flat) + (" ..]" if a.size > n else "]")


def pad_grad(res, mask) -> str:
    """max |d loss / d input| on padded positions, for scalar losses over [B, T] inputs."""
    g = res.grad
    if g is None or np.ndim(res.value) != 0 or g.ndim < 2 or g.shape[:2] != mask.shape:
        return "-"
    return f"{np.abs(g[~mask]).max():.1e}" if (~mask).any() else "0"


def cpu_gaps() -> list[tuple[str, str]]:
    """What a CPU machine lacks that the peers use on GPUs, and what the peers do instead."""
    rows = []
    for mod, why in (("flash_attn", "verl logprobs_from_logits' flash-attn Triton cross-entropy"),
                     ("triton", "TRL's fused log-prob/entropy kernel (trl.kernels)"),
                     ("vllm", "TRL/verl rollouts (use_vllm) and verl's vLLM workers"),
                     ("torch_npu", "verl's Ascend NPU cross-entropy")):
        try:
            importlib.import_module(mod)
            rows.append((mod, "importable"))
        except Exception as e:  # noqa: BLE001
            rows.append((mod, f"{type(e).__name__}: {e} -> not used: {why}"))
    try:
        import torch

        rows.append(("torch.cuda",
                     f"available={torch.cuda.is_available()} (torch {torch.__version__})"))
    except Exception as e:  # noqa: BLE001
        rows.append(("torch", f"{type(e).__name__}: {e}"))
    try:
        import jax

        rows.append(("jax backend", f"{jax.default_backend()} {jax.devices()}"))
    except Exception as e:  # noqa: BLE001
        rows.append(("jax", f"{type(e).__name__}: {e}"))
    try:
        import verl.utils.torch_functional as F

        rows.append(("verl FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE",
                     str(F.FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE)))
    except Exception as e:  # noqa: BLE001
        rows.append(("verl.utils.torch_functional", f"{type(e).__name__}: {e}"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("--group-sizes", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--num-groups", type=int, default=2)
    ap.add_argument("--length", type=int, default=12, help="padded response length T")
    ap.add_argument("--dtypes", nargs="+", default=list(P.DTYPES), choices=P.DTYPES)
    ap.add_argument("--only", nargs="+", choices=["verl", "trl", "tunix"], default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--traceback", action="store_true", help="print full tracebacks of failures")
    args = ap.parse_args(argv)

    print("# versions")
    for k, v in P.versions().items():
        print(f"  {k:14s} {v}")
    print("\n# peer functions (installed source)")
    for name, info in P.peer_functions().items():
        if "error" in info:
            print(f"  {name:34s} {info['path']}  IMPORT FAILS: {info['error']}")
        else:
            sig = info["signature"]
            sig = sig if len(sig) <= 400 else sig[:400] + " ...)"
            print(f"  {name:34s} {info['path']}{sig}")
            print(f"  {'':34s} {info['file']}:{info['line']}")
    print("\n# CPU machine: what the peers' GPU paths need and do not find")
    for k, v in cpu_gaps():
        print(f"  {k:44s} {v}")

    header = (f"{'adapter':34s} {'case':40s} {'dtype':8s} {'G':>2s} {'status':6s} {'value':9s} "
              f"{'grad':9s} {'value[:3]':34s} {'grad[:3]':34s} pad|g|")
    print("\n# calls\n" + header + "\n" + "-" * len(header))
    failed, refused, ok = [], [], 0
    t0 = time.time()
    for G in args.group_sizes:
        b = make_batch(G, args.num_groups, args.length, args.seed + G)
        for dt in args.dtypes:
            for adapter, case, peer, thunk in cases(b, dt):
                if args.only and peer not in args.only:
                    continue
                try:
                    res = thunk()
                except Exception as e:  # noqa: BLE001 - printed, the run goes on
                    msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
                    key = (adapter, case)
                    tag = "REFUSE" if key in EXPECTED else "FAIL"
                    (refused if key in EXPECTED else failed).append((adapter, case, dt, G, msg))
                    print(f"{adapter:34s} {case:40.40s} {dt:8s} {G:2d} {tag:6s} {msg}")
                    if args.traceback and tag == "FAIL":
                        traceback.print_exc()
                    continue
                ok += 1
                vs = "x".join(map(str, np.shape(res.value))) or "()"
                gs = "-" if res.grad is None else ("x".join(map(str, res.grad.shape)) or "()")
                gv = fmt(res.grad) if res.grad is not None else "-"
                last = pad_grad(res, b["mask"])
                if "|d loss|" in res.extra:  # a cross-check row: the differences instead
                    last = f"d={res.extra['|d loss|']:.1e}/{res.extra['|d grad|']:.1e}"
                print(f"{adapter:34s} {case:40.40s} {dt:8s} {G:2d} {'ok':6s} {vs:9s} {gs:9s} "
                      f"{fmt(res.value):34.34s} {gv:34.34s} {last}")
    print(f"\n# {ok} ok, {len(refused)} refused by the peer (documented), {len(failed)} failed "
          f"in {time.time() - t0:.0f} s")
    for adapter, case, dt, G, msg in refused:
        print(f"  refused: {adapter} [{case}] {dt} G={G}: {msg}  ({EXPECTED[(adapter, case)]})")
    for adapter, case, dt, G, msg in failed:
        print(f"  FAILED: {adapter} [{case}] {dt} G={G}: {msg}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
