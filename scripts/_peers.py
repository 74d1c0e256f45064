"""Adapters that call the peers' OWN GRPO/PPO loss code (verl, TRL, tunix) on NumPy inputs.

Issue 17 item 4, peer side: a later change compares jaxkl's presets with what these return.
Nothing of the peers' code is copied here. Each adapter imports the peer's function from the
installed package and calls it; the only code of ours converts arrays and builds the minimal
config (or trainer object) that the function reads.

Environment (run from the repository root)::

    bash scripts/peers_env.sh           # makes .venv-peers/: verl, trl, google-tunix, CPU torch
    .venv-peers/bin/python scripts/peers_smoke.py
    .venv-peers/bin/python -c "import sys; sys.path.insert(0, 'scripts'); import _peers"

Conventions, for every adapter:

* Floating inputs are NumPy float32 plus ``dtype="float32" | "bfloat16"``. The log-prob inputs
  (current, old, reference) and loss matrices / logits are cast to that dtype in the peer's own
  framework (torch for verl and TRL, JAX for tunix) before the call, as a bf16 run hands them
  over. Advantages and rewards stay float32, as all three peers keep them.
* Masks are bool ``[B, T]`` and right-padded (every row is ones then zeros). Each adapter converts
  the mask to the dtype the peer's own trainer passes: verl ``bool`` (verl/workers/utils/losses.py
  ``ppo_loss`` does ``.to(bool)``), TRL ``int64`` (``completion_mask`` is ``torch.long``), tunix
  ``bool`` (``np.not_equal(completion_ids, pad)`` in
  ``GRPOLearner._generate_and_compute_advantage``).
* Token ids are integer arrays. Group layout is flat and contiguous: rows ``g*G .. g*G+G-1`` are one
  prompt's ``G`` completions, as all three peers lay batches out.
* Every adapter returns :class:`Result`: ``value`` (a scalar loss as a 0-d float32 array, or
  per-token values ``[B, T]``), ``grad`` (d value / d input, from the peer's autograd:
  ``torch.autograd`` or ``jax.grad``; for per-token functions the element-wise derivative, i.e.
  the gradient of the sum),
  and ``extra`` (the peer's metrics / aux, as floats). bf16 values and gradients are upcast exactly.

:func:`peer_functions` gives, for each adapter, the peer function it calls with its module path,
signature, source file and line at the installed version; :func:`versions` the installed versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import inspect
import tempfile
from collections import defaultdict, deque
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

DTYPES = ("float32", "bfloat16")

# verl 0.9.1, verl/trainer/ppo/core_algos.py: kl_penalty strips one trailing "+" (straight-through
# k2 gradient) and dispatches kl_penalty_forward on "kl"/"k1", "abs", "mse"/"k2", "low_var_kl"/"k3";
# "full" raises NotImplementedError there. The smoke test tries every candidate and reports.
VERL_KL_CANDIDATES = (
    "kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3",
    "kl+", "k1+", "abs+", "mse+", "k2+", "low_var_kl+", "k3+", "full",
)
# verl/workers/config/actor.py ActorConfig.__post_init__ valid_loss_agg_modes (agg_loss's modes).
VERL_AGG_MODES = (
    "token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)
# TRL 1.16.0 GRPOTrainer._compute_loss: the loss types it aggregates.
TRL_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "sapo", "vespo")
# tunix 0.1.7 tunix/rl/common.py aggregate_loss and compute_kl_divergence.
TUNIX_AGG_MODES = (
    "token-mean", "sequence-mean-token-mean", "sequence-mean-token-scale", "seq-mean-token-sum",
    "sequence-mean-token-sum-norm",
)
TUNIX_KL_METHODS = ("kl", "mse_kl", "low_var_kl")


class Result(NamedTuple):
    """What every adapter returns (see the module docstring)."""

    value: np.ndarray
    grad: np.ndarray | None
    extra: dict


def versions() -> dict[str, str]:
    """Installed versions of the peers and the frameworks they run on."""
    out = {}
    for dist in ("verl", "trl", "google-tunix", "torch", "transformers", "accelerate", "jax",
                 "jaxlib", "flax", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# --------------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------------


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")


def _tt(x, dtype: str = "float32", grad: bool = False):
    """NumPy -> torch tensor of `dtype` (a fresh leaf; requires_grad when `grad`)."""
    import torch

    _check_dtype(dtype)
    t = torch.from_numpy(np.array(x, dtype=np.float32)).to(getattr(torch, dtype)).clone()
    return t.requires_grad_(grad)


def _tn(t) -> np.ndarray:
    """torch -> NumPy float32 (bf16 upcast exactly)."""
    return t.detach().float().cpu().numpy()


def _jdt(dtype: str):
    import jax.numpy as jnp

    _check_dtype(dtype)
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]


def _jx(x, dtype: str = "float32"):
    import jax.numpy as jnp

    return jnp.asarray(np.asarray(x, np.float32)).astype(_jdt(dtype))


def _jn(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32) if np.asarray(a).dtype != np.float32 else np.asarray(a)


def _scalars(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            if hasattr(v, "detach"):
                v = v.detach().float()
            a = np.asarray(v, dtype=np.float64)
            out[k] = float(a) if a.ndim == 0 else a.tolist()
        except (TypeError, ValueError):
            out[k] = repr(v)
    return out


def _right_padded(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [B, T], got shape {mask.shape}")
    lengths = mask.sum(-1)
    if not np.array_equal(mask, np.arange(mask.shape[1])[None, :] < lengths[:, None]):
        raise ValueError("mask must be right-padded (each row ones then zeros)")
    return lengths


def _token_advantages(advantages, mask) -> np.ndarray:
    """[B] -> [B, T] as verl's GRPO estimator lays them out (scores.unsqueeze(-1) * mask)."""
    adv = np.asarray(advantages, np.float32)
    if adv.ndim == 1:
        adv = adv[:, None] * np.asarray(mask, np.float32)
    return adv


# --------------------------------------------------------------------------------------------------
# verl
# --------------------------------------------------------------------------------------------------


def _verl():
    from verl.trainer.ppo import core_algos

    return core_algos


