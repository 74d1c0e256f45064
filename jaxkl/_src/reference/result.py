"""The value every reference method returns (:class:`ReferenceKL`)."""

from __future__ import annotations

from typing import NamedTuple


class ReferenceKL(NamedTuple):
    """A reference value of KL(q||p).

    Attributes:
      value: the KL value (a Python float; ``inf`` where p vanishes on q's support).
      error: the method's error estimate (see the module table): an absolute error for
        ``analytic`` and ``quadrature``, one standard error for ``monte_carlo``, a
        guaranteed half-width for the mixture methods.
      method: the name of the method that produced ``value``.
      converged: False only when quadrature stopped at its cell budget before meeting its
        tolerance; ``error`` is then what it reached (``inf`` if the components could
        not even be resolved), still an honest estimate but looser than asked.
    """

    value: float
    error: float
    method: str
    converged: bool = True
