"""Shape of the codebase: public API, longest functions, parameter counts, annotation
coverage, and how many validation calls one ``grpo_loss`` makes.

Usage: .venv/bin/python scripts/code_metrics.py [--top N]

Counts come from the source (``ast``) and, for the validation calls, from a profiler hook
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


def _is_public(path: pathlib.Path, node) -> bool:
    return not node.name.startswith("_") and not any(
        part.startswith("_") and part != "__init__.py" for part in path.parts
    )


def _parameters(node) -> list[ast.arg]:
    a = node.args
    return [*a.posonlyargs, *a.args, *a.kwonlyargs] + ([a.vararg] if a.vararg else []) + (
        [a.kwarg] if a.kwarg else [])


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
    public = [(p, n) for p, n in functions if _is_public(p, n)]
    by_params = sorted(public, key=lambda f: len(_parameters(f[1])), reverse=True)
    print(f"\n## {args.top} public functions with the most parameters")
    for path, node in by_params[: args.top]:
        print(f"{len(_parameters(node)):5d}  {path}:{node.lineno} {node.name}")
    params = [a for _, n in public for a in _parameters(n) if a.arg not in ("self", "cls")]
    annotated = sum(a.annotation is not None for a in params)
    print(f"\n## annotated public parameters: {annotated}/{len(params)} "
          f"({100 * annotated / max(len(params), 1):.0f}%)")
    counts = validation_calls()
    print(f"\n## validation calls in one grpo_loss: {sum(counts.values())}")
    for name, count in counts.most_common():
        print(f"{count:5d}  {name}")


if __name__ == "__main__":
    main()