def verl_actor_config(loss_mode: str = "vanilla", loss_agg_mode: str = "token-mean", *,
                      global_batch_info: dict | None = None, policy_loss: dict | None = None,
                      **actor: Any):
    """The minimal verl ``ActorConfig`` the policy losses read.

    ``ActorConfig`` (verl/workers/config/actor.py) needs ``strategy``, ``rollout_n`` and a micro
    batch size only to validate; every loss field keeps verl's default unless given in ``actor``
    (e.g. ``clip_ratio_low``, ``clip_ratio_high``, ``clip_ratio_c``, ``loss_scale_factor``,
    ``tau_pos``, ``use_kl_loss``, ``kl_loss_type``, ``kl_loss_coef``, ``entropy_coeff``).
    ``policy_loss`` overrides ``PolicyLossConfig`` fields (``clip_cov_ratio``, ``dro_beta`` ...).
    Note verl's defaults ``clip_ratio_low = clip_ratio_high = 0.2`` (not None), so ``clip_ratio``
    alone changes nothing in ``compute_policy_loss_vanilla``.
    """
    from verl.workers.config import ActorConfig, PolicyLossConfig

    actor = dict(actor)
    actor.setdefault("strategy", "fsdp")
    actor.setdefault("rollout_n", 1)
    actor.setdefault("ppo_micro_batch_size_per_gpu", 1)
    return ActorConfig(
        policy_loss=PolicyLossConfig(loss_mode=loss_mode, **(policy_loss or {})),
        loss_agg_mode=loss_agg_mode,
        global_batch_info=dict(global_batch_info or {}),
        **actor,
    )


def verl_kl_penalty(logprob, ref_logprob, name: str, *, dtype: str = "float32") -> Result:
    """``verl.trainer.ppo.core_algos.kl_penalty(logprob, ref_logprob, kl_penalty=name)``.

    Per-token values ``[B, T]`` and their element-wise derivative in ``logprob`` (for "k3+" etc.
    the straight-through k2 gradient verl defines).
    """
    import torch

    ca = _verl()
    lp = _tt(logprob, dtype, grad=True)
    ref = _tt(ref_logprob, dtype)
    v = ca.kl_penalty(lp, ref, name)
    (g,) = torch.autograd.grad(v.sum(), lp, allow_unused=True)
    return Result(_tn(v), None if g is None else _tn(g), {})


def verl_agg_loss(loss_mat, mask, loss_agg_mode: str, *, dtype: str = "float32", dp_size: int = 1,
                  batch_num_tokens: int | None = None, global_batch_size: int | None = None,
                  loss_scale_factor: float | None = None) -> Result:
    """``core_algos.agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size, batch_num_tokens,
    global_batch_size, loss_scale_factor)``; ``grad`` is d loss / d loss_mat."""
    import torch

    ca = _verl()
    lm = _tt(loss_mat, dtype, grad=True)
    m = torch.from_numpy(np.asarray(mask, bool))
    loss = ca.agg_loss(loss_mat=lm, loss_mask=m, loss_agg_mode=loss_agg_mode, dp_size=dp_size,
                       batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size,
                       loss_scale_factor=loss_scale_factor)
    (g,) = torch.autograd.grad(loss, lm)
    return Result(_tn(loss), _tn(g), {})


def verl_policy_loss_names() -> list[str]:
    """The names ``core_algos.get_policy_loss_fn`` accepts (its ``POLICY_LOSS_REGISTRY``)."""
    return list(_verl().POLICY_LOSS_REGISTRY)


def verl_policy_loss(old_logprob, logprob, advantages, mask, *, loss_mode: str = "vanilla",
                     loss_agg_mode: str = "token-mean", dtype: str = "float32",
                     global_batch_info: dict | None = None, rollout_is_weights=None,
                     policy_loss: dict | None = None, **actor: Any) -> Result:
    """``core_algos.get_policy_loss_fn(loss_mode)(old_log_prob, log_prob, advantages,
    response_mask, loss_agg_mode, config, rollout_is_weights)``.

    ``loss_mode="vanilla"`` is ``compute_policy_loss_vanilla`` (dual clip with
    ``clip_ratio_c``, default 3.0), ``"gspo"`` is ``compute_policy_loss_gspo``; every name of
    :func:`verl_policy_loss_names` works the same way. ``advantages`` is ``[B]`` (broadcast to
    ``[B, T]`` times the mask, as verl's GRPO estimator returns them) or ``[B, T]``. ``actor`` and
    ``policy_loss`` are config overrides (:func:`verl_actor_config`). ``global_batch_info`` is what
    verl's trainer puts there (``dp_size``, ``batch_num_tokens``, ``global_batch_size``,
    ``loss_scale_factor``); empty means ``agg_loss``'s local defaults.
    ``grad`` is d loss / d log_prob.
    """
    import torch

    ca = _verl()
    cfg = verl_actor_config(loss_mode, loss_agg_mode, global_batch_info=global_batch_info,
                            policy_loss=policy_loss, **actor)
    lp = _tt(logprob, dtype, grad=True)
    old = _tt(old_logprob, dtype)
    adv = torch.from_numpy(_token_advantages(advantages, mask))
    m = torch.from_numpy(np.asarray(mask, bool))
    w = rollout_is_weights
    w = None if w is None else torch.from_numpy(np.asarray(w, np.float32))
    fn = ca.get_policy_loss_fn(loss_mode)
    loss, metrics = fn(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=m,
                       loss_agg_mode=loss_agg_mode, config=cfg, rollout_is_weights=w)
    (g,) = torch.autograd.grad(loss, lp, allow_unused=True)
    return Result(_tn(loss), None if g is None else _tn(g), _scalars(metrics))


