"""The experiment runner: atomic writes, resume after interruption, command-line errors."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import __main__ as cli
from experiments import _framework as fw

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _toy(name="toy", fail_in=None, calls=None):
    """A tiny experiment; ``fail_in`` names the stage that raises KeyboardInterrupt."""

    def run(config, progress):
        if calls is not None:
            calls.append(name)
        if fail_in == "run":
            raise KeyboardInterrupt
        return {"value": config["x"] * 2}

    def plot(result, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, result["value"]])
        if fail_in == "plot":
            plt.close(fig)
            raise KeyboardInterrupt
        fw.atomic_save_figure(fig, path)
        plt.close(fig)

    return fw.Experiment(
        name=name, description="toy", quick={"seed": 0, "x": 1}, full={"seed": 0, "x": 10},
        run=run, plot=plot, table=lambda r: f"| value |\n|---|\n| {r['value']} |",
        reading=lambda r: f"value is {r['value']}",
    )


def _files(folder: pathlib.Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_run_one_writes_result_figure_and_provenance(tmp_path):
    exp = _toy()
    record = fw.run_one(exp, exp.quick, tmp_path, progress=False)
    saved = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert saved["result"] == {"value": 2} == record["result"]
    assert saved["config"] == {"seed": 0, "x": 1} and saved["seed"] == 0
    assert {"jax", "jaxlib", "optax", "distrax", "numpy"} <= set(saved["versions"])
    assert saved["device"]["platform"] == "cpu" and saved["wall_time_s"] >= 0
    assert (tmp_path / "figures" / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fw.is_done(exp, exp.quick, tmp_path)
    assert not fw.is_done(exp, exp.full, tmp_path)  # another configuration is not done
    report = fw.write_report([exp], tmp_path).read_text()
    assert "figures/toy.png" in report and "value is 2" in report


@pytest.mark.parametrize("stage", ["run", "plot"])
def test_interrupted_experiment_leaves_no_partial_files_and_reruns(tmp_path, stage):
    exp = _toy(fail_in=stage)
    with pytest.raises(KeyboardInterrupt):
        fw.run_one(exp, exp.quick, tmp_path, progress=False)
    assert not (tmp_path / "results" / "toy.json").exists()
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp")]
    assert not fw.is_done(exp, exp.quick, tmp_path)
    fw.run_one(_toy(), exp.quick, tmp_path, progress=False)  # the rerun completes
    assert fw.is_done(exp, exp.quick, tmp_path)


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    fw.atomic_write_bytes(target, b"old")

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        fw.atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert _files(tmp_path) == ["a.json"]


def test_main_resumes_only_unfinished_experiments(tmp_path, monkeypatch):
    calls = []
    registry = {"first": _toy("first", calls=calls), "second": _toy("second", calls=calls)}
    monkeypatch.setattr(fw, "discover", lambda: registry)
    # First run: "second" is interrupted (Ctrl-C) after "first" finished.
    registry["second"] = _toy("second", fail_in="run", calls=calls)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--out", str(tmp_path), "--no-progress"])
    assert calls == ["first", "second"]
    # Second run redoes only the unfinished one.
    registry["second"] = _toy("second", calls=calls)
    assert cli.main(["--out", str(tmp_path), "--no-progress"]) == 0
    assert calls == ["first", "second", "second"]
    assert cli.main(["--out", str(tmp_path), "--no-progress", "--force", "--only", "first"]) == 0
    assert calls[-1] == "first"
    assert "## second" in (tmp_path / "REPORT.md").read_text()


@pytest.mark.parametrize(
    "args",
    [["--bogus-flag"], ["no_such_experiment"], ["--only", "nope"], ["--out"]],
)
def test_bad_command_line_exits_2_and_writes_nothing(tmp_path, args):
    out = tmp_path / "out"
    full_args = [*args, "--out", str(out)] if args != ["--out"] else args
    proc = subprocess.run([sys.executable, "-m", "experiments", *full_args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "usage" in proc.stderr.lower() or "error" in proc.stderr.lower()
    assert not out.exists()


def test_list_names_every_experiment():
    proc = subprocess.run([sys.executable, "-m", "experiments", "--list"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=True)
    for name in fw.discover():
        assert name in proc.stdout
