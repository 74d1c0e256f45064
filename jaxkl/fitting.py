r"""Fitting a parametric q to a target p by minimising a divergence with optax.

Objectives (``divergence=``), each a stochastic estimate of a divergence between q (from
a :class:`jaxkl.families.Family`) and the target p, with the gradient estimator named:

=========================  ===============  ==================================  ===========
``divergence``             minimises        gradient                            p may be
=========================  ===============  ==================================  ===========
``"reverse_kl"``           KL(q||p)         reparameterisation                  unnormalised
``"reverse_kl_stl"``       KL(q||p)         sticking the landing                unnormalised
``"reverse_kl_score_k1"``  KL(q||p)         score function, k1 per sample       unnormalised
``"reverse_kl_score_k3"``  KL(q||p)         score function, k3 per sample       normalised
``"forward_kl"``           KL(p||q)         maximum likelihood on samples of p  a sampler
``"forward_kl_snis"``      KL(p||q)         self-normalised IS from q           unnormalised
``"renyi"``                D_alpha          reparameterisation (VR bound)       unnormalised
``"amari_alpha"``          D_alpha          reparameterisation                  normalised
any other name (below)     D_f(p||q)        reparameterisation                  normalised
=========================  ===============  ==================================  ===========

"Any other name" is any other name of :data:`jaxkl.DIVERGENCE_NAMES` (``"jensen_shannon"``,
``"t_power"`` with ``t``, ...).

The divergence names are those of :func:`jaxkl.csiszar` and :func:`jaxkl.estimate` (one
vocabulary); the suffixed names pick another gradient estimator for the same divergence.

Both alpha families use the library's convention (as in :func:`jaxkl.csiszar`): ``alpha
= 0`` is KL(q||p) (mode-seeking) and ``alpha = 1`` is KL(p||q) (mass-covering), and
values in between interpolate. "Unnormalised" means p may be a bare callable
``log_p(x)`` known up to an additive constant; otherwise p is a distrax distribution (or
anything with ``log_prob``, and ``sample`` for ``"forward_kl"``).

:func:`fit` runs any optax optimiser for ``num_steps`` under one ``lax.scan``; it is a
pure function of arrays, so ``jax.vmap`` batches it over keys, initialisations and
targets (distrax distributions are pytrees). :func:`fit_multistart` keeps the best of
several starts, judged by :func:`evaluate` with many samples and a common key; the
options its starts share are a :class:`FitOptions`, the keyword arguments of :func:`fit`.
"""

from jaxkl._src.fitting.loop import FitOptions, FitResult, default_optimizer, fit
from jaxkl._src.fitting.multistart import MultiStartResult, fit_multistart
from jaxkl._src.fitting.objectives import DIVERGENCES, evaluate, make_loss

__all__ = [
    "default_optimizer",
    "DIVERGENCES",
    "evaluate",
    "fit",
    "fit_multistart",
    "FitOptions",
    "FitResult",
    "make_loss",
    "MultiStartResult",
]