def verl_actor_loss(old_logprob, logprob, advantages, mask, ref_logprob=None, *,
                    loss_mode: str = "vanilla", loss_agg_mode: str = "token-mean",
                    dtype: str = "float32", use_kl_loss: bool = False,
                    kl_loss_type: str = "low_var_kl", kl_loss_coef: float = 0.001,
                    entropy=None, entropy_coeff: float = 0.0, dp_size: int = 1,
                    batch_num_tokens: int | None = None, global_batch_size: int | None = None,
                    policy_loss: dict | None = None, **actor: Any) -> Result:
    """verl's whole actor loss: ``verl.workers.utils.losses.ppo_loss(config, model_output, data)``.

    That is the policy loss of ``loss_mode`` + ``kl_loss_coef * agg_loss(kl_penalty(log_prob,
    ref_log_prob, kl_loss_type))`` when ``use_kl_loss`` (verl's GRPO recipe: ``use_kl_loss=True``,
    ``kl_loss_type="low_var_kl"``) - ``entropy_coeff * agg_loss(entropy)`` when ``entropy`` is
    given, every term aggregated with ``loss_agg_mode`` and the global batch info. verl's engines
    set ``batch_num_tokens`` to the mini-batch's token count summed over data-parallel ranks and
    ``global_batch_size`` to ``ppo_mini_batch_size * rollout.n`` (verl/trainer/ppo/ray_trainer.py);
    the defaults here are this batch's (``mask.sum()`` and ``B``), i.e. one mini-batch on one rank.

    ``ppo_loss`` reads the log-probs as the engine's no-padding output (one flat row per batch,
    prompt then response, shifted by one token); the adapter lays the ``[B, T]`` leaf out that way
    with a one-token prompt, so ``grad`` is d loss / d log_prob ``[B, T]`` (zero on padding).
    """
    import torch
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    lengths = _right_padded(mask)
    B, T = np.asarray(mask).shape
    actor = dict(actor, use_kl_loss=use_kl_loss, kl_loss_type=kl_loss_type,
                 kl_loss_coef=kl_loss_coef, entropy_coeff=entropy_coeff)
    cfg = verl_actor_config(loss_mode, loss_agg_mode, policy_loss=policy_loss, **actor)
    lp = _tt(logprob, dtype, grad=True)
    zero = torch.zeros(1, dtype=lp.dtype)

    def flat(x):  # [B, T] -> the engine's no-padding layout: row i = [prompt(1), response(len_i)]
        return torch.cat([torch.cat([x[i, : int(n)], zero]) for i, n in enumerate(lengths)])

    m = torch.from_numpy(np.asarray(mask, bool))
    fields = {
        "prompts": torch.ones(B, 1, dtype=torch.long),
        "responses": torch.zeros(B, T, dtype=torch.long),
        "attention_mask": torch.cat([torch.ones(B, 1, dtype=torch.long), m.long()], dim=1),
        "response_mask": m.long(),
        "old_log_probs": _tt(old_logprob, dtype),
        "advantages": torch.from_numpy(_token_advantages(advantages, mask)),
    }
    if ref_logprob is not None:
        fields["ref_log_prob"] = _tt(ref_logprob, dtype)
    data = TensorDict(fields, batch_size=[B])
    tu.assign_non_tensor(
        data,
        dp_size=dp_size,
        batch_num_tokens=(int(np.asarray(mask).sum()) if batch_num_tokens is None
                          else batch_num_tokens),
        global_batch_size=B if global_batch_size is None else global_batch_size,
    )
    output = {"log_probs": flat(lp)}
    if entropy is not None:
        output["entropy"] = flat(_tt(entropy, dtype))
    loss, metrics = ppo_loss(cfg, output, data)
    (g,) = torch.autograd.grad(loss, lp)
    extra = {k: v.aggregate() if hasattr(v, "aggregate") else v for k, v in metrics.items()}
    return Result(_tn(loss), _tn(g), _scalars(extra))


def verl_outcome_advantages(rewards, mask, group_size: int, *, name: str = "grpo",
                            **kwargs: Any) -> Result:
    """``core_algos.get_adv_estimator_fn(name)(token_level_rewards, response_mask, index, ...)``.

    ``rewards`` ``[B]`` is placed on each row's last valid token (where verl's reward manager puts
    it); ``index`` groups contiguous rows of ``group_size``. ``kwargs`` go to the estimator
    (``norm_adv_by_std_in_grpo``, ``epsilon``, ``config``); estimators other than "grpo" get
    ``config=AlgoConfig(norm_adv_by_std_in_grpo=...)`` as verl's ``ray_trainer.compute_advantage``
    gives them. ``value`` is the ``[B, T]`` advantages.
    """
    import torch

    ca = _verl()
    if name != "grpo" and "config" not in kwargs:
        # verl's ray_trainer.compute_advantage passes the other estimators ``config=AlgoConfig``
        # (which carries norm_adv_by_std_in_grpo) and no norm flag of their own.
        from verl.trainer.config import AlgoConfig

        kwargs["config"] = AlgoConfig(
            norm_adv_by_std_in_grpo=kwargs.pop("norm_adv_by_std_in_grpo", True))
    lengths = _right_padded(mask)
    B, T = np.asarray(mask).shape
    tlr = np.zeros((B, T), np.float32)
    rows = np.nonzero(lengths)[0]
    tlr[rows, lengths[rows] - 1] = np.asarray(rewards, np.float32)[rows]
    index = np.array([f"g{i // group_size}" for i in range(B)], dtype=object)
    fn = ca.get_adv_estimator_fn(name)
    adv, ret = fn(token_level_rewards=torch.from_numpy(tlr),
                  response_mask=torch.from_numpy(np.asarray(mask)).long(), index=index, **kwargs)
    return Result(_tn(adv), None, {"returns": _tn(ret).tolist()})


def verl_logprobs_from_logits(logits, labels, *, dtype: str = "float32") -> Result:
    """``verl.utils.torch_functional.logprobs_from_logits(logits, labels)``; grad d sum / d logits.

    Without flash-attn (and torch_npu) it runs ``logprobs_from_logits_v2``; ``extra`` says which.
    """
    import torch
    import verl.utils.torch_functional as F

    lg = _tt(logits, dtype, grad=True)
    out = F.logprobs_from_logits(lg, torch.from_numpy(np.asarray(labels, np.int64)))
    (g,) = torch.autograd.grad(out.sum(), lg)
    path = ("flash_attn" if F.FLAH_ATTN_CROSS_ENTROPY_LOSS_AVAILABLE
            else "torch_npu" if F.NPU_CROSS_ENTROPY_LOSS_AVAILABLE else "logprobs_from_logits_v2")
    return Result(_tn(out), _tn(g), {"path": path, "out_dtype": str(out.dtype)})


