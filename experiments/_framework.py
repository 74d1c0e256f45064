"""The experiment protocol, the registry and the runner behind ``python -m experiments``.

An experiment is a module ``experiments/NAME.py`` that defines ``EXPERIMENT``, an
:class:`Experiment`. The runner discovers every such module, runs the ones asked for at
the quick (CPU) or full (accelerator) size, and writes into the output folder:

- ``results/NAME.json``: ``{"name", "size", "config", "seed", "overrides", "versions",
  "device", "wall_time_s", "result"}``, written atomically (temporary file, then
  ``os.replace``); ``overrides`` holds the keys whose value differs from the size's
  default configuration (``--seed``/``--set``, see :func:`apply_overrides`);
- ``results/NAME.csv`` (``NAME-2.csv``, ... for further tables): every Markdown table of
  ``table(result)``, cell by cell, written atomically before the JSON;
- ``figures/NAME.png``, written atomically too;
- ``REPORT.md``: every figure and table with each experiment's own short reading,
  rewritten after each experiment.

Each experiment runs in a child process of its own (:func:`run_isolated`) under a
watchdog: past its time limit the child prints every thread's stack
(``faulthandler``) and exits, the runner names the experiment that stalled, and the
other experiments and the report go on. A deadlock inside a compiled program (which no
Python-level timeout can interrupt) therefore costs one experiment, not the whole run.

An experiment whose files exist and are sound (the JSON parses, has this configuration
and the keys the report reads; the PNG decodes) is skipped unless ``--force``, so an
interrupted run resumes where it stopped; missing or damaged CSV tables are rewritten from
a sound JSON without rerunning. Quick and full results never share a folder, and results
of one set of overrides never silently replace another's (:func:`override_conflicts`).
"""

from __future__ import annotations

import csv
import dataclasses
import faulthandler
import hashlib
import importlib
import io
import json
import math
import os
import pathlib
import pkgutil
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Config = Mapping[str, Any]
Result = dict[str, Any]

SIZES = ("quick", "full")
# Per experiment, unless the experiment or --timeout says otherwise: generous for the
# quick size on a 2-core machine (the slowest quick experiment takes a few minutes).
DEFAULT_TIMEOUT_S = {"quick": 20 * 60.0, "full": 6 * 3600.0}
# After the child's own watchdog fires it needs a moment to print stacks and exit; the
# parent kills it only if it is still there after this grace period.
_KILL_GRACE_S = 30.0
_RECORD_KEYS = ("name", "config", "versions", "device", "wall_time_s", "result")


class BadOverride(ValueError):
    """A ``--set``/``--seed`` that does not fit the experiments selected (exit status 2)."""


_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number",
               str: "a string", list: "a list", dict: "an object"}


def _kind(value: Any) -> type | None:
    for kind in (bool, int, float, str, list, dict):  # bool before int: True is an int
        if isinstance(value, kind):
            return kind
    return None


