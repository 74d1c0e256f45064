"""Command line: ``python -m experiments [all | NAME ...] [--full] [--only NAME] ...``.

Runs experiments at the quick (CPU) size by default into ``outputs/quick`` (``--full``:
accelerator size into ``outputs/full``), skipping those already done for the same
configuration, then writes ``REPORT.md``. Bad arguments exit with status 2 and write
nothing.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from experiments import _framework


def _parser(names: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Reproduce jaxkl's figures and tables.",
    )
    parser.add_argument(
        "names", nargs="*", default=["all"], metavar="NAME",
        help=f"'all' (default) or experiment names: {', '.join(names)}",
    )
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this experiment (repeatable)")
    parser.add_argument("--full", action="store_true", help="accelerator-size configurations")
    parser.add_argument("--force", action="store_true", help="rerun even if results exist")
    parser.add_argument("--list", action="store_true", help="list experiments and exit")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output folder (default outputs/quick or outputs/full)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    registry = _framework.discover()
    parser = _parser(list(registry))
    args = parser.parse_args(argv)
    if args.list:
        for name, experiment in registry.items():
            print(f"{name:24s} {experiment.description}")
        return 0
    wanted = [n for n in args.names if n != "all"] + args.only
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {list(registry)}")
    selected = [registry[n] for n in wanted] if wanted else list(registry.values())
    out = args.out or pathlib.Path("outputs") / ("full" if args.full else "quick")
    size = "full" if args.full else "quick"

    from tqdm.auto import tqdm

    bar = tqdm(selected, desc="experiments", unit="exp", file=sys.stderr,
               disable=args.no_progress)
    for experiment in bar:
        config = experiment.full if args.full else experiment.quick
        bar.set_postfix_str(experiment.name)
        if not args.force and _framework.is_done(experiment, config, out):
            tqdm.write(f"[skip] {experiment.name}: results exist for this {size} config")
            continue
        start = time.perf_counter()
        record = _framework.run_one(experiment, config, out, progress=not args.no_progress)
        tqdm.write(f"\n== {experiment.name} ({time.perf_counter() - start:.1f} s) ==")
        tqdm.write(experiment.table(record["result"]))
    report = _framework.write_report(registry.values(), out)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