def verl_entropy_from_logits(logits, *, dtype: str = "float32") -> Result:
    """``verl.utils.torch_functional.entropy_from_logits(logits)``; grad d sum / d logits."""
    import torch
    import verl.utils.torch_functional as F

    lg = _tt(logits, dtype, grad=True)
    out = F.entropy_from_logits(lg)
    (g,) = torch.autograd.grad(out.sum(), lg)
    return Result(_tn(out), _tn(g), {"out_dtype": str(out.dtype)})


def verl_get_response_mask(response_ids, eos_token: int | list[int]) -> Result:
    """``verl.utils.torch_functional.get_response_mask(response_id, eos_token)``: ones up to and
    including the first EOS."""
    import torch
    import verl.utils.torch_functional as F

    ids = torch.from_numpy(np.asarray(response_ids, np.int64))
    out = F.get_response_mask(ids, eos_token=eos_token)
    return Result(out.numpy().astype(bool), None, {})


# --------------------------------------------------------------------------------------------------
# TRL
# --------------------------------------------------------------------------------------------------


_TRL_OUTPUT_DIR: list = []


def trl_config(**kwargs: Any):
    """A real ``trl.GRPOConfig``: TRL's own defaults and ``__post_init__`` (e.g.
    ``scale_rewards=True`` -> ``"group"``, ``steps_per_generation`` from the accumulation steps).

    ``report_to="none"`` and ``use_cpu=True`` are added; ``output_dir`` is a temporary folder (never
    written: nothing trains). A new one per call (well under a millisecond): building a
    ``TrainingArguments`` resets accelerate's process-wide state, which leaves an older config's
    cached ``distributed_state`` and any ``Accelerator`` made before it unusable.
    """
    from trl import GRPOConfig

    if not _TRL_OUTPUT_DIR:
        _TRL_OUTPUT_DIR.append(tempfile.mkdtemp(prefix="trl-grpo-"))
    kwargs = dict(kwargs)
    kwargs.setdefault("report_to", "none")
    kwargs.setdefault("use_cpu", True)
    return GRPOConfig(output_dir=_TRL_OUTPUT_DIR[0], **kwargs)


def _trl_accelerator():
    """A single-process CPU ``Accelerator`` (gather / reduce are identities), made after the
    config (see :func:`trl_config`)."""
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _trl_trainer(args):
    """A ``GRPOTrainer`` without its ``__init__`` (which needs a model, a tokenizer, a dataset).

    The attributes set here are the ones ``_compute_loss`` and ``_generate_and_score_completions``
    read, each taken from ``args`` exactly as ``GRPOTrainer.__init__`` sets it
    (trl/trainer/grpo_trainer.py, trl 1.16.0: ``self.loss_type = args.loss_type``,
    ``self.epsilon_low = args.epsilon``, ``self.epsilon_high = args.epsilon_high if
    args.epsilon_high is not None else args.epsilon``, ``self._entropy_bonus_enabled =
    self.entropy_coef != 0.0 or self.use_adaptive_entropy``, ...).
    ``current_gradient_accumulation_steps`` is what ``transformers.Trainer`` sets during training
    (``args.gradient_accumulation_steps``).
    The seams (``_get_per_token_logps_and_entropies``, ``_generate``, ``_calculate_rewards``), which
    run the model, generate and call reward functions, return given arrays instead.
    """
    from trl.trainer.grpo_trainer import GRPOTrainer

    class _GivenLogps(GRPOTrainer):
        def __init__(self):  # noqa: D107 - skips GRPOTrainer.__init__ on purpose
            pass

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask,
                                               logits_to_keep, batch_size=None,
                                               compute_entropy=False, **_):
            logps = self._seam_ref_logps if model is self.ref_model else self._seam_logps
            return logps, (self._seam_entropies if compute_entropy else None), None

        def _generate(self, prompts):
            return self._seam_generate

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            return self._seam_rewards

    t = _GivenLogps()
    t.args = args
    for name in ("loss_type", "beta", "importance_sampling_level", "off_policy_mask_threshold",
                 "top_entropy_quantile", "entropy_coef", "use_adaptive_entropy", "use_vllm",
                 "vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
                 "vllm_importance_sampling_clip_max", "vllm_importance_sampling_clip_min",
                 "max_completion_length", "num_generations", "scale_rewards",
                 "mask_truncated_completions", "multi_objective_aggregation", "num_iterations",
                 "pad_to_multiple_of", "log_multimodal"):
        setattr(t, name, getattr(args, name))
    t.epsilon_low = args.epsilon
    t.epsilon_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    t._entropy_bonus_enabled = t.entropy_coef != 0.0 or t.use_adaptive_entropy
    t._last_world_entropy = float("inf")
    t._entropy_window_stats = None
    t.router_aux_loss_coef = 0.0
    t.aux_loss_enabled = False  # no MoE model here
    t.current_gradient_accumulation_steps = args.gradient_accumulation_steps
    t.accelerator = _trl_accelerator()
    t.model = SimpleNamespace(training=True, is_gradient_checkpointing=False)
    t.ref_model = SimpleNamespace(training=False)  # the seam returns _seam_ref_logps for it
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    t._logs = {"images": deque(), "prompt": deque(), "completion": deque(),
               "rewards": defaultdict(deque), "advantages": deque(), "extra": defaultdict(deque)}
    t._pending_extra_logs = defaultdict(list)
    t._pending_metrics = defaultdict(list)
    t.environment_factories = None
    t.environments = None
    t.tools = None
    return t


def _last_metrics(t) -> dict:
    return {k: v[-1] for k, v in t._metrics["train"].items() if v}


