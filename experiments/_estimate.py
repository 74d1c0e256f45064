"""``python -m experiments estimate --q SPEC --p SPEC``: the estimator table on your own pair.

For q and p of your choice it prints what ``estimator_table`` reports for its Gaussian
cases (k1, k2, k3 and cv(lambda*): mean, bias/true with a 95% interval, std/true, against
the most accurate reference KL jaxkl has for the pair, :func:`jaxkl.reference_kl`) and
what ``estimator_sweep`` judges at each of its points (the Hill tail index of r = p/q,
whether k3's std keeps growing with n, so whether Var_q(r), hence the variance of k3 and
cv*, is finite, and the estimator with the smallest error at a sample budget). The sweep
over families of pairs itself is not repeated: this is one point of it, for your pair.

A SPEC is one of:

- a constructor call: ``Normal(0, 1)``, ``distrax.Laplace(loc=0.5, scale=1)``,
  ``MultivariateNormalDiag([0, 0], [1, 2])``,
  ``gaussian_mixture_1d([-1, 1], [0.5, 0.5], weights=[0.3, 0.7])``,
  ``jaxkl.gaussian_mixture_diag(...)``, ``gaussian_mixture_full(...)``;
- the short form ``normal:LOC,SCALE`` (also ``laplace``, ``logistic``, ``gumbel``) or
  ``mixture:means=-1,1;scales=0.5,0.5;weights=0.3,0.7`` (weights optional: equal);
- JSON: ``{"type": "normal", "loc": 0, "scale": 1}`` or ``{"type": "mixture", "means":
  [[0, 0], [2, 0]], "scales": [[1, 1], [1, 1]]}`` (2-D means: a diagonal mixture).

Arguments are numbers or nested lists of numbers, nothing else is evaluated. A malformed
spec, an unknown constructor, invalid parameters or a pair of different dimensions exit
with status 2 and a message naming ``--q`` or ``--p``.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import math
import pathlib
import sys
from typing import Any

import numpy as np

FLOAT_PARAMS = ("loc", "scale")


def _constructors() -> dict[str, Any]:
    import distrax

    import jaxkl

    def mixture(means, scales, weights=None, logits=None):
        make = jaxkl.gaussian_mixture_1d if np.ndim(means) == 1 else jaxkl.gaussian_mixture_diag
        return make(means, scales, weights=weights, logits=logits)

    table = {
        "normal": distrax.Normal,
        "laplace": distrax.Laplace,
        "logistic": distrax.Logistic,
        "gumbel": distrax.Gumbel,
        "multivariatenormaldiag": distrax.MultivariateNormalDiag,
        "mixture": mixture,
        "gaussian_mixture_1d": jaxkl.gaussian_mixture_1d,
        "gaussian_mixture_diag": jaxkl.gaussian_mixture_diag,
        "gaussian_mixture_full": jaxkl.gaussian_mixture_full,
    }
    return table


NAMES = ("Normal", "Laplace", "Logistic", "Gumbel", "MultivariateNormalDiag", "mixture",
         "gaussian_mixture_1d", "gaussian_mixture_diag", "gaussian_mixture_full")
SHORT = ("normal", "laplace", "logistic", "gumbel")


class SpecError(ValueError):
    """A --q/--p that cannot be turned into a distribution (exit status 2)."""


def _numbers(value: Any, where: str) -> Any:
    """``value`` checked to be a finite number or a (nested) list of them."""
    if isinstance(value, bool) or not isinstance(value, int | float | list | tuple):
        raise SpecError(f"{where}: expected numbers or lists of numbers, got {value!r}")
    if isinstance(value, list | tuple):
        if not value:
            raise SpecError(f"{where}: empty list")
        return [_numbers(v, where) for v in value]
    if not math.isfinite(value):
        raise SpecError(f"{where}: {value!r} is not finite")
    return float(value)


def _parse_call(text: str) -> tuple[str, list, dict]:
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise SpecError("not a constructor call, short form or JSON object") from None
    if not isinstance(node, ast.Call):
        raise SpecError("not a constructor call, short form or JSON object")
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and (
            func.value.id in ("distrax", "jaxkl")):
        name = func.attr
    elif isinstance(func, ast.Name):
        name = func.id
    else:
        raise SpecError(f"unsupported constructor {ast.unparse(func)!r}")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    except (ValueError, TypeError, SyntaxError):
        raise SpecError("constructor arguments must be numbers or lists of numbers") from None
    if any(k.arg is None for k in node.keywords):
        raise SpecError("**kwargs is not supported")
    return name, args, kwargs


def _parse_short(text: str) -> tuple[str, list, dict]:
    name, _, body = text.partition(":")
    name = name.strip().lower()

    def floats(part: str, where: str) -> list[float]:
        try:
            return [float(v) for v in part.split(",")]
        except ValueError:
            raise SpecError(f"{where}: expected comma-separated numbers, got {part!r}") from None

    if name in SHORT:
        values = floats(body, name)
        if len(values) != 2:
            raise SpecError(f"expected {name}:LOC,SCALE, got {len(values)} numbers")
        return name, values, {}
    if name == "mixture":
        kwargs = {}
        for part in filter(None, (p.strip() for p in body.split(";"))):
            key, eq, value = part.partition("=")
            if not eq or key.strip() not in ("means", "scales", "weights", "logits"):
                raise SpecError(f"expected means=..;scales=..[;weights=..], got {part!r}")
            kwargs[key.strip()] = floats(value, key.strip())
        return name, [], kwargs
    raise SpecError(f"unknown short form {name!r}; choose from {', '.join(SHORT)}, mixture")


def _parse_json(text: str) -> tuple[str, list, dict]:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"not valid JSON ({error})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise SpecError('a JSON spec is an object with a "type", e.g. '
                        '{"type": "normal", "loc": 0, "scale": 1}')
    spec = dict(spec)
    return spec.pop("type"), [], spec


def parse_spec(text: str):
    """The distribution a SPEC describes (see the module docstring).

    Raises:
      SpecError: the spec is malformed, names an unknown constructor, or the constructor
        rejects its arguments; the message says which.
    """
    import jax.numpy as jnp

    text = text.strip()
    if text.startswith("{"):
        name, args, kwargs = _parse_json(text)
    elif "(" in text:
        name, args, kwargs = _parse_call(text)
    elif ":" in text:
        name, args, kwargs = _parse_short(text)
    else:
        raise SpecError("expected a constructor call like Normal(0, 1), a short form like "
                        "normal:0,1 or mixture:means=..;scales=.., or a JSON object")
    constructors = _constructors()
    make = constructors.get(name.lower())
    if make is None:
        raise SpecError(f"unknown constructor {name!r}; choose from {', '.join(NAMES)}")
    args = [jnp.asarray(np.asarray(_numbers(a, name), np.float32)) for a in args]
    kwargs = {k: jnp.asarray(np.asarray(_numbers(v, f"{name} {k}"), np.float32))
              for k, v in kwargs.items()}
    try:
        return make(*args, **kwargs)
    except (TypeError, ValueError) as error:
        raise SpecError(f"{name}(...) refused its arguments: {error}") from None


ESTIMATORS = ("k1", "k2", "k3", "cv*")
USES_RATIO = ("k3", "cv*")


def _negative_log_ratio(l):
    """Indicator of log q - log p < 0, i.e. l = log p - log q > 0 (k1 < 0 there)."""
    return (l > 0).astype(l.dtype)


def estimate_pair(q, p, *, seed: int, num_samples: int, tail: bool = True,
                  hill_samples: int = 2**17, growth_sizes=(2**10, 2**12, 2**14, 2**16),
                  budget: int = 1024) -> dict[str, Any]:
    """The estimator table (and, with ``tail``, the sweep's tail verdict) for one pair."""
    import jax

    import jaxkl
    from experiments import estimator_sweep
    from jaxkl.montecarlo import sample_log_ratios

    key = jax.random.key(seed)
    ref = jaxkl.reference_kl(q, p, key=jax.random.fold_in(key, 1))
    true_kl = float(ref.value)
    relative = math.isfinite(true_kl) and true_kl > 0
    res = jaxkl.estimate(q, p, key=jax.random.fold_in(key, 0), num_samples=num_samples,
                         estimators=(*ESTIMATORS, _negative_log_ratio))
    frac = res["_negative_log_ratio"]
    result: dict[str, Any] = {
        "true_kl": true_kl, "reference_method": ref.method, "reference_error": ref.error,
        "num_samples": int(frac.count), "seed": seed,
        "fraction_log_q_minus_log_p_negative": float(frac.mean),
        "fraction_stderr": float(frac.stderr), "estimators": {},
    }
    nan = float("nan")
    for name in ESTIMATORS:
        s = res[name]
        rel = jaxkl.relative_error(s, true_kl, level=0.95) if relative else None
        result["estimators"][name] = {
            "mean": float(s.mean), "stderr": float(s.stderr), "std": float(s.std),
            "bias": float(s.mean) - true_kl,
            "bias_rel": float(rel.value) if rel else nan,
            "bias_rel_low": float(rel.low) if rel else nan,
            "bias_rel_high": float(rel.high) if rel else nan,
            "std_rel": float(s.std) / true_kl if relative else nan,
        }
    if tail:
        log_ratio = np.asarray(sample_log_ratios(q, p, key=jax.random.fold_in(key, 7),
                                                 num_samples=hill_samples), np.float64)
        alpha, alpha_se = estimator_sweep.hill_tail_index(log_ratio, int(np.sqrt(hill_samples)))
        growth = estimator_sweep.std_growth(q, p, key=jax.random.fold_in(key, 2),
                                            sizes=growth_sizes)
        grows = estimator_sweep.std_grows(growth)
        variance = estimator_sweep.verdict(alpha, alpha_se, None, grows)

        def rmse(name: str) -> float:
            e = result["estimators"][name]
            if name in USES_RATIO and variance != "finite":
                return float("inf")
            bias = e["bias"] if name == "k2" else 0.0
            return float(np.sqrt(bias**2 + e["std"] ** 2 / budget))

        result["tail"] = {
            "tail_index": alpha, "tail_index_se": alpha_se, "k3_std_grows": grows,
            "growth_sizes": [int(n) for n in growth_sizes], "growth": growth,
            "variance": variance, "budget": budget,
            "best_at_budget": min(ESTIMATORS, key=rmse),
        }
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"true KL(q||p) = {result['true_kl']:.6g} ({result['reference_method']}, error "
        f"{result['reference_error']:.2g}); {result['num_samples']} samples of q, seed "
        f"{result['seed']}.",
        "",
        "| estimator | mean | stderr | bias/true [95% CI] | std/true |",
        "|---|---|---|---|---|",
    ]
    for name, e in result["estimators"].items():
        lines.append(
            f"| {name} | {e['mean']:.6g} | {e['stderr']:.2g} | {e['bias_rel']:+.4f} "
            f"[{e['bias_rel_low']:+.4f}, {e['bias_rel_high']:+.4f}] | {e['std_rel']:.3f} |")
    lines += ["", f"Fraction of samples with log q - log p < 0 (where k1 < 0): "
              f"{result['fraction_log_q_minus_log_p_negative']:.4f} "
              f"± {result['fraction_stderr']:.4f}."]
    tail = result.get("tail")
    if tail:
        growth = ", ".join(f"{s:.3g}" for s in tail["growth"]["k3"])
        lines += [
            "",
            "| tail index of r = p/q (Hill) | k3 std at n = "
            f"{'/'.join(str(n) for n in tail['growth_sizes'])} | Var_q(r) | "
            f"best at {tail['budget']} samples |",
            "|---|---|---|---|",
            f"| {tail['tail_index']:.3g} ± {tail['tail_index_se']:.2g} | {growth} | "
            f"{tail['variance']} | {tail['best_at_budget']} |",
            "",
            "Var_q(r) is \"finite\" only when the Hill interval lies above 2 and k3's std does "
            "not keep growing with n; otherwise k3's and cv*'s std and intervals cannot be "
            "trusted (estimator_sweep's rule).",
        ]
    return "\n".join(lines)


