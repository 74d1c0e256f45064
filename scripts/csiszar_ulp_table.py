"""Max ulp error of every Csiszar divergence's value and gradient, per dtype.

Usage: ``.venv/bin/python scripts/csiszar_ulp_table.py [--markdown]``

The grid is the one of tests/test_estimators.py: 601 points, both signs, |l| from 1e-8
to 30, and 0. Each value ``jaxkl.csiszar(l)`` and gradient ``d/dl jaxkl.csiszar(l)`` is
compared with the exact one at the (exactly representable) input, computed with mpmath
at 50 digits from the definition ``f(u) - f(1) - f'(1)(u - 1)`` (tests/_reference.py),
in ulps of the output dtype. bf16 inputs are computed in float32 and rounded once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jaxkl  # noqa: E402
from tests import _reference as ref  # noqa: E402

_MAG = np.logspace(-8, np.log10(30), 300)
GRID = np.concatenate([-_MAG[::-1], [0.0], _MAG])

# The parameters measured: TFP's test inputs (alpha -2, -1, -0.5, 0.5, 2; t -0.1, 0.5,
# 1.1) and three more (alpha 0.3 and 0.99, not exact in binary; 3, a large one).
CASES = [(name, None) for name in jaxkl.F_DIVERGENCES]
CASES += [("amari_alpha", a) for a in (-2.0, -1.0, -0.5, 0.3, 0.5, 0.99, 2.0, 3.0)]
CASES += [("t_power", t) for t in (-0.1, 0.5, 1.1)]
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


def label(name, param):
    return name if param is None else f"{name}({'alpha' if name == 'amari_alpha' else 't'}="\
        f"{param:g})"


def measure(name, param, dtype, grid=GRID):
    """(max value ulps, max gradient ulps) over ``grid`` for one case and dtype."""
    value_ulps, grad_ulps = ref.csiszar_ulps(name, param, dtype, grid)
    return float(value_ulps.max()), float(grad_ulps.max())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    rows = []
    for name, param in CASES:
        row = [label(name, param)]
        for dtype in DTYPES.values():
            row.extend(f"{u:.2f}" for u in measure(name, param, dtype))
        rows.append(row)
        if not args.markdown:
            print(" ".join(f"{c:>28}" if i == 0 else f"{c:>8}" for i, c in enumerate(row)),
                  flush=True)
    if args.markdown:
        head = ["divergence"] + [f"{d} {w}" for d in DTYPES for w in ("value", "grad")]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