def trl_grpo_loss(logprob, advantages, mask, old_logprob=None, ref_logprob=None, *,
                  dtype: str = "float32", num_items_in_batch: float | None = None,
                  entropies=None, **config: Any) -> Result:
    """``GRPOTrainer._compute_loss(model, inputs)`` (trl 1.16.0), the loss TRL's GRPO trains on.

    ``config`` are ``GRPOConfig`` fields (``beta``, ``epsilon``, ``epsilon_high``, ``delta``,
    ``loss_type``, ``importance_sampling_level``, ``use_bias_correction_kl``,
    ``max_completion_length``, ``gradient_accumulation_steps``, ``top_entropy_quantile``,
    ``entropy_coef``, ``sapo_*``, ``vespo_*`` ...); unset ones keep TRL's defaults
    (:func:`trl_config`). ``old_logprob=None`` is TRL's on-policy case
    (``per_token_logps.detach()``);
    ``ref_logprob`` is required when ``beta != 0``. ``advantages`` is ``[B]`` (or ``[B, T]``).
    ``num_items_in_batch`` (read by the dapo/cispo/vespo losses) defaults to ``mask.sum()``, what
    ``_generate_and_score_completions`` computes on one process. ``entropies`` (``[B, T]``, default
    zeros) only feed the entropy bonus, the entropy mask and the metrics.
    ``grad`` is d loss / d per_token_logps; ``extra`` the metrics ``_compute_loss`` logged.
    """
    import torch

    args = trl_config(**config)
    t = _trl_trainer(args)
    B, T = np.asarray(mask).shape
    lp = _tt(logprob, dtype, grad=True)
    ent = _tt(np.zeros((B, T)) if entropies is None else entropies, dtype)
    t._seam_logps = lp
    t._seam_entropies = ent
    m = torch.from_numpy(np.asarray(mask, bool)).long()
    inputs = {
        "prompt_ids": torch.ones(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": m,
        "advantages": torch.from_numpy(np.asarray(advantages, np.float32)),
        "num_items_in_batch": torch.tensor(float(m.sum()) if num_items_in_batch is None
                                           else float(num_items_in_batch)),
    }
    if old_logprob is not None:
        inputs["old_per_token_logps"] = _tt(old_logprob, dtype)
    if ref_logprob is not None:
        inputs["ref_per_token_logps"] = _tt(ref_logprob, dtype)
    loss = t._compute_loss(t.model, inputs)
    (g,) = torch.autograd.grad(loss, lp)
    return Result(_tn(loss), _tn(g), _scalars(_last_metrics(t)))


_TINY_HF: dict = {}


def _tiny_hf_model():
    """A 1-layer random Llama (vocabulary 16) and a word-level tokenizer, saved to a temporary
    folder: enough for ``GRPOTrainer.__init__`` to run for real, without downloading anything."""
    if "dir" not in _TINY_HF:
        import transformers
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import Whitespace

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        path = tempfile.mkdtemp(prefix="tiny-llama-")
        words = ["<pad>", "<eos>", "<unk>"] + [f"t{i}" for i in range(13)]
        tk = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
        tk.pre_tokenizer = Whitespace()
        tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>",
                                                   pad_token="<pad>", unk_token="<unk>")
        cfg = transformers.LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2,
                                       num_key_value_heads=2, max_position_embeddings=64,
                                       eos_token_id=1, pad_token_id=0)
        transformers.LlamaForCausalLM(cfg).save_pretrained(path)
        tok.save_pretrained(path)
        _TINY_HF.update(dir=path, tokenizer=tok)
    return _TINY_HF["dir"], _TINY_HF["tokenizer"]


def trl_real_trainer_loss(logprob, advantages, mask, old_logprob=None, ref_logprob=None, *,
                          dtype: str = "float32", num_items_in_batch: float | None = None,
                          **config: Any) -> Result:
    """:func:`trl_grpo_loss` on a REAL ``GRPOTrainer`` (its own ``__init__`` on a tiny random
    Llama, :func:`_tiny_hf_model`), with only ``_get_per_token_logps_and_entropies`` replaced on
    the instance. For checking that the minimal object of :func:`trl_grpo_loss` reads ``args`` as
    TRL does; slower (a trainer per call, ~0.1 s). ``current_gradient_accumulation_steps`` is set to
    ``args.gradient_accumulation_steps`` and the model put in training mode, as ``Trainer`` does
    when training starts."""
    import torch
    from datasets import Dataset
    from trl import GRPOTrainer

    path, tok = _tiny_hf_model()
    config.setdefault("per_device_train_batch_size", config.get("num_generations", 8))
    args = trl_config(**config)
    trainer = GRPOTrainer(model=path, args=args, processing_class=tok,
                          reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                          train_dataset=Dataset.from_dict({"prompt": ["t1 t2"] * 2}))
    B, T = np.asarray(mask).shape
    lp = _tt(logprob, dtype, grad=True)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (lp, torch.zeros(B, T), None)
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps
    trainer.model.train()  # as Trainer's training loop does; _compute_loss reads model.training
    m = torch.from_numpy(np.asarray(mask, bool)).long()
    inputs = {
        "prompt_ids": torch.ones(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": m,
        "advantages": torch.from_numpy(np.asarray(advantages, np.float32)),
        "num_items_in_batch": torch.tensor(float(m.sum()) if num_items_in_batch is None
                                           else float(num_items_in_batch)),
    }
    if old_logprob is not None:
        inputs["old_per_token_logps"] = _tt(old_logprob, dtype)
    if ref_logprob is not None:
        inputs["ref_per_token_logps"] = _tt(ref_logprob, dtype)
    loss = trainer._compute_loss(trainer.model, inputs)
    (g,) = torch.autograd.grad(loss, lp)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if v}
    return Result(_tn(loss), _tn(g), _scalars(metrics))