def csv_rows(result: dict[str, Any]) -> list[list[Any]]:
    """One row per estimator, at full precision."""
    header = ["estimator", "mean", "stderr", "std", "bias", "bias_rel", "bias_rel_low",
              "bias_rel_high", "std_rel", "true_kl", "reference_method", "num_samples"]
    rows = [header]
    for name, e in result["estimators"].items():
        rows.append([name, *(repr(e[k]) for k in header[1:9]), repr(result["true_kl"]),
                     result["reference_method"], result["num_samples"]])
    return rows


def _count(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not (value.is_integer() and value >= 1):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments estimate",
        description="k1/k2/k3/cv* bias and spread, and the tail verdict, for your own "
                    "(q, p). SPEC: Normal(0, 1), normal:0,1, "
                    "mixture:means=-1,1;scales=0.5,0.5;weights=0.3,0.7, a distrax or "
                    "jaxkl constructor call, or JSON {\"type\": ..., ...}.",
        allow_abbrev=False,
    )
    parser.add_argument("--q", required=True, metavar="SPEC", help="the sampling distribution")
    parser.add_argument("--p", required=True, metavar="SPEC", help="the other distribution")
    parser.add_argument("--num-samples", type=_count, default=1_000_000, metavar="N",
                        help="samples of q for the table (default 1e6; 1e7 is fine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=_count, default=1024, metavar="N",
                        help="sample budget at which the best estimator is named")
    parser.add_argument("--no-tail", action="store_true",
                        help="skip the tail index / variance verdict (faster)")
    parser.add_argument("--json", type=pathlib.Path, metavar="PATH", help="write the result")
    parser.add_argument("--csv", type=pathlib.Path, metavar="PATH",
                        help="write the table, one row per estimator, full precision")
    return parser


def main(argv: list[str]) -> int:
    from experiments import _framework

    parser = _parser()
    args = parser.parse_args(argv)
    dists = {}
    for name in ("q", "p"):
        try:
            dists[name] = parse_spec(getattr(args, name))
        except SpecError as error:
            parser.error(f"--{name} {getattr(args, name)!r}: {error}")
    try:
        result = estimate_pair(dists["q"], dists["p"], seed=args.seed,
                               num_samples=args.num_samples, tail=not args.no_tail,
                               budget=args.budget)
    except ValueError as error:  # jaxkl names `q` or `p` (parameters, shapes, batches)
        parser.error(f"--q/--p: {error}")
    result = {"q": args.q, "p": args.p, **result}
    print(table(result))
    if args.json:
        _framework.atomic_write_bytes(args.json, json.dumps(result, indent=1).encode())
        print(f"wrote {args.json}")
    if args.csv:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(csv_rows(result))
        _framework.atomic_write_bytes(args.csv, buffer.getvalue().encode())
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
