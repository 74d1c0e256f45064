"""The GRPO defaults of verl, TRL and tunix as jaxkl options (:class:`GRPOPreset`).

- :func:`verl`, :func:`trl`, :func:`tunix`: each library's defaults at a cited version;
  ``preset.loss_kwargs()`` for :func:`jaxkl.rl.grpo_loss` and
  ``preset.advantage_kwargs()`` for :func:`jaxkl.rl.group_advantages`.
"""

from jaxkl._src.rl.presets import GRPOPreset, trl, tunix, verl

__all__ = ["GRPOPreset", "trl", "tunix", "verl"]
