"""The experiment runner: atomic writes, resume, isolation, stalls, and its failure modes.

The runner runs each experiment in a child process; the toy experiments live in modules
written into a temporary folder on PYTHONPATH (see tests/_toy_experiments.py).
"""

import errno
import json
import os
import pathlib
import stat
import subprocess
import sys
import tempfile

import pytest

from experiments import __main__ as cli
from experiments import _framework as fw
from tests import _toy_experiments as toys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _in_process_toy(name="toy", fail_in=None):
    """A toy for run_one (same process); ``fail_in`` names the stage that is interrupted."""

    def run(config, progress):
        if fail_in == "run":
            raise KeyboardInterrupt
        return {"value": config["x"] * 2}

    def plot(result, path):
        if fail_in == "plot":
            raise KeyboardInterrupt
        toys.make(name).plot(result, path)

    return fw.Experiment(
        name=name, description="toy", quick={"seed": 0, "x": 1}, full={"seed": 0, "x": 10},
        run=run, plot=plot, table=lambda r: f"| value |\n|---|\n| {r['value']} |",
        reading=lambda r: f"value is {r['value']}",
    )


def _files(folder: pathlib.Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class Toys:
    """Writes toy experiment modules and runs the real command line over them."""

    def __init__(self, tmp_path: pathlib.Path, monkeypatch):
        self.modules = tmp_path / "toy_modules"
        self.modules.mkdir()
        self.out = tmp_path / "out"
        self.calls = tmp_path / "calls.txt"
        self.seen = tmp_path / "seen.txt"
        monkeypatch.syspath_prepend(str(self.modules))
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(self.modules), str(ROOT)]))
        monkeypatch.setenv("TOY_CALLS", str(self.calls))
        monkeypatch.setenv("TOY_OUT", str(self.out))
        self.names: list[str] = []

    def add(self, name: str, mode: str = "ok") -> None:
        (self.modules / f"toy_{name}.py").write_text(
            f"from tests._toy_experiments import make\nEXPERIMENT = make({name!r}, {mode!r})\n"
        )
        sys.modules.pop(f"toy_{name}", None)
        if name not in self.names:
            self.names.append(name)

    def registry(self):
        return {n: fw.from_module(f"toy_{n}") for n in self.names}

    def main(self, *args: str) -> int:
        try:
            return cli.main([*args, "--out", str(self.out), "--no-progress"], self.registry())
        except SystemExit as exit_:
            return exit_.code

    def called(self) -> list[str]:
        return self.calls.read_text().split() if self.calls.exists() else []


@pytest.fixture
def toy(tmp_path, monkeypatch):
    return Toys(tmp_path, monkeypatch)