def trl_generate_and_score(completion_ids: list[list[int]], rewards, *, eos_token_id: int,
                           pad_token_id: int, ref_logprob=None, old_logprob=None,
                           **config: Any) -> Result:
    """``GRPOTrainer._generate_and_score_completions(inputs)`` with generation and reward calls
    replaced by the given completions and rewards: TRL's own padding,
    ``mask_truncated_completions``,
    ``num_items_in_batch`` and group advantages (``scale_rewards`` "group" / "batch" / "none",
    ``multi_objective_aggregation``, ``reward_weights``).

    ``completion_ids`` is one token list per completion (unpadded, as generated); ``rewards`` is
    ``[B]`` or ``[B, K]`` (K reward functions). ``config`` are ``GRPOConfig`` fields;
    ``num_generations`` is the group size. ``value`` is the ``[B]`` advantages; ``extra`` holds
    ``completion_mask`` (``[B, T]``), ``num_items_in_batch``, ``completion_ids`` (right-padded) and
    the logged reward metrics. ``ref_logprob`` / ``old_logprob`` ``[B, T]`` are what the
    reference / old-policy forward would return (needed when ``beta != 0`` / when TRL computes
    old log-probs).
    """
    import torch

    config.setdefault("per_device_train_batch_size", len(completion_ids))
    args = trl_config(**config)
    t = _trl_trainer(args)
    t.eos_token_ids = [eos_token_id]
    t._tokenizer = SimpleNamespace(pad_token_id=pad_token_id)
    r = np.asarray(rewards, np.float32)
    r = r[:, None] if r.ndim == 1 else r
    B, K = r.shape
    t.reward_func_names = [f"reward_{k}" for k in range(K)]
    t.reward_weights = (torch.ones(K) if args.reward_weights is None
                        else torch.tensor(args.reward_weights, dtype=torch.float32))
    prompts = [f"prompt {i // args.num_generations}" for i in range(B)]
    t._seam_generate = ([[1] for _ in range(B)], [list(c) for c in completion_ids], None,
                        [" ".join(map(str, c)) for c in completion_ids], None, {}, None, None)
    t._seam_rewards = torch.from_numpy(r)
    Tmax = max(len(c) for c in completion_ids)
    t._seam_ref_logps = None if ref_logprob is None else _tt(ref_logprob)
    t._seam_logps = None if old_logprob is None else _tt(old_logprob)
    t._seam_entropies = None
    out = t._generate_and_score_completions([{"prompt": p} for p in prompts])
    extra = {
        "completion_mask": out["completion_mask"].numpy().astype(bool),
        "completion_ids": out["completion_ids"].numpy(),
        "num_items_in_batch": float(out["num_items_in_batch"]),
        "max_len": Tmax,
    }
    extra.update(_scalars(_last_metrics(t)))
    return Result(_tn(out["advantages"]), None, extra)


def trl_selective_log_softmax(logits, index, *, temperature: float = 1.0,
                              dtype: str = "float32") -> Result:
    """``trl.trainer.utils.selective_log_softmax(logits, index, temperature)``; grad d sum / d
    logits.

    Uses TRL's Triton kernel only when Triton and a supported device are there; ``extra`` says."""
    import torch
    from trl.trainer import utils as U

    lg = _tt(logits, dtype, grad=True)
    idx = torch.from_numpy(np.asarray(index, np.int64))
    out = U.selective_log_softmax(lg, idx, temperature=temperature)
    (g,) = torch.autograd.grad(out.sum(), lg)
    kernel = bool(U.is_triton_available() and U._supports_trl_loss_kernel(lg, idx, None))
    return Result(_tn(out), _tn(g), {"triton_kernel": kernel, "out_dtype": str(out.dtype)})


def trl_entropy_from_logits(logits, *, dtype: str = "float32", chunk_size: int = 128) -> Result:
    """``trl.trainer.utils.entropy_from_logits(logits, chunk_size)``; grad d sum / d logits."""
    import torch
    from trl.trainer import utils as U

    lg = _tt(logits, dtype, grad=True)
    out = U.entropy_from_logits(lg, chunk_size=chunk_size)
    (g,) = torch.autograd.grad(out.sum(), lg)
    return Result(_tn(out), _tn(g), {"out_dtype": str(out.dtype)})


# --------------------------------------------------------------------------------------------------
# tunix
# --------------------------------------------------------------------------------------------------


def tunix_config(variant: str = "grpo", **overrides: Any):
    """A real tunix algorithm config: ``GRPOConfig`` ("grpo"), ``DAPOConfig`` ("dapo"),
    ``DrGRPOConfig`` ("drgrpo", all in tunix/rl/grpo/) or ``PPOConfig`` ("ppo", tunix/rl/ppo/).

    Overrides that are dataclass fields go to the constructor (so its ``__post_init__`` checks run);
    others are set as attributes, which is how ``grpo_loss_fn`` reads ``epsilon_high`` and
    ``epsilon_c`` from a plain ``GRPOConfig`` (``hasattr`` / ``getattr``, no such fields there).
    ``temperature = 1.0`` is set as ``GRPOLearner.__init__`` sets it from the rollout config (it
    only reaches ``compute_per_token_logps``, which the adapters replace).
    """
    if variant == "ppo":
        from tunix.rl.ppo.ppo_learner import PPOConfig as cls
    elif variant == "dapo":
        from tunix.rl.grpo.dapo_learner import DAPOConfig as cls
    elif variant == "drgrpo":
        from tunix.rl.grpo.drgrpo_learner import DrGRPOConfig as cls
    elif variant == "grpo":
        from tunix.rl.grpo.grpo_learner import GRPOConfig as cls
    else:
        raise ValueError(f"variant must be grpo, dapo, drgrpo or ppo, got {variant!r}")
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    cfg = cls(**{k: v for k, v in overrides.items() if k in init})
    rest = {k: v for k, v in overrides.items() if k not in init}
    rest.setdefault("temperature", 1.0)
    for k, v in rest.items():
        try:
            setattr(cfg, k, v)
        except AttributeError:  # PPOConfig has slots: no attribute beyond its fields
            if k != "temperature":
                raise
    return cfg


@contextlib.contextmanager
def _tunix_given_logps(logps, logits):
    """Replace ``tunix.rl.common.compute_per_token_logps`` (the model forward the loss functions
    call through ``common.``) by one that returns the given arrays, for the duration of one call."""
    from tunix.rl import common

    original = common.compute_per_token_logps

    def given(graphdef, state, *args, return_logits=False, **kwargs):
        return (logps, logits) if return_logits else logps

    common.compute_per_token_logps = given
    try:
        yield
    finally:
        common.compute_per_token_logps = original


