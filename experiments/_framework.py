"""The experiment protocol, the registry and the runner behind ``python -m experiments``.

An experiment is a module ``experiments/NAME.py`` that defines ``EXPERIMENT``, an
:class:`Experiment`. The runner discovers every such module, runs the ones asked for at
the quick (CPU) or full (accelerator) size, and writes into the output folder:

- ``results/NAME.json``: ``{"name", "config", "seed", "versions", "device",
  "wall_time_s", "result"}``, written atomically (temporary file, then ``os.replace``);
- ``figures/NAME.png``, written atomically too;
- ``REPORT.md``: every figure and table with each experiment's own short reading.

An experiment whose JSON exists with the same configuration (and whose figure exists) is
skipped unless ``--force``, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pathlib
import pkgutil
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Config = Mapping[str, Any]
Result = dict[str, Any]


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


def discover() -> dict[str, Experiment]:
    """All experiment modules in this package, by name, in run order."""
    package = importlib.import_module("experiments")
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"experiments.{info.name}")
        experiment = getattr(module, "EXPERIMENT", None)
        if isinstance(experiment, Experiment):
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


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
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


def is_done(experiment: Experiment, config: Config, out: pathlib.Path) -> bool:
    """True when a result for exactly this configuration, and its figure, exist."""
    result_path = out / "results" / f"{experiment.name}.json"
    figure_path = out / "figures" / f"{experiment.name}.png"
    if not (result_path.exists() and figure_path.exists()):
        return False
    try:
        saved = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return saved.get("config") == _jsonable(config)


def run_one(
    experiment: Experiment, config: Config, out: pathlib.Path, *, progress: bool = True
) -> dict[str, Any]:
    """Runs one experiment and writes its JSON and figure atomically; returns the record."""
    start = time.perf_counter()
    result = experiment.run(config, Progress(experiment.name, enabled=progress))
    wall = time.perf_counter() - start
    record = {
        "name": experiment.name,
        "config": _jsonable(config),
        "seed": config.get("seed"),
        **environment(),
        "wall_time_s": wall,
        "result": result,
    }
    payload = json.dumps(record, indent=1, allow_nan=True).encode()
    # Figure first, JSON last: the JSON's presence marks the experiment as finished.
    experiment.plot(result, out / "figures" / f"{experiment.name}.png")
    atomic_write_bytes(out / "results" / f"{experiment.name}.json", payload)
    return record


def write_report(experiments: Iterable[Experiment], out: pathlib.Path) -> pathlib.Path:
    """Writes REPORT.md from the result files present in ``out`` (atomically)."""
    lines = ["# jaxkl: reproduced figures and tables", ""]
    for experiment in experiments:
        path = out / "results" / f"{experiment.name}.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        result = record["result"]
        device = record["device"]
        lines += [
            f"## {experiment.name}",
            "",
            experiment.description,
            "",
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
    report = out / "REPORT.md"
    atomic_write_bytes(report, "\n".join(lines).encode())
    return report
