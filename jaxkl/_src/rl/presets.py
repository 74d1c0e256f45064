"""The GRPO defaults of verl, TRL and tunix as jaxkl options.

Each preset is a :class:`GRPOPreset`: the options of :func:`jaxkl.rl.grpo_loss` and of
:func:`jaxkl.rl.group_advantages` that reproduce one library's defaults at the version
named in ``source`` (read from its configuration classes and loss code; see
``docs/conformance.md`` for the comparison of the pieces with the libraries' own
functions). Use them as::

    preset = rl.presets.verl()
    adv = rl.group_advantages(rewards, group_size=G, **preset.advantage_kwargs())
    loss, metrics = rl.grpo_loss(logprobs, old_logprobs, adv, mask,
                                 ref_logprobs=ref_logprobs, **preset.loss_kwargs())

and ``preset._replace(...)`` to change a field.
"""

from __future__ import annotations

from typing import NamedTuple

from jaxkl._src.rl.token_kl import DEFAULT_LOG_RATIO_CLIP, KLConfig


class GRPOPreset(NamedTuple):
    """Options of :func:`jaxkl.rl.grpo_loss` and :func:`jaxkl.rl.group_advantages`.

    Attributes:
      kl_coef: ``beta``.
      kl: the per-token KL options (:class:`jaxkl.rl.KLConfig`).
      clip_eps, clip_eps_high, clip_ratio_c, log_ratio_clip: the surrogate's clips.
      aggregation: the loss reduction (:func:`jaxkl.rl.aggregate`'s ``mode``).
      importance_sampling_level: ``"token"`` or ``"sequence"`` (GSPO).
      scale_rewards: :func:`jaxkl.rl.group_advantages`'s ``scale_rewards``.
      advantage_eps: :func:`jaxkl.rl.group_advantages`'s ``eps``.
      source: the library, version and files the defaults were read from.
    """

    kl_coef: float
    kl: KLConfig
    clip_eps: float
    clip_eps_high: float | None
    clip_ratio_c: float | None
    log_ratio_clip: float | None
    aggregation: str
    importance_sampling_level: str
    scale_rewards: str
    advantage_eps: float
    source: str

    def loss_kwargs(self) -> dict:
        """The keyword arguments of :func:`jaxkl.rl.grpo_loss`."""
        return dict(kl_coef=self.kl_coef, kl=self.kl, clip_eps=self.clip_eps,
                    clip_eps_high=self.clip_eps_high, clip_ratio_c=self.clip_ratio_c,
                    log_ratio_clip=self.log_ratio_clip, aggregation=self.aggregation,
                    importance_sampling_level=self.importance_sampling_level)

    def advantage_kwargs(self) -> dict:
        """The keyword arguments of :func:`jaxkl.rl.group_advantages`."""
        return dict(scale_rewards=self.scale_rewards, eps=self.advantage_eps)


def verl() -> GRPOPreset:
    """verl's GRPO with the KL in the loss (``actor.use_kl_loss=True``).

    verl 0.9.1: ``actor.kl_loss_type="low_var_kl"`` (k3 with the log-ratio clamped to
    +-20 and the value to +-10), ``kl_loss_coef=0.001``, ``clip_ratio=0.2`` (low and high),
    ``clip_ratio_c=3.0`` (dual clip), the policy log-ratio clamped to +-20,
    ``loss_agg_mode="token-mean"``, ``norm_adv_by_std_in_grpo=True`` with ``eps=1e-6``
    (``verl/trainer/config/actor/actor.yaml``, ``verl/trainer/ppo/core_algos.py``).

    Example:
      >>> from jaxkl import rl
      >>> kl = rl.presets.verl().kl
      >>> kl.estimator, kl.log_ratio_clip, kl.value_clip
      ('k3', 20.0, 10.0)
    """
    return GRPOPreset(
        kl_coef=0.001, kl=KLConfig("k3", log_ratio_clip=20.0, value_clip=10.0),
        clip_eps=0.2, clip_eps_high=0.2, clip_ratio_c=3.0,
        log_ratio_clip=DEFAULT_LOG_RATIO_CLIP, aggregation="token-mean",
        importance_sampling_level="token", scale_rewards="group", advantage_eps=1e-6,
        source="verl 0.9.1: verl/trainer/config/actor/actor.yaml, "
               "verl/trainer/ppo/core_algos.py",
    )


def trl() -> GRPOPreset:
    """TRL's ``GRPOTrainer`` defaults.

    trl 1.16.0 ``GRPOConfig``: ``beta=0.0`` (no KL term; when set, k3 without clamps,
    times ``pi / pi_old`` as TRL's default ``use_bias_correction_kl=True`` does:
    ``gradient="importance_weighted"``), ``epsilon=0.2``, ``epsilon_high=None``
    (= ``epsilon``), no dual clip (``delta=None``; ``delta=c`` is ``clip_ratio_c=c``),
    ``loss_type="dapo"`` (the token mean over the whole batch: pass ``global_count`` when
    accumulating gradients), ``importance_sampling_level="token"``,
    ``scale_rewards="group"`` with ``1e-4`` added to the std
    (``trl/trainer/grpo_config.py``, ``trl/trainer/grpo_trainer.py``). TRL does not clamp
    the policy log-ratio; jaxkl keeps its clamp at 20 (``e^20``: no overflow).

    Example:
      >>> from jaxkl import rl
      >>> rl.presets.trl().kl_coef, rl.presets.trl().aggregation
      (0.0, 'dapo')
      >>> rl.presets.trl().kl.gradient  # with kl_coef != 0: TRL's use_bias_correction_kl
      'importance_weighted'
    """
    return GRPOPreset(
        kl_coef=0.0, kl=KLConfig("k3", gradient="importance_weighted", log_ratio_clip=None),
        clip_eps=0.2, clip_eps_high=None, clip_ratio_c=None, log_ratio_clip=DEFAULT_LOG_RATIO_CLIP,
        aggregation="dapo", importance_sampling_level="token", scale_rewards="group",
        advantage_eps=1e-4,
        source="trl 1.16.0: trl/trainer/grpo_config.py, trl/trainer/grpo_trainer.py",
    )


def tunix() -> GRPOPreset:
    """tunix's ``GRPOConfig`` defaults.

    google-tunix 0.1.7 (``tunix/rl/grpo/grpo_learner.py``): ``beta=0.04``,
    ``kl_loss_mode="kl"`` (k1, no clamp), ``epsilon=0.2`` (no separate high clip, no dual
    clip), ``loss_agg_mode="sequence-mean-token-mean"``, advantages over the group std with
    ``1e-6``.

    Example:
      >>> from jaxkl import rl
      >>> rl.presets.tunix().kl.estimator, rl.presets.tunix().aggregation
      ('kl', 'sequence-mean-token-mean')
    """
    return GRPOPreset(
        kl_coef=0.04, kl=KLConfig("kl", log_ratio_clip=None), clip_eps=0.2,
        clip_eps_high=None, clip_ratio_c=None, log_ratio_clip=DEFAULT_LOG_RATIO_CLIP,
        aggregation="sequence-mean-token-mean", importance_sampling_level="token",
        scale_rewards="group", advantage_eps=1e-6,
        source="google-tunix 0.1.7: tunix/rl/grpo/grpo_learner.py, tunix/rl/algo_core.py",
    )