def parse_override(text: str) -> tuple[str, str]:
    """``"KEY=VALUE"`` or ``"NAME.KEY=VALUE"`` -> (key or NAME.KEY, raw value text)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise BadOverride(f"--set {text!r}: expected KEY=VALUE (or NAME.KEY=VALUE)")
    return key, value


def coerce_value(key: str, raw: str, default: Any) -> Any:
    """``raw`` read as a JSON literal and checked against the type of ``default``.

    Integers are accepted where the default is a float, integral numbers (``1e6``) where
    it is an int, and bare words where it is a string; list elements are checked when the
    default's elements are all numbers or all strings.
    """
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        if isinstance(default, str):
            return raw
        raise BadOverride(f"--set {key}={raw}: {raw!r} is not a JSON value "
                          f"(expected {_TYPE_NAMES.get(_kind(default), 'JSON')})") from None
    want, got = _kind(default), _kind(value)
    if want is None or default is None:
        return value
    if want is float and got is int:
        return float(value)
    if want is int and got is float and value.is_integer():
        return int(value)
    if got is not want:
        raise BadOverride(f"--set {key}={raw}: expected {_TYPE_NAMES[want]} like the default "
                          f"{json.dumps(default)}, got {json.dumps(value)}")
    if want is float and not math.isfinite(value):
        raise BadOverride(f"--set {key}={raw}: expected a finite number")
    if want is list and default:
        kinds = {_kind(v) for v in default}
        numbers = kinds <= {int, float}
        if numbers and not all(_kind(v) in (int, float) for v in value):
            raise BadOverride(f"--set {key}={raw}: expected a list of numbers like the "
                              f"default {json.dumps(default)}")
        if kinds == {str} and not all(isinstance(v, str) for v in value):
            raise BadOverride(f"--set {key}={raw}: expected a list of strings like the "
                              f"default {json.dumps(default)}")
    return value


def apply_overrides(
    experiments: Iterable[Experiment], size: str, overrides: Iterable[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """Each selected experiment's configuration with ``overrides`` applied, by name.

    ``overrides`` are ``(key, raw value)`` pairs in command-line order (a later one wins).
    A plain ``KEY`` must be a key of every selected experiment's configuration;
    ``NAME.KEY`` targets experiment ``NAME`` only (which must be selected).

    Raises:
      BadOverride: an unknown key (named, with the valid keys), an experiment name that is
        not selected, or a value of the wrong type.
    """
    selected = {e.name: e for e in experiments}
    configs = {name: _jsonable(e.config(size)) for name, e in selected.items()}
    for key, raw in overrides:
        name, dot, bare = key.rpartition(".")
        if dot:
            if name not in selected:
                raise BadOverride(
                    f"--set {key}={raw}: {name!r} is not one of the experiments selected "
                    f"({', '.join(selected)})")
            targets = [name]
        else:
            targets = list(selected)
        for target in targets:
            config = configs[target]
            if bare not in config:
                others = "" if len(targets) == 1 else (
                    f"; a plain KEY must be in every selected experiment, use "
                    f"{target}.KEY=VALUE or NAME.KEY=VALUE to set one experiment's key")
                raise BadOverride(
                    f"--set {key}={raw}: unknown key {bare!r} for experiment {target!r}; "
                    f"its keys are {', '.join(sorted(config))}{others}")
            config[bare] = coerce_value(key, raw, config[bare])
    return configs


def config_overrides(experiment: Experiment, config: Config, size: str) -> dict[str, Any]:
    """The keys of ``config`` whose value differs from the experiment's ``size`` default."""
    default = _jsonable(experiment.config(size))
    return {k: v for k, v in _jsonable(config).items() if default.get(k, object()) != v}


def overrides_label(overrides: Iterable[tuple[str, str]]) -> str:
    """A folder-name-safe label for a set of ``--set`` overrides (short, or a hash)."""
    text = ",".join(f"{k}={v}" for k, v in overrides)
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)
    if len(safe) > 60 or safe.startswith("."):
        return "h" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return safe