def test_run_one_writes_result_figure_and_provenance(tmp_path):
    exp = _in_process_toy()
    record = fw.run_one(exp, exp.quick, tmp_path, progress=False)
    saved = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert saved["result"] == {"value": 2} == record["result"]
    assert saved["config"] == {"seed": 0, "x": 1} and saved["seed"] == 0
    assert saved["size"] == "quick"
    assert {"jax", "jaxlib", "optax", "distrax", "numpy"} <= set(saved["versions"])
    assert saved["device"]["platform"] == "cpu" and saved["wall_time_s"] >= 0
    assert (tmp_path / "figures" / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fw.is_done(exp, exp.quick, tmp_path)
    assert not fw.is_done(exp, exp.full, tmp_path)  # another configuration is not done
    report = fw.write_report([exp], tmp_path).read_text()
    assert "figures/toy.png" in report and "value is 2" in report


@pytest.mark.parametrize("stage", ["run", "plot"])
def test_interrupted_experiment_leaves_no_partial_files_and_reruns(tmp_path, stage):
    exp = _in_process_toy(fail_in=stage)
    with pytest.raises(KeyboardInterrupt):
        fw.run_one(exp, exp.quick, tmp_path, progress=False)
    assert not (tmp_path / "results" / "toy.json").exists()
    assert not [f for f in _files(tmp_path) if f.endswith(".tmp")]
    assert not fw.is_done(exp, exp.quick, tmp_path)
    fw.run_one(_in_process_toy(), exp.quick, tmp_path, progress=False)  # the rerun completes
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


def test_output_files_get_the_umask_mode_not_mkstemps_0600(toy):
    toy.add("first")
    old = os.umask(0o022)
    try:
        assert toy.main() == 0
    finally:
        os.umask(old)
    for path in (toy.out / "results" / "first.json", toy.out / "figures" / "first.png",
                 toy.out / "REPORT.md"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_main_resumes_only_unfinished_experiments(toy):
    toy.add("first")
    toy.add("second", "raise")
    assert toy.main() == 1  # "second" failed; "first" is kept
    assert toy.called() == ["first", "second"]
    toy.add("second", "ok")
    assert toy.main() == 0  # redoes only the unfinished one
    assert toy.called() == ["first", "second", "second"]
    assert toy.main("--force", "--only", "first") == 0
    assert toy.called()[-1] == "first"
    report = (toy.out / "REPORT.md").read_text()
    assert "## first" in report and "## second" in report


def test_a_failing_experiment_does_not_stop_the_others(toy, capfd):
    toy.add("first", "raise")
    toy.add("second")
    assert toy.main() == 1
    assert toy.called() == ["first", "second"]
    err = capfd.readouterr().err
    assert "fails on purpose" in err and "experiment 'first' failed" in err
    report = (toy.out / "REPORT.md").read_text()
    assert "## second" in report and "`first`: failed" in report


def test_report_is_rewritten_after_each_experiment(toy, monkeypatch):
    monkeypatch.setenv("TOY_REPORT_SEEN", str(toy.seen))
    toy.add("first")
    toy.add("second")
    assert toy.main() == 0
    seen_by_second = toy.seen.read_text().split("--- seen by second\n")[1]
    assert "## first" in seen_by_second  # written before "second" started


def test_stalled_experiment_is_stopped_with_stacks_and_the_rest_still_runs(toy, capfd):
    toy.add("first")
    toy.add("stuck", "stall_jax")
    toy.add("third")
    assert toy.main("--timeout", "8") == 1
    err = capfd.readouterr().err
    assert "Timeout (0:00:08)!" in err  # faulthandler's header, then every thread's stack
    assert "most recent call first" in err and "_stall_inside_compiled_code" in err
    assert "experiment 'stuck' stalled" in err
    assert toy.called() == ["first", "stuck", "third"]
    report = (toy.out / "REPORT.md").read_text()
    assert "## first" in report and "## third" in report and "`stuck`: stalled" in report
    assert not (toy.out / "results" / "stuck.json").exists()


@pytest.mark.parametrize("damage", ["truncated_png", "truncated_json", "missing_key"])
def test_damaged_outputs_are_recomputed_not_trusted(toy, damage):
    toy.add("first")
    assert toy.main() == 0
    result, figure = toy.out / "results" / "first.json", toy.out / "figures" / "first.png"
    if damage == "truncated_png":
        figure.write_bytes(figure.read_bytes()[: figure.stat().st_size // 2])
    elif damage == "truncated_json":
        result.write_text(result.read_text()[:40])
    else:
        record = json.loads(result.read_text())
        del record["result"]["value"]  # the table and reading need it
        result.write_text(json.dumps(record))
    assert toy.main() == 0
    assert toy.called() == ["first", "first"]
    assert fw.figure_is_sound(figure)
    assert json.loads(result.read_text())["result"] == {"value": 2}


def test_quick_run_refuses_an_out_folder_holding_full_results(toy, capfd):
    toy.add("first")
    assert toy.main("--full") == 0
    before = (toy.out / "results" / "first.json").read_bytes()
    assert toy.main() == 2
    assert toy.main("--force") == 2
    err = capfd.readouterr().err
    assert "holds full-size results (first.json)" in err and "another --out" in err
    assert (toy.out / "results" / "first.json").read_bytes() == before
    assert toy.called() == ["first"]


def test_out_that_is_a_file_fails_before_any_work(toy, tmp_path, capfd):
    toy.add("first")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "below"):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["--out", str(out), "--no-progress"], toy.registry())
        assert exit_.value.code == 2
    assert "--out" in capfd.readouterr().err
    assert toy.called() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_fails_before_any_work(toy, capfd):
    toy.add("first")
    toy.out.mkdir()
    toy.out.chmod(0o500)
    try:
        assert toy.main() == 2
    finally:
        toy.out.chmod(0o700)
    assert "cannot write" in capfd.readouterr().err and toy.called() == []


def test_read_only_mount_fails_before_any_work(toy, monkeypatch, capfd):
    """A read-only mount answers EROFS even to root; simulated at the probe write."""
    toy.add("first")
    real_mkstemp = tempfile.mkstemp

    def read_only(*args, **kwargs):
        if kwargs.get("prefix") == ".write-probe-":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert toy.main() == 2
    assert "Read-only file system" in capfd.readouterr().err and toy.called() == []


def test_corrupt_results_of_an_unselected_experiment_are_named_and_skipped(toy):
    toy.add("first")
    toy.add("second")
    assert toy.main() == 0
    (toy.out / "results" / "first.json").write_text('{"name": "first", "conf')
    assert toy.main("second", "--force") == 0
    report = (toy.out / "REPORT.md").read_text()
    assert "first.json: not valid JSON" in report and "--force" in report
    assert "## second" in report and "## first" not in report


@pytest.mark.parametrize(
    "args",
    [["--bogus-flag"], ["no_such_experiment"], ["--only", "nope"], ["--out"], ["--ful"],
     ["--timeout", "0"], ["--set", "no_such_key=1"], ["--seed", "x"],
     ["estimator_table", "--set", "num_samples=many"]],
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
