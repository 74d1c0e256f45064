"""The names jaxkl accepts, in one place: estimators, divergences, and their aliases.

:func:`jaxkl.estimate`, :func:`jaxkl.csiszar`, :func:`jaxkl.fit` and
:func:`jaxkl.rl.token_kl` all take their names from here, so a name means the same
thing wherever it is accepted:

- Schulman's per-sample KL(q||p) estimators ``k1``, ``k2``, ``k3`` (J. Schulman,
  "Approximating KL Divergence", 2020), and verl's ``abs`` (``|l|``) as a per-token
  penalty;
- the Csiszar f-divergences by TFP's names (``tfp.vi``: ``kl_reverse`` is
  ``reverse_kl`` here, ``pearson`` is ``pearson_chi2``), two of them parametrised;
- ``cv*``, the control variate with its variance-optimal coefficient estimated from the
  same samples (``jaxkl.estimate`` only).
"""

from __future__ import annotations

KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")
"""Schulman's per-sample estimators of KL(q||p) from the log-ratio ``l = log p - log q``."""

TOKEN_ESTIMATORS: tuple[str, ...] = (*KL_ESTIMATORS, "abs")
"""What :func:`jaxkl.rl.token_kl` accepts: Schulman's three and verl's ``abs`` (``|l|``)."""

PARAMETER_FREE_DIVERGENCES: tuple[str, ...] = (
    "reverse_kl", "forward_kl", "jensen_shannon", "squared_hellinger", "total_variation",
    "pearson_chi2", "chi_square", "triangular", "log1p_abs", "jeffreys",
    "arithmetic_geometric", "modified_gan",
)
DIVERGENCE_PARAMETERS: dict[str, str] = {"amari_alpha": "alpha", "t_power": "t"}
"""The parametrised divergences and the name of their parameter (TFP's: alpha, t)."""

DIVERGENCES: tuple[str, ...] = (*PARAMETER_FREE_DIVERGENCES, *DIVERGENCE_PARAMETERS)
"""Every divergence name :func:`jaxkl.csiszar`, :func:`jaxkl.estimate` and
:func:`jaxkl.fit` accept (``fit`` adds gradient-estimator variants and ``renyi``)."""

OPTIMAL_CV = "cv*"
"""The control variate ``-l + lam* (r - 1)`` with ``lam* = Cov(l, r) / Var(r)`` estimated
from the same samples (:func:`jaxkl.optimal_cv_lambda` discusses its O(1/n) bias)."""

ESTIMATE_ALIASES: dict[str, str] = {"forward": "forward_kl"}
"""Names :func:`jaxkl.estimate` accepted before the common vocabulary; the result is keyed
by the name the caller passed."""

TOKEN_ESTIMATOR_ALIASES: dict[str, str] = {
    "kl": "k1",
    "mse": "k2",
    "mse_kl": "k2",
    "low_var_kl": "k3",
}
"""The peers' names of the per-token estimators, accepted by :func:`jaxkl.rl.token_kl` and
:class:`jaxkl.rl.KLConfig`: verl's ``kl_penalty`` (``kl``/``k1``, ``mse``/``k2``,
``low_var_kl``/``k3``, ``abs``; verl 0.9.1 ``verl/trainer/ppo/core_algos.py``) and
tunix's (``kl``, ``mse_kl``, ``low_var_kl``; google-tunix 0.1.7 ``tunix/rl/common.py``).
verl's trailing ``+`` (``"k3+"``, ``"low_var_kl+"``) means the value of the estimator with
k2's gradient: jaxkl's ``gradient="straight_through"``."""

FULL_KL = "full"
"""verl's name of the exact KL over the vocabulary: a :class:`jaxkl.rl.KLConfig` estimator
that :func:`jaxkl.rl.grpo_loss` computes from the logits (:func:`jaxkl.rl.full_kl`)."""

TOKEN_ESTIMATOR_REFUSED: dict[str, str] = {
    FULL_KL: "verl's 'full' is the exact KL over the vocabulary, which needs the logits, not "
             "one log-probability per token: use jaxkl.rl.full_kl(logits, ref_logits) for the "
             "per-token values, or grpo_loss(..., logits=, ref_logits=, kl=KLConfig('full')) "
             "for the KL term of the loss.",
}
"""Peer names jaxkl cannot honour from per-token log-probabilities, with what to use."""

AGGREGATION_ALIASES: dict[str, str] = {
    "grpo": "seq-mean-token-mean",
    "bnpo": "token-mean",
    "dapo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
    "sequence-mean-token-mean": "seq-mean-token-mean",
    "sequence-mean-token-scale": "seq-mean-token-sum-norm",
}
"""The peers' loss-aggregation names that mean one of jaxkl's modes: TRL's ``loss_type``
(``grpo``, ``bnpo``, ``dr_grpo``, ``dapo``; trl 1.16.0 ``GRPOConfig``; ``dapo`` divides by
the whole batch's token count, pass it as ``global_count``; ``grpo`` and ``dr_grpo`` divide
by all rows, empty ones included, where jaxkl counts the rows with a valid token: pass
``global_count=`` the number of rows; ``dr_grpo``'s normaliser is ``max_completion_length``,
512 by default) and tunix's
``loss_agg_mode`` (``sequence-mean-token-mean``, ``sequence-mean-token-scale`` = Dr. GRPO).
verl's names are jaxkl's own."""

AGGREGATION_REFUSED: dict[str, str] = {
    "sequence-mean-token-sum-norm": "tunix's 'sequence-mean-token-sum-norm' divides each "
    "sequence's token sum by the number of non-empty rows (jaxkl's 'seq-mean-token-sum'), "
    "while verl's 'seq-mean-token-sum-norm' (jaxkl's) is Dr. GRPO's constant normaliser "
    "(tunix's 'sequence-mean-token-scale'): name the one you mean.",
}
"""Peer aggregation names that mean different things in different libraries."""
