"""Every public function documents itself with a runnable example (run by the doctests)."""

import inspect

import pytest

import jaxkl
from jaxkl import (
    estimators,
    families,
    fitting,
    mixtures,
    montecarlo,
    reference,
    rl,
    sharding,
    stats,
)
from jaxkl.rl import audit, tabular

MODULES = (jaxkl, estimators, stats, montecarlo, sharding, mixtures, families, reference, fitting,
           rl, audit, tabular)


def _public_functions():
    seen = {}
    for module in MODULES:
        names = getattr(module, "__all__", None)
        names = names or [n for n in dir(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            # Implementations live in jaxkl._src; what is public is what __all__ exports.
            if inspect.isfunction(obj) and obj.__module__.startswith("jaxkl"):
                seen[f"{module.__name__}.{name}"] = obj
    return seen


FUNCTIONS = _public_functions()


def test_the_public_api_is_found():
    assert {"jaxkl.estimate", "jaxkl.rl.token_kl", "jaxkl.fitting.fit"} <= set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_public_function_has_docstring_with_example(name):
    doc = inspect.getdoc(FUNCTIONS[name]) or ""
    assert len(doc.splitlines()) >= 3, f"{name} has no real docstring"
    assert ">>>" in doc, f"{name} has no runnable example"