def _tunix_loss(fn_name: str, logprob, advantages, mask, old_logprob, ref_logprob, logits,
                dtype: str, cfg, example_cls, extra_fields: dict) -> Result:
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from tunix.rl import algo_core

    class _NoParams(nnx.Module):
        pass

    B, T = np.asarray(mask).shape
    lp = _jx(logprob, dtype)
    lg = jnp.zeros((B, T, 1), _jdt(dtype)) if logits is None else _jx(logits, dtype)
    fn = getattr(algo_core, fn_name)

    def loss_of(x):
        ex = example_cls(
            prompt_ids=jnp.ones((B, 1), jnp.int32),
            prompt_mask=jnp.ones((B, 1), bool),
            completion_ids=jnp.zeros((B, T), jnp.int32),
            completion_mask=jnp.asarray(np.asarray(mask, bool)),
            advantages=jnp.asarray(np.asarray(advantages, np.float32)),
            ref_per_token_logps=None if ref_logprob is None else _jx(ref_logprob, dtype),
            old_per_token_logps=None if old_logprob is None else _jx(old_logprob, dtype),
            **extra_fields,
        )
        with _tunix_given_logps(x, lg):
            return fn(_NoParams(), ex, cfg, pad_id=0, eos_id=1)

    (loss, aux), g = jax.value_and_grad(loss_of, has_aux=True)(lp)
    return Result(_jn(loss), _jn(g), _scalars(aux))


def tunix_grpo_loss(logprob, advantages, mask, old_logprob=None, ref_logprob=None, *,
                    variant: str = "grpo", dtype: str = "float32", logits=None,
                    sampler_is_weights=None, **config: Any) -> Result:
    """``tunix.rl.algo_core.grpo_loss_fn(model, train_example, algo_config, pad_id, eos_id)``
    (registered as policy loss "grpo"; GRPO, DAPO and Dr. GRPO learners all use it).

    ``variant`` picks the config class (:func:`tunix_config`); ``config`` overrides its fields
    (``beta``, ``epsilon``, ``epsilon_high``, ``epsilon_c``, ``loss_agg_mode``, ``loss_algo`` =
    "grpo" | "gspo-token", ``kl_loss_mode``, ``kl_clamp_value``, ``num_generations``).
    ``old_logprob=None`` is tunix's on-policy case (``stop_gradient(per_token_logps)``).
    The loss function gets the current log-probs from ``common.compute_per_token_logps``, replaced
    here by the given ``logprob`` (and ``logits``, default ``zeros[B, T, 1]``, which only feed the
    ``entropy`` aux). ``grad`` is d loss / d per_token_logps (jax.grad).
    """
    from tunix.rl.grpo.grpo_learner import TrainExample

    cfg = tunix_config(variant, **config)
    extra = {} if sampler_is_weights is None else {
        "sampler_is_weights": _jx(sampler_is_weights)}
    return _tunix_loss("grpo_loss_fn", logprob, advantages, mask, old_logprob, ref_logprob, logits,
                       dtype, cfg, TrainExample, extra)


def tunix_ppo_policy_loss(logprob, advantages, mask, old_logprob, ref_logprob=None, *,
                          dtype: str = "float32", logits=None, **config: Any) -> Result:
    """``tunix.rl.algo_core.ppo_policy_loss_fn`` (policy loss "ppo", with ``PPOConfig``: dual clip
    via ``epsilon_c``, token-mean ``masked_mean``). ``advantages`` are ``[B, T]`` there (GAE)."""
    from tunix.rl.ppo.ppo_learner import TrainExample

    cfg = tunix_config("ppo", **config)
    adv = _token_advantages(advantages, mask)
    return _tunix_loss("ppo_policy_loss_fn", logprob, adv, mask, old_logprob, ref_logprob, logits,
                       dtype, cfg, TrainExample, {})


def tunix_aggregate_loss(loss_mat, mask, loss_agg_mode: str, *, dtype: str = "float32",
                         norm: float | None = None) -> Result:
    """``tunix.rl.common.aggregate_loss(per_token_loss, completion_mask, loss_agg_mode, norm=...)``;
    ``grad`` is d loss / d loss_mat. (``grpo_loss_fn`` calls it without ``norm``.)"""
    import jax
    from tunix.rl import common

    kw = {} if norm is None else {"norm": norm}
    m = np.asarray(mask, bool)
    loss, g = jax.value_and_grad(lambda x: common.aggregate_loss(x, m, loss_agg_mode, **kw))(
        _jx(loss_mat, dtype))
    return Result(_jn(loss), _jn(g), {})


def tunix_kl(logprob, ref_logprob, method: str, *, dtype: str = "float32",
             clamp_value: float | None = None) -> Result:
    """``tunix.rl.common.compute_kl_divergence(per_token_logps, ref_per_token_logps, method,
    clamp_value)``: per-token values and their element-wise derivative in ``logprob``."""
    import jax
    import jax.numpy as jnp
    from tunix.rl import common

    ref = _jx(ref_logprob, dtype)
    v, vjp = jax.vjp(lambda x: common.compute_kl_divergence(x, ref, method, clamp_value),
                     _jx(logprob, dtype))
    (g,) = vjp(jnp.ones_like(v))
    return Result(_jn(v), _jn(g), {})


def tunix_advantages(rewards, num_generations: int, *, name: str = "grpo") -> Result:
    """``function_registry.get_advantage_estimator(name)(rewards, num_generations)`` ("grpo":
    ``algo_core.compute_advantages``, ddof=1 std + 1e-6; "rloo"; "drgrpo": mean only)."""
    from tunix.rl import algo_core, function_registry  # noqa: F401 - algo_core registers them

    fn = function_registry.get_advantage_estimator(name)
    return Result(_jn(fn(rewards=np.asarray(rewards, np.float32), num_generations=num_generations)),
                  None, {})


def tunix_selective_log_softmax(logits, input_ids, *, dtype: str = "float32") -> Result:
    """``tunix.rl.common.selective_log_softmax(logits, input_ids)``; grad d sum / d logits."""
    import jax
    import jax.numpy as jnp
    from tunix.rl import common

    ids = jnp.asarray(np.asarray(input_ids, np.int32))
    v, vjp = jax.vjp(lambda x: common.selective_log_softmax(x, ids), _jx(logits, dtype))
    (g,) = vjp(jnp.ones_like(v))
    return Result(_jn(v), _jn(g), {"out_dtype": str(v.dtype)})


