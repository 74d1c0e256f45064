r"""Per-sample KL and f-divergence estimators on log-ratios.

Every function here takes ``log_ratio = log p(x) - log q(x)`` evaluated at samples
``x ~ q`` and returns one value per sample, with the input's shape and dtype. Averaging
the values over samples estimates a divergence:

=========================  ===========================  =========  ==================
function                   value (``r = exp(l)``)       unbiased?  estimates
=========================  ===========================  =========  ==================
:func:`k1`                 ``-l``                       yes        KL(q||p)
:func:`k2`                 ``l**2 / 2``                 no         KL(q||p) + O(KL^2)
:func:`k3`                 ``(r - 1) - l``              yes        KL(q||p)
:func:`control_variate`    ``-l + lam (r - 1)``         yes        KL(q||p)
:func:`forward_kl`         ``r l - (r - 1)``            yes        KL(p||q)
:func:`csiszar`            ``f(r) - f'(1) (r - 1)``     yes        D_f(p||q)
=========================  ===========================  =========  ==================

Reference: J. Schulman, "Approximating KL Divergence", 2020,
http://joschu.net/blog/kl-approx.html.

Computation happens in float32 at least (bf16/f16 inputs are upcast) and the result is
cast back to the input dtype. Near ``l = 0`` the unbiased estimators are differences of
nearly equal numbers; they are evaluated with series there (see ``jaxkl/_src/numerics.py``), so
they are accurate to a few ulps over the whole range. Values that exceed the dtype's
range (``k3`` for ``l > ~88`` in float32) overflow to ``inf``, as the exact value does;
:func:`jaxkl.rl.token_kl` offers clamping for training losses.
"""

from jaxkl._src.estimators.divergences import (
    DIVERGENCE_NAMES,
    F_DIVERGENCES,
    csiszar,
    csiszar_dual,
    csiszar_symmetrized,
)
from jaxkl._src.estimators.kl import control_variate, forward_kl, k1, k2, k3, optimal_cv_lambda

__all__ = [
    "control_variate",
    "csiszar",
    "csiszar_dual",
    "csiszar_symmetrized",
    "DIVERGENCE_NAMES",
    "F_DIVERGENCES",
    "forward_kl",
    "k1",
    "k2",
    "k3",
    "optimal_cv_lambda",
]
