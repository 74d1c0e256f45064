"""Every public function documents itself with a runnable example (run by the doctests)."""

import inspect

import pytest

import jaxkl
from jaxkl import families, fitting, mixtures, reference, rl, sharding, stats

MODULES = (jaxkl, rl, stats, reference, mixtures, families, fitting, sharding)


def _public_functions():
    seen = {}
    for module in MODULES:
        names = getattr(module, "__all__", None)
        names = names or [n for n in dir(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if not inspect.isfunction(obj) or not obj.__module__.startswith("jaxkl"):
                continue
            if not any(part.startswith("_") for part in obj.__module__.split(".")):
                seen[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return seen


FUNCTIONS = _public_functions()


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_public_function_has_docstring_with_example(name):
    doc = inspect.getdoc(FUNCTIONS[name]) or ""
    assert len(doc.splitlines()) >= 3, f"{name} has no real docstring"
    assert ">>>" in doc, f"{name} has no runnable example"