def tunix_compute_entropy_from_logits(logits, *, dtype: str = "float32") -> Result:
    """``tunix.rl.algo_core.compute_entropy_from_logits(logits)``; grad d sum / d logits."""
    import jax
    import jax.numpy as jnp
    from tunix.rl import algo_core

    v, vjp = jax.vjp(algo_core.compute_entropy_from_logits, _jx(logits, dtype))
    (g,) = vjp(jnp.ones_like(v))
    return Result(_jn(v), _jn(g), {"out_dtype": str(v.dtype)})


def tunix_make_completion_mask(completion_ids, eos_tok: int) -> Result:
    """``tunix.rl.common.make_completion_mask(completion_ids, eos_tok)`` (ones up to and including
    the first EOS); ``extra["np"]`` is ``np_make_completion_mask``'s, its NumPy twin."""
    from tunix.rl import common

    ids = np.asarray(completion_ids, np.int32)
    out = np.asarray(common.make_completion_mask(ids, eos_tok=eos_tok)).astype(bool)
    np_out = common.np_make_completion_mask(ids, eos_tok=eos_tok).astype(bool)
    return Result(out, None, {"np": np_out.tolist()})


# --------------------------------------------------------------------------------------------------
# where each adapter's peer function lives
# --------------------------------------------------------------------------------------------------

PEER_FUNCTIONS = {
    "verl_kl_penalty": "verl.trainer.ppo.core_algos:kl_penalty",
    "verl_agg_loss": "verl.trainer.ppo.core_algos:agg_loss",
    "verl_policy_loss": "verl.trainer.ppo.core_algos:get_policy_loss_fn",
    "verl_policy_loss[vanilla]": "verl.trainer.ppo.core_algos:compute_policy_loss_vanilla",
    "verl_policy_loss[gspo]": "verl.trainer.ppo.core_algos:compute_policy_loss_gspo",
    "verl_actor_config": "verl.workers.config.actor:ActorConfig",
    "verl_actor_loss": "verl.workers.utils.losses:ppo_loss",
    "verl_outcome_advantages[grpo]": "verl.trainer.ppo.core_algos:compute_grpo_outcome_advantage",
    "verl_logprobs_from_logits": "verl.utils.torch_functional:logprobs_from_logits",
    "verl_entropy_from_logits": "verl.utils.torch_functional:entropy_from_logits",
    "verl_get_response_mask": "verl.utils.torch_functional:get_response_mask",
    "trl_config": "trl.trainer.grpo_config:GRPOConfig",
    "trl_grpo_loss": "trl.trainer.grpo_trainer:GRPOTrainer._compute_loss",
    "trl_generate_and_score":
        "trl.trainer.grpo_trainer:GRPOTrainer._generate_and_score_completions",
    "trl_seam": "trl.trainer.grpo_trainer:GRPOTrainer._get_per_token_logps_and_entropies",
    "trl_selective_log_softmax": "trl.trainer.utils:selective_log_softmax",
    "trl_entropy_from_logits": "trl.trainer.utils:entropy_from_logits",
    "tunix_grpo_loss": "tunix.rl.algo_core:grpo_loss_fn",
    "tunix_ppo_policy_loss": "tunix.rl.algo_core:ppo_policy_loss_fn",
    "tunix_seam": "tunix.rl.common:compute_per_token_logps",
    "tunix_config[grpo]": "tunix.rl.grpo.grpo_learner:GRPOConfig",
    "tunix_config[dapo]": "tunix.rl.grpo.dapo_learner:DAPOConfig",
    "tunix_config[drgrpo]": "tunix.rl.grpo.drgrpo_learner:DrGRPOConfig",
    "tunix_config[ppo]": "tunix.rl.ppo.ppo_learner:PPOConfig",
    "tunix_aggregate_loss": "tunix.rl.common:aggregate_loss",
    "tunix_kl": "tunix.rl.common:compute_kl_divergence",
    "tunix_advantages[grpo]": "tunix.rl.algo_core:compute_advantages",
    "tunix_selective_log_softmax": "tunix.rl.common:selective_log_softmax",
    "tunix_compute_entropy_from_logits": "tunix.rl.algo_core:compute_entropy_from_logits",
    "tunix_make_completion_mask": "tunix.rl.common:make_completion_mask",
}


def _unwrap(obj):
    seen = 0
    while seen < 10:
        inner = getattr(obj, "__wrapped__", None) or getattr(obj, "fun", None)
        if inner is None or not callable(inner):
            break
        obj, seen = inner, seen + 1
    return obj


def peer_function(path: str) -> dict:
    """``"pkg.module:Qual.name"`` -> signature, source file (relative to site-packages), line."""
    mod_name, qual = path.split(":")
    obj = importlib.import_module(mod_name)
    for part in qual.split("."):
        obj = getattr(obj, part)
    fn = _unwrap(obj)
    try:
        sig = str(inspect.signature(fn))
    except (TypeError, ValueError):
        sig = "?"
    try:
        src = inspect.getsourcefile(fn) or "?"
        line = inspect.getsourcelines(fn)[1]
        if inspect.isclass(fn):  # getsourcelines is unreliable for dataclasses: find the statement
            with open(src, encoding="utf-8") as f:
                for i, text in enumerate(f, 1):
                    if text.lstrip().startswith((f"class {fn.__name__}(", f"class {fn.__name__}:")):
                        line = i
                        break
    except (TypeError, OSError):
        src, line = "?", 0
    if "site-packages/" in src:
        src = src.split("site-packages/", 1)[1]
    return {"path": path, "signature": sig, "file": src, "line": line}


def peer_functions() -> dict[str, dict]:
    """:func:`peer_function` for every adapter; a peer that fails to import gives its exception."""
    out = {}
    for name, path in PEER_FUNCTIONS.items():
        try:
            out[name] = peer_function(path)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            out[name] = {"path": path, "error": f"{type(e).__name__}: {e}"}
    return out
