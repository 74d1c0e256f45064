"""KL penalties for RL on language models: per-token estimates, aggregation, exact
full-vocabulary KL and the GRPO objective.

- :func:`token_logprobs`, :func:`entropy`, :func:`response_mask`: from a policy's logits
  and sampled tokens to the log-probabilities, entropies and mask a loss needs.
- :func:`token_kl`: the per-token KL(pi || pi_ref) estimate (k1, k2, k3, abs) with
  clamping and the gradient options (natural, straight-through, importance-weighted).
- :func:`kl_penalized_rewards`, :func:`kl_penalty_to_go`: the KL placed in the reward
  (k1), whose score-function gradient is the reverse-KL gradient, and its returns-to-go
  to add to GRPO advantages.
- :func:`aggregate`: the masked loss reductions of verl/TRL/Dr. GRPO.
- :func:`full_kl`: exact per-token KL over the vocabulary from logits, streamed, with a
  memory-bounded custom JVP (forward and reverse mode).
- :func:`token_logprobs_from_hidden`, :func:`entropy_from_hidden`,
  :func:`full_kl_from_hidden`: the same from hidden states and the unembedding, tile by
  tile with a custom VJP, never forming the ``[tokens, vocab]`` logits.
- :func:`group_advantages`, :func:`clipped_surrogate`, :func:`grpo_loss`,
  :func:`adaptive_kl_controller`, :func:`fixed_kl_controller`: GRPO.
- :mod:`audit` (:func:`audit_categorical`, :func:`audit_sequence`): the exact expected
  gradient of every KL configuration, by enumeration; :mod:`tabular`: a small tabular
  autoregressive policy whose sequences can be enumerated; :mod:`presets`: verl's, TRL's
  and tunix's GRPO defaults as jaxkl options.
"""


from jaxkl._src.rl.aggregate import MODES, aggregate
from jaxkl._src.rl.audit import GradientAudit, audit_categorical, audit_sequence
from jaxkl._src.rl.full_kl import full_kl
from jaxkl._src.rl.grpo import (
    GRPOMetrics,
    KLController,
    KLControllerState,
    SurrogateOutput,
    adaptive_kl_controller,
    clipped_surrogate,
    fixed_kl_controller,
    group_advantages,
    grpo_loss,
)
from jaxkl._src.rl.hidden import (
    entropy_from_hidden,
    full_kl_from_hidden,
    token_logprobs_from_hidden,
)
from jaxkl._src.rl.logits import entropy, response_mask, token_logprobs
from jaxkl._src.rl.token_kl import (
    DEFAULT_LOG_RATIO_CLIP,
    ESTIMATORS,
    GRADIENTS,
    KLConfig,
    kl_penalized_rewards,
    kl_penalty_to_go,
    token_kl,
)
from jaxkl.rl import audit, presets, tabular

__all__ = [
    "DEFAULT_LOG_RATIO_CLIP",
    "ESTIMATORS",
    "GRADIENTS",
    "GRPOMetrics",
    "GradientAudit",
    "KLConfig",
    "KLController",
    "KLControllerState",
    "MODES",
    "SurrogateOutput",
    "adaptive_kl_controller",
    "aggregate",
    "audit",
    "audit_categorical",
    "audit_sequence",
    "clipped_surrogate",
    "entropy",
    "entropy_from_hidden",
    "fixed_kl_controller",
    "full_kl",
    "full_kl_from_hidden",
    "group_advantages",
    "grpo_loss",
    "kl_penalized_rewards",
    "kl_penalty_to_go",
    "presets",
    "response_mask",
    "tabular",
    "token_kl",
    "token_logprobs",
    "token_logprobs_from_hidden",
]
