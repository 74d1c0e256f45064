r"""Gradient audit: which divergence does each KL-penalty configuration follow, exactly?

A configuration is an estimator (k1, k2, k3, abs), a placement and a gradient option:

- ``placement="loss"``: the per-token value of :func:`jaxkl.rl.token_kl` at the current
  parameters is added to the loss and differentiated, with ``gradient`` ``"natural"``,
  ``"straight_through"`` or ``"importance_weighted"`` (``w = pi / pi_old`` times the
  value). Per sampled token ``y ~ pi_old`` the gradient is ``grad_theta v(y)``.
- ``placement="reward"``: the penalty is computed when the tokens are sampled (from
  ``pi_old``, as RLHF pipelines do), enters the reward with a stop-gradient, and the
  policy gradient is the score function: per token ``sg(K) grad log pi(y)``
  (``gradient="natural"``, REINFORCE) or ``sg(K) grad (pi(y) / pi_old(y))``
  (``"importance_weighted"``, the unclipped PPO ratio). ``K`` is the token's penalty, or
  at sequence level its penalty-to-go ``sum_{s >= t} k_s`` (the return of the penalty
  reward). Straight-through changes nothing here (the value is not differentiated), so
  ``("reward", "straight_through")`` is not a configuration.

Every gradient is that of the quantity *minimised* (a loss), so the reference
directions are ``grad KL(pi || pi_ref)`` (reverse) and ``grad KL(pi_ref || pi)``
(forward). The expected gradient is computed exactly by enumerating the support:

.. math:: g = \sum_y \pi_{old}(y)\, \nabla_\theta \ell_\theta(y)
          = \nabla_\theta \sum_y \mathrm{sg}(\pi_{old}(y))\, \ell_\theta(y),

one backward pass through the weighted sum (``pi_old = sg(pi)`` on-policy). On-policy,
E grad k1 = 0, E grad k2 = grad KL(pi||ref), E grad k3 = grad KL(ref||pi), and k1 in the
reward and straight-through both give grad KL(pi||ref) (Tang & Munos 2025); off-policy,
only the importance-weighted unbiased estimators (k1, k3) keep the reverse-KL gradient.

:func:`audit_categorical` audits one categorical distribution (logits ``[V]``);
:func:`audit_sequence` audits a tabular autoregressive policy
(:mod:`jaxkl.rl.tabular`) against the sequence-level KLs, where per-token losses give
only the part of the gradient that holds the prefix distribution fixed.

References:
  Y. Tang and R. Munos, "On a few pitfalls in KL divergence gradient estimation for RL",
  2025, arXiv:2506.09477.
  Y. Liu et al., "Rethinking KL Regularization in RLHF: From Value Estimation to Gradient
  Optimization", 2025, arXiv:2510.01555.
  J. Schulman, "Approximating KL Divergence", 2020, http://joschu.net/blog/kl-approx.html.
"""

from jaxkl._src.rl.audit import (
    CONFIGS,
    REWARD_GRADIENTS,
    SEQUENCE_AGGREGATIONS,
    GradientAudit,
    audit_categorical,
    audit_sequence,
    check_configs,
    token_surrogate,
)
from jaxkl._src.rl.token_kl import PLACEMENTS, KLConfig

__all__ = [
    "audit_categorical",
    "audit_sequence",
    "check_configs",
    "CONFIGS",
    "GradientAudit",
    "KLConfig",
    "PLACEMENTS",
    "REWARD_GRADIENTS",
    "SEQUENCE_AGGREGATIONS",
    "token_surrogate",
]
