"""Command line: ``python -m experiments [all | NAME ...] [--full] [--only NAME] ...``.

Runs experiments at the quick (CPU) size by default into ``outputs/quick`` (``--full``:
accelerator size into ``outputs/full``), skipping those already done for the same
configuration, and rewrites ``REPORT.md`` after each one. Each experiment runs in its own
process under a time limit (``--timeout``); one that stalls or fails is reported with its
stacks or traceback, the others still run, and the exit status is 1. Bad arguments, an
output folder that cannot be written, or one that holds results of the other size exit
with status 2 before any work.

``--seed N`` and ``--set KEY=VALUE`` (repeatable; ``NAME.KEY=VALUE`` for one experiment)
change the configuration: values are JSON literals checked against the default's type,
and an unknown key exits with status 2. Such runs go by default to their own folder,
``outputs/SIZE-custom-LABEL``, record their overrides in the results and the report, and
never replace results of other overrides (default ones included) without ``--force``.
Every table is also written as CSV next to its JSON (``results/NAME.csv``, ``NAME-2.csv``
for a second table). ``python -m experiments estimate --q SPEC --p SPEC`` runs the
estimator table on a pair of the user's own (see ``experiments/_estimate.py``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from experiments import _framework


def _parser(names: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Reproduce jaxkl's figures and tables.",
        allow_abbrev=False,  # `--ful` must not silently mean `--full`
        epilog="Every table is also written as results/NAME.csv (NAME-2.csv, ... for more "
               "tables). `python -m experiments estimate --q SPEC --p SPEC` runs the "
               "estimator table on your own pair (see `estimate --help`).",
    )
    parser.add_argument(
        "names", nargs="*", default=["all"], metavar="NAME",
        help=f"'all' (default) or experiment names: {', '.join(names)}",
    )
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this experiment (repeatable)")
    parser.add_argument("--full", action="store_true", help="accelerator-size configurations")
    parser.add_argument("--force", action="store_true", help="rerun even if results exist")
    parser.add_argument("--list", action="store_true",
                        help="list experiments and exit; with names, also their "
                             "configuration keys and defaults (at --full size with --full)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output folder (default outputs/quick or outputs/full)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="time limit per experiment (default: 20 min quick, 6 h full)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="set every selected experiment's `seed` (same as --set seed=N)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides",
                        help="override a configuration key (repeatable); VALUE is a JSON "
                             "literal of the default's type; NAME.KEY=VALUE sets it for "
                             "experiment NAME only. Results go to outputs/SIZE-custom-... "
                             "unless --out")
    return parser


def main(argv: list[str] | None = None,
         registry: dict[str, _framework.Experiment] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["estimate"]:
        from experiments import _estimate

        return _estimate.main(argv[1:])
    registry = _framework.discover() if registry is None else registry
    parser = _parser(list(registry))
    args = parser.parse_args(argv)
    wanted = [n for n in args.names if n != "all"] + args.only
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        parser.error(f"unknown experiment(s) {unknown}; choose from {list(registry)}")
    if args.list:
        size = "full" if args.full else "quick"
        for name, experiment in registry.items():
            if wanted and name not in wanted:
                continue
            print(f"{name:24s} {experiment.description}")
            if wanted:  # the keys --set accepts, with their defaults at this size
                for key, value in experiment.config(size).items():
                    print(f"    {key} = {json.dumps(value)}")
        return 0
    if args.timeout is not None and not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    selected = [registry[n] for n in wanted] if wanted else list(registry.values())
    size = "full" if args.full else "quick"
    try:
        overrides = [_framework.parse_override(text) for text in args.overrides]
        if args.seed is not None:
            overrides.insert(0, ("seed", str(args.seed)))
        configs = _framework.apply_overrides(selected, size, overrides)
    except _framework.BadOverride as error:
        parser.error(str(error))
    default_out = pathlib.Path("outputs") / size
    if overrides:
        default_out = default_out.with_name(
            f"{size}-custom-{_framework.overrides_label(overrides)}")
    out = args.out or default_out
    try:
        _framework.check_writable(out)
    except OSError as error:
        parser.error(str(error))
    other = {s: files for s, files in _framework.sizes_present(registry.values(), out).items()
             if s != size}
    if other:
        (other_size, files), = other.items()
        parser.error(
            f"--out {out} holds {other_size}-size results ({', '.join(files[:3])}"
            f"{', ...' if len(files) > 3 else ''}); a {size} run would mix sizes in one "
            f"report. Choose another --out (the default is outputs/{size})."
        )
    conflicts = _framework.override_conflicts(selected, configs, size, out)
    if conflicts and not args.force:
        parser.error(
            f"--out {out} holds results of other configuration overrides: "
            f"{'; '.join(conflicts)}. Pass --force to replace them, or choose another "
            f"--out (runs with --set/--seed default to outputs/{size}-custom-...)."
        )

    outcomes: list[_framework.Outcome] = []
    for index, experiment in enumerate(selected, start=1):
        config = configs[experiment.name]
        label = f"[{index}/{len(selected)}] {experiment.name}"
        if not args.force and _framework.is_done(experiment, config, out, check_csv=False):
            repaired = _framework.repair_csvs(experiment, out)
            print(f"{label}: skipped, sound results exist for this {size} config"
                  + (" (its CSV tables were rewritten from them)" if repaired else ""),
                  flush=True)
            continue
        changed = _framework.config_overrides(experiment, config, size)
        print(f"{label}: running"
              + (f" with {', '.join(f'{k}={v}' for k, v in changed.items())}" if changed
                 else ""), flush=True)
        outcome = _framework.run_isolated(experiment, config, out, size=size,
                                          progress=not args.no_progress,
                                          timeout_s=args.timeout)
        outcomes.append(outcome)
        if outcome.status == "ok":
            record = _framework.load_record(experiment, out)
            print(f"\n== {experiment.name} ({outcome.wall_time_s:.1f} s) ==", flush=True)
            print(experiment.table(record["result"]), flush=True)
        else:
            print(f"experiment {experiment.name!r} {outcome.status}: {outcome.detail}",
                  file=sys.stderr, flush=True)
        # After each experiment, so that an interrupted run still leaves a current report.
        _framework.write_report(registry.values(), out, outcomes)
    report = _framework.write_report(registry.values(), out, outcomes)
    print(f"report: {report}")
    failed = [o for o in outcomes if o.status != "ok"]
    if failed:
        print("not finished: " + ", ".join(f"{o.name} ({o.status})" for o in failed),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
