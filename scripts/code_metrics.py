"""Shape of the codebase: public API, longest functions, parameter counts, annotation
coverage, and how many validation calls one ``grpo_loss`` makes.

Usage: .venv/bin/python scripts/code_metrics.py [--top N]

Function lengths come from the source (``ast``); parameters and annotations from the
signatures of the functions the public modules export; the validation calls from a hook
that counts calls into functions defined in ``jaxkl/_validation.py`` and into the
``check_*``/``compute_dtype`` helpers wherever they live, during one eager ``grpo_loss``.
"""

from __future__ import annotations

import argparse
import ast
import collections
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxkl"


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "conftest.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(ROOT), node


PUBLIC_MODULES = ("jaxkl", "jaxkl.estimators", "jaxkl.stats", "jaxkl.montecarlo",
                  "jaxkl.sharding", "jaxkl.mixtures", "jaxkl.families", "jaxkl.reference",
                  "jaxkl.fitting", "jaxkl.rl", "jaxkl.rl.audit", "jaxkl.rl.tabular")


def public_functions() -> dict[str, object]:
    """Every function the public modules export (``__all__``, else non-underscore names),
    by public name; the same object exported twice counts once."""
    import importlib
    import inspect

    seen, found = set(), {}
    for module_name in PUBLIC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        names = getattr(module, "__all__", None) or [n for n in dir(module)
                                                     if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name, None)
            if inspect.isfunction(obj) and obj.__module__.startswith("jaxkl") \
                    and id(obj) not in seen:
                seen.add(id(obj))
                found[f"{module_name}.{name}"] = obj
    return found


def validation_calls() -> collections.Counter:
    import jax.numpy as jnp

    from jaxkl import rl

    counts: collections.Counter = collections.Counter()
    names = ("check_", "compute_dtype", "concrete_value")

    def hook(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if "jaxkl" in code.co_filename and code.co_name.startswith(names):
                counts[code.co_name] += 1

    logp = jnp.log(jnp.array([[0.5, 0.4, 0.3], [0.3, 0.2, 0.1]]))
    mask = jnp.array([[True, True, False], [True, True, True]])
    adv = jnp.array([1.0, -1.0])
    rl.grpo_loss(logp, logp, adv, mask, ref_logprobs=logp - 0.1, kl_coef=0.04)  # warm
    sys.setprofile(hook)
    try:
        rl.grpo_loss(logp, logp, adv, mask, ref_logprobs=logp - 0.1, kl_coef=0.04)
    finally:
        sys.setprofile(None)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    functions = list(_functions())
    by_length = sorted(functions, key=lambda f: f[1].end_lineno - f[1].lineno, reverse=True)
    print(f"## {args.top} longest functions (lines, docstring included)")
    for path, node in by_length[: args.top]:
        print(f"{node.end_lineno - node.lineno + 1:5d}  {path}:{node.lineno} {node.name}")
    import inspect

    public = {name: inspect.signature(fn) for name, fn in public_functions().items()}
    by_params = sorted(public.items(), key=lambda kv: len(kv[1].parameters), reverse=True)
    print(f"\n## {args.top} public functions with the most parameters")
    for name, signature in by_params[: args.top]:
        print(f"{len(signature.parameters):5d}  {name}")
    params = [p for s in public.values() for p in s.parameters.values()]
    annotated = sum(p.annotation is not inspect.Parameter.empty for p in params)
    print(f"\n## annotated parameters of the {len(public)} public functions: "
          f"{annotated}/{len(params)} ({100 * annotated / max(len(params), 1):.0f}%)")
    counts = validation_calls()
    print(f"\n## validation calls in one grpo_loss: {sum(counts.values())}")
    for name, count in counts.most_common():
        print(f"{count:5d}  {name}")


if __name__ == "__main__":
    main()
