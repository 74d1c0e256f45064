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