class Progress:
    """Per-experiment progress: wraps iterables (tqdm when available, silent otherwise)."""

    def __init__(self, desc: str, enabled: bool = True):
        self.desc = desc
        self.enabled = enabled

    def track(self, iterable: Iterable, total: int | None = None, desc: str | None = None):
        if not self.enabled:
            return iterable
        from tqdm.auto import tqdm

        label = f"{self.desc}: {desc}" if desc else self.desc
        return tqdm(iterable, total=total, desc=label, leave=False, file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One figure/table: how to compute it, draw it, tabulate it and read it.

    Attributes:
      name: the module name, used on the command line and for output files.
      description: one line for ``--list``.
      quick: the CPU-size configuration (JSON-serialisable; must contain ``seed``).
      full: the accelerator-size configuration (same keys).
      run: ``run(config, progress) -> result``; the result must be JSON-serialisable
        (floats, ints, strings, lists, dicts) and carry everything plot/table need.
      plot: ``plot(result, path)`` writes one PNG figure to ``path``.
      table: ``table(result) -> str``, a Markdown table, printed and put in the report.
      reading: ``reading(result) -> str``, a few sentences saying what the figure shows,
        computed from the result (numbers included), for the report.
      order: position in ``all`` (smaller runs first).
      timeout_s: per-size time limits in seconds overriding ``DEFAULT_TIMEOUT_S``.
      module: the module that defines ``EXPERIMENT`` (set by :func:`from_module`); a
        child process imports it to run the experiment.
    """

    name: str
    description: str
    quick: Config
    full: Config
    run: Callable[[Config, Progress], Result]
    plot: Callable[[Result, pathlib.Path], None]
    table: Callable[[Result], str]
    reading: Callable[[Result], str]
    order: int = 100
    timeout_s: Mapping[str, float] = dataclasses.field(default_factory=dict)
    module: str = ""

    def config(self, size: str) -> Config:
        return self.full if size == "full" else self.quick

    def time_limit(self, size: str) -> float:
        return float(self.timeout_s.get(size, DEFAULT_TIMEOUT_S[size]))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one isolated run ended: ``status`` is "ok", "failed" or "stalled"."""

    name: str
    status: str
    wall_time_s: float
    detail: str = ""


def from_module(module_name: str) -> Experiment | None:
    """The ``EXPERIMENT`` defined by a module (with ``module`` set), or None."""
    experiment = getattr(importlib.import_module(module_name), "EXPERIMENT", None)
    if not isinstance(experiment, Experiment):
        return None
    return dataclasses.replace(experiment, module=module_name)


def discover(package: str = "experiments") -> dict[str, Experiment]:
    """All experiment modules in ``package``, by name, in run order."""
    found = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not info.name.startswith("_"):
            experiment = from_module(f"{package}.{info.name}")
            if experiment is not None:
                found.append(experiment)
    return {e.name: e for e in sorted(found, key=lambda e: (e.order, e.name))}


def environment() -> dict[str, Any]:
    """Package versions and the device, for provenance in every result file."""
    import importlib.metadata as md

    import jax

    versions = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "optax", "distrax", "chex", "numpy", "scipy", "jaxkl"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    devices = jax.devices()
    device = {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    return {"versions": versions, "device": device}


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the new, never half.

    The file gets the usual umask-derived mode (``mkstemp`` alone would leave it 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save_figure(fig, path: pathlib.Path) -> None:
    """Saves a matplotlib figure atomically as PNG."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _jsonable(config: Config) -> dict[str, Any]:
    return json.loads(json.dumps(dict(config)))


def result_path(out: pathlib.Path, name: str) -> pathlib.Path:
    return out / "results" / f"{name}.json"


def figure_path(out: pathlib.Path, name: str) -> pathlib.Path:
    return out / "figures" / f"{name}.png"


def csv_path(out: pathlib.Path, name: str, index: int = 1) -> pathlib.Path:
    """``results/NAME.csv`` for an experiment's first table, ``NAME-2.csv``, ... after."""
    return out / "results" / (f"{name}.csv" if index == 1 else f"{name}-{index}.csv")


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table row (``\\|`` is a literal bar)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in ``text`` as rows of cells (header first, no ``---`` row)."""
    tables: list[list[list[str]]] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2 and re.fullmatch(r"[\s|:-]+", block[1]) and "-" in block[1]:
            tables.append([_cells(block[0]), *(_cells(row) for row in block[2:])])
        block = []
    return tables


def table_csvs(experiment: Experiment, result: Result) -> list[bytes]:
    """The experiment's tables (from ``experiment.table``) as CSV files' contents."""
    files = []
    for rows in markdown_tables(experiment.table(result)):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        files.append(buffer.getvalue().encode())
    return files


def read_csv(path: pathlib.Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def write_csvs(experiment: Experiment, result: Result, out: pathlib.Path) -> list[pathlib.Path]:
    """Writes each table's CSV atomically (and removes extra ones from an older run)."""
    tables = table_csvs(experiment, result)
    paths = [csv_path(out, experiment.name, i) for i in range(1, len(tables) + 1)]
    for path, data in zip(paths, tables, strict=True):
        atomic_write_bytes(path, data)
    for stale in (out / "results").glob(f"{experiment.name}-*.csv"):
        suffix = stale.stem[len(experiment.name) + 1:]
        if suffix.isdigit() and int(suffix) > len(tables):
            stale.unlink()
    return paths


def repair_csvs(experiment: Experiment, out: pathlib.Path) -> bool:
    """Rewrites the CSV tables from a sound results file when they are missing or stale
    (they are derived from the JSON alone); True when it wrote them."""
    result = load_record(experiment, out)["result"]
    if csvs_are_sound(experiment, result, out):
        return False
    write_csvs(experiment, result, out)
    return True


def csvs_are_sound(experiment: Experiment, result: Result, out: pathlib.Path) -> bool:
    """True when every table's CSV exists and holds exactly that table's cells."""
    for index, rows in enumerate(markdown_tables(experiment.table(result)), start=1):
        try:
            if read_csv(csv_path(out, experiment.name, index)) != rows:
                return False
        except (OSError, csv.Error, UnicodeDecodeError):
            return False
    return True


class BadRecord(Exception):
    """A results file that cannot back the report (unreadable, truncated, wrong keys)."""


def load_record(experiment: Experiment, out: pathlib.Path) -> dict[str, Any]:
    """The experiment's saved record, checked to be one the report can use.

    Raises:
      FileNotFoundError: no results file.
      BadRecord: the file does not parse, lacks a key the report reads, or its table and
        reading cannot be made from it; the message names the file and the fault.
    """
    path = result_path(out, experiment.name)
    text = path.read_text()
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRecord(f"{path}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise BadRecord(f"{path}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in _RECORD_KEYS if key not in record]
    if missing:
        raise BadRecord(f"{path}: missing keys {missing}")
    try:
        experiment.table(record["result"])
        experiment.reading(record["result"])
    except Exception as error:  # the experiment's own code decides what a result needs
        raise BadRecord(f"{path}: its result cannot be tabulated ({error!r})") from None
    return record


def figure_is_sound(path: pathlib.Path) -> bool:
    """True when ``path`` is a PNG that decodes completely (a truncated one does not)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.format == "PNG"
    except (OSError, SyntaxError, ValueError):  # PIL's errors for missing/broken images
        return False


def record_size(experiment: Experiment, record: Mapping[str, Any]) -> str | None:
    """"quick" or "full" for a saved record (older files: inferred from the config)."""
    if record.get("size") in SIZES:
        return record["size"]
    for size in SIZES:
        if record.get("config") == _jsonable(experiment.config(size)):
            return size
    return None


def is_done(experiment: Experiment, config: Config, out: pathlib.Path, *,
            check_csv: bool = True) -> bool:
    """True when a sound result for exactly this configuration, a sound figure and (unless
    ``check_csv`` is False) the tables' CSV files exist."""
    try:
        record = load_record(experiment, out)
    except (OSError, BadRecord):
        return False
    return (record["config"] == _jsonable(config)
            and figure_is_sound(figure_path(out, experiment.name))
            and (not check_csv or csvs_are_sound(experiment, record["result"], out)))


def run_one(
    experiment: Experiment, config: Config, out: pathlib.Path, *, size: str = "quick",
    progress: bool = True,
) -> dict[str, Any]:
    """Runs one experiment in this process; writes its JSON and figure atomically."""
    start = time.perf_counter()
    result = experiment.run(config, Progress(experiment.name, enabled=progress))
    wall = time.perf_counter() - start
    record = {
        "name": experiment.name,
        "size": size,
        "config": _jsonable(config),
        "seed": config.get("seed"),
        "overrides": config_overrides(experiment, config, size),
        **environment(),
        "wall_time_s": wall,
        "result": result,
    }
    payload = json.dumps(record, indent=1, allow_nan=True).encode()
    # Figure and CSV tables first, JSON last: the JSON's presence marks the experiment
    # as finished.
    experiment.plot(result, figure_path(out, experiment.name))
    write_csvs(experiment, result, out)
    atomic_write_bytes(result_path(out, experiment.name), payload)
    return record


def run_isolated(
    experiment: Experiment, config: Config, out: pathlib.Path, *, size: str = "quick",
    progress: bool = True, timeout_s: float | None = None,
) -> Outcome:
    """Runs one experiment in a child process under a watchdog; never hangs the caller.

    The child arms ``faulthandler.dump_traceback_later(timeout_s, exit=True)``: at the
    limit it writes every thread's stack to stderr and exits, whatever the main thread
    is blocked in (compiled code included). The parent waits ``_KILL_GRACE_S`` longer
    and then kills the child.
    """
    if not experiment.module:
        raise ValueError(f"experiment {experiment.name!r} has no module; load it with "
                         "from_module() or discover()")
    limit = experiment.time_limit(size) if timeout_s is None else float(timeout_s)
    job = {"module": experiment.module, "config": _jsonable(config), "out": str(out),
           "size": size, "progress": progress, "timeout_s": limit}
    start = time.perf_counter()
    command = [sys.executable, "-m", "experiments._child", json.dumps(job)]
    # The child finds this package wherever the parent was started from.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(pathlib.Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")])
    )
    try:
        child = subprocess.run(command, timeout=limit + _KILL_GRACE_S, check=False, env=env)
        code = child.returncode
    except subprocess.TimeoutExpired:
        code = None
    wall = time.perf_counter() - start
    if code == 0:
        return Outcome(experiment.name, "ok", wall)
    if code is None or wall >= limit:
        return Outcome(experiment.name, "stalled", wall,
                       f"no result after {limit:.0f} s (its stacks are printed above)")
    return Outcome(experiment.name, "failed", wall, f"exit status {code} (traceback above)")


def child_main(job_json: str) -> int:
    """Entry point of the child process started by :func:`run_isolated`."""
    job = json.loads(job_json)
    # exit=True: os._exit after the dump, since a deadlocked main thread never returns.
    faulthandler.dump_traceback_later(job["timeout_s"], exit=True)
    experiment = from_module(job["module"])
    try:
        run_one(experiment, job["config"], pathlib.Path(job["out"]), size=job["size"],
                progress=job["progress"])
    except BaseException:
        traceback.print_exc()
        sys.stderr.write(f"experiment {experiment.name!r} failed\n")
        return 1
    finally:
        faulthandler.cancel_dump_traceback_later()
    return 0


def check_writable(out: pathlib.Path) -> None:
    """Raises ``OSError`` with a clear message unless results can be written under ``out``.

    Creates the folders and writes (then removes) a probe file in each, so that a path
    that is a file, a read-only folder or a read-only mount fails before any work.
    """
    for folder in (out, out / "results", out / "figures"):
        if folder.exists() and not folder.is_dir():
            raise OSError(f"`--out` {out}: {folder} exists and is not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise OSError(f"`--out` {out}: cannot write in {folder} ({error.strerror})") from None


def override_conflicts(experiments: Iterable[Experiment], configs: Mapping[str, Config],
                       size: str, out: pathlib.Path) -> list[str]:
    """Results in ``out`` that this run would replace by ones of other overrides.

    For each selected experiment whose results file exists: a description when its
    recorded overrides (none for a default run or an older file) differ from this run's
    and either is not the default, e.g. a ``--seed 3`` run over default results.
    """
    conflicts = []
    for experiment in experiments:
        try:
            record = json.loads(result_path(out, experiment.name).read_text())
            old = record.get("overrides") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            continue  # no results, or unreadable ones: nothing sound to protect
        new = config_overrides(experiment, configs[experiment.name], size)
        if old != new and (old or new):
            describe = lambda o: ("the default configuration" if not o else
                                  ", ".join(f"{k}={json.dumps(v)}" for k, v in o.items()))
            conflicts.append(f"{experiment.name} ({describe(old)}; this run: {describe(new)})")
    return conflicts


def sizes_present(experiments: Iterable[Experiment], out: pathlib.Path) -> dict[str, list[str]]:
    """The sizes of the results already in ``out``: size -> result files of that size."""
    by_name = {e.name: e for e in experiments}
    found: dict[str, list[str]] = {}
    for path in sorted((out / "results").glob("*.json")):
        experiment = by_name.get(path.stem)
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # unreadable files are reported by write_report, not here
        size = record.get("size") if experiment is None else record_size(experiment, record)
        if size in SIZES:
            found.setdefault(size, []).append(path.name)
    return found


def write_report(
    experiments: Iterable[Experiment], out: pathlib.Path, outcomes: Iterable[Outcome] = ()
) -> pathlib.Path:
    """Writes REPORT.md from the result files present in ``out`` (atomically).

    A results file that cannot be used is named in the report and skipped; the others
    are still reported. ``outcomes`` that did not succeed are listed at the top.
    """
    lines = ["# jaxkl: reproduced figures and tables", ""]
    failures = [o for o in outcomes if o.status != "ok"]
    if failures:
        lines += ["**Not finished in the last run:**", ""]
        lines += [f"- `{o.name}`: {o.status}, {o.detail}" for o in failures]
        lines.append("")
    skipped = []
    for experiment in experiments:
        try:
            record = load_record(experiment, out)
        except FileNotFoundError:
            continue
        except (OSError, BadRecord) as error:
            skipped.append(f"- `{experiment.name}`: {error}; rerun it with "
                           f"`python -m experiments {experiment.name} --force`.")
            continue
        result = record["result"]
        device = record["device"]
        overrides = record.get("overrides") or {}
        changed = [] if not overrides else [
            "**Not the default configuration:** run with "
            + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in overrides.items())
            + f" (`--set`; default {record.get('size', '')} values otherwise).", ""]
        lines += [
            f"## {experiment.name}",
            "",
            experiment.description,
            "",
            *changed,
            f"![{experiment.name}](figures/{experiment.name}.png)",
            "",
            experiment.table(result),
            "",
            experiment.reading(result),
            "",
            f"<sub>config: `{json.dumps(record['config'])}`; device: {device['platform']} "
            f"({device['kind']}) x{device['count']}; jax {record['versions']['jax']}; "
            f"wall time {record['wall_time_s']:.1f} s.</sub>",
            "",
        ]
    if skipped:
        lines[2:2] = ["**Results files that could not be read (left out below):**", "",
                      *skipped, ""]
    report = out / "REPORT.md"
    atomic_write_bytes(report, "\n".join(lines).encode())
    return report
