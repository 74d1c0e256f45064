"""The researcher's command line: ``--seed``/``--set`` overrides, CSV tables, ``estimate``.

Runs the real ``python -m experiments`` entry point over the toy experiments of
tests/_toy_experiments.py (their configuration is ``{"seed": 0, "x": 1}``, their result
``{"value": 2 * x}`` and their table one column, ``value``).
"""

import dataclasses
import json
import pathlib

import pytest

from experiments import __main__ as cli
from experiments import _framework as fw
from tests.test_framework import Toys, _in_process_toy


@pytest.fixture
def toy(tmp_path, monkeypatch):
    return Toys(tmp_path, monkeypatch)


def _record(out: pathlib.Path, name: str) -> dict:
    return json.loads((out / "results" / f"{name}.json").read_text())


# --seed and --set ------------------------------------------------------------------------


def test_seed_and_set_change_the_config_and_go_to_their_own_folder(toy, tmp_path,
                                                                   monkeypatch, capsys):
    toy.add("first")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["--seed", "3", "--set", "x=5", "--no-progress"], toy.registry())
    assert code == 0
    out = tmp_path / "outputs" / "quick-custom-seed=3,x=5"
    record = _record(out, "first")
    assert record["config"] == {"seed": 3, "x": 5} and record["seed"] == 3
    assert record["overrides"] == {"seed": 3, "x": 5}
    assert record["result"] == {"value": 10}
    report = (out / "REPORT.md").read_text()
    assert "Not the default configuration" in report and "`x=5`" in report
    assert "running with seed=3, x=5" in capsys.readouterr().out
    assert not (tmp_path / "outputs" / "quick").exists()  # default results untouched
    # The same overrides again: done, skipped.
    assert cli.main(["--seed", "3", "--set", "x=5", "--no-progress"], toy.registry()) == 0
    assert toy.called() == ["first"]


def test_default_runs_record_no_overrides(toy):
    toy.add("first")
    assert toy.main() == 0
    record = _record(toy.out, "first")
    assert record["overrides"] == {}
    assert "Not the default configuration" not in (toy.out / "REPORT.md").read_text()


def test_overrides_never_replace_other_results_without_force(toy, capfd):
    toy.add("first")
    assert toy.main() == 0
    default = (toy.out / "results" / "first.json").read_bytes()
    assert toy.main("--set", "x=5") == 2
    err = capfd.readouterr().err
    assert "holds results of other configuration overrides" in err
    assert "first (the default configuration; this run: x=5)" in err and "--force" in err
    assert (toy.out / "results" / "first.json").read_bytes() == default
    assert toy.main("--set", "x=5", "--force") == 0
    assert _record(toy.out, "first")["overrides"] == {"x": 5}
    # Nor does a default run silently replace overridden results.
    assert toy.main() == 2
    assert "first (x=5; this run: the default configuration)" in capfd.readouterr().err
    assert toy.main("--force") == 0 and _record(toy.out, "first")["overrides"] == {}
    assert toy.called() == ["first", "first", "first"]


def test_name_dot_key_sets_one_experiment_only(toy):
    toy.add("first")
    toy.add("second")
    assert toy.main("--set", "first.x=3", "--set", "seed=7") == 0
    assert _record(toy.out, "first")["config"] == {"seed": 7, "x": 3}
    assert _record(toy.out, "second")["config"] == {"seed": 7, "x": 1}


def test_overrides_work_with_only(toy):
    toy.add("first")
    toy.add("second")
    assert toy.main("--only", "second", "--set", "x=4") == 0
    assert toy.called() == ["second"] and _record(toy.out, "second")["result"] == {"value": 8}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "nope=1"], "unknown key 'nope' for experiment 'first'; its keys are seed, x"),
        (["--set", "x=1.5"], "expected an integer like the default 1, got 1.5"),
        (["--set", "x=true"], "expected an integer"),
        (["--set", "x=abc"], "'abc' is not a JSON value"),
        (["--set", "x"], "expected KEY=VALUE"),
        (["--set", "=3"], "expected KEY=VALUE"),
        (["--set", "second.x=1"], "'second' is not one of the experiments selected (first)"),
        (["--seed", "abc"], "invalid int value"),
    ],
)
def test_bad_overrides_exit_2_with_a_message_before_any_work(toy, capfd, args, message):
    toy.add("first")
    assert toy.main(*args) == 2
    assert message in capfd.readouterr().err
    assert toy.called() == [] and not (toy.out / "results").exists()


def test_a_plain_key_must_exist_in_every_selected_experiment():
    first = _in_process_toy("first")
    other = dataclasses.replace(_in_process_toy("other"), quick={"seed": 0, "y": 2.0})
    with pytest.raises(fw.BadOverride, match=r"unknown key 'x' for experiment 'other'; "
                                             r"its keys are seed, y; .*other\.KEY=VALUE"):
        fw.apply_overrides([first, other], "quick", [("x", "4")])
    configs = fw.apply_overrides([first, other], "quick",
                                 [("first.x", "4"), ("other.y", "3"), ("seed", "1")])
    assert configs == {"first": {"seed": 1, "x": 4}, "other": {"seed": 1, "y": 3.0}}
    assert isinstance(configs["other"]["y"], float)


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [("3", 1.5, 3.0), ("1e6", 10, 1_000_000), ("false", True, False),
     ("[1, 2.5]", [0.5, 1.0], [1, 2.5]), ('"abc"', "x", "abc"), ("abc", "x", "abc"),
     ('["a"]', ["b", "c"], ["a"]), ("null", None, None)],
)
def test_values_are_json_checked_against_the_default(raw, default, expected):
    value = fw.coerce_value("k", raw, default)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("raw", "default"),
    [("1", True), ("1.5", 2), ('"3"', 3), ("[1]", 3), ('["a"]', [1.0]), ("[1]", ["a"]),
     ("NaN", 1.0), ("3", "name"), ("{}", [1])],
)
def test_values_of_the_wrong_type_are_refused(raw, default):
    with pytest.raises(fw.BadOverride, match="--set k="):
        fw.coerce_value("k", raw, default)


# CSV tables -------------------------------------------------------------------------------


def test_every_table_is_written_as_csv_next_to_the_json(toy):
    toy.add("first")
    assert toy.main() == 0
    rows = fw.read_csv(toy.out / "results" / "first.csv")
    assert rows == [["value"], [str(_record(toy.out, "first")["result"]["value"])]]
    assert fw.is_done(fw.from_module("toy_first"), {"seed": 0, "x": 1}, toy.out)


def test_missing_or_damaged_csv_is_rewritten_from_the_json_without_rerunning(toy, capsys):
    toy.add("first")
    assert toy.main() == 0
    path = toy.out / "results" / "first.csv"
    for damage in ("delete", "edit"):
        if damage == "delete":
            path.unlink()
        else:
            path.write_text("value\n999\n")
        assert not fw.is_done(fw.from_module("toy_first"), {"seed": 0, "x": 1}, toy.out)
        assert toy.main() == 0
        assert "CSV tables were rewritten" in capsys.readouterr().out
        assert fw.read_csv(path) == [["value"], ["2"]]
    assert toy.called() == ["first"]


def test_markdown_tables_are_read_cell_by_cell():
    text = "\n".join([
        "A paragraph with a `|` in code is not a table.",
        "",
        "| case | estimate \\| note | interval |",
        "|---|:--:|---:|",
        "| a, b | 1.5 ± 0.1 | [+0.1, -0.2] |",
        "",
        "| only |",
        "|---|",
        "| 7 |",
        "| 8 |",
    ])
    assert fw.markdown_tables(text) == [
        [["case", "estimate | note", "interval"], ["a, b", "1.5 ± 0.1", "[+0.1, -0.2]"]],
        [["only"], ["7"], ["8"]],
    ]


def test_real_experiment_tables_round_trip_through_csv(tmp_path):
    """estimator_table's two tables, from a result of the shape its run() returns."""
    from experiments import estimator_table

    estimators = {e: {k: 0.1 for k in ("mean", "stderr", "bias_rel", "bias_rel_low",
                                       "bias_rel_high", "std_rel", "closed_bias_rel",
                                       "closed_std_rel")} for e in estimator_table.ESTIMATORS}
    result = {"rows": [{"case": "note", "true_kl": 0.005, "estimators": estimators,
                        "fraction_log_q_minus_log_p_negative": 0.48, "fraction_stderr": 1e-4,
                        "fraction_exact": 0.4801}]}
    exp = fw.from_module("experiments.estimator_table")
    paths = fw.write_csvs(exp, result, tmp_path)
    assert [p.name for p in paths] == ["estimator_table.csv", "estimator_table-2.csv"]
    first, second = (fw.read_csv(p) for p in paths)
    assert first[0][:3] == ["case", "true KL", "estimator"] and len(first) == 5
    assert second == [["case", "fraction with log q - log p < 0", "exact"],
                      ["note", "0.4800 ± 0.0001", "0.4801"]]
    assert fw.csvs_are_sound(exp, result, tmp_path)
    (tmp_path / "results" / "estimator_table-3.csv").write_text("stale")
    fw.write_csvs(exp, result, tmp_path)  # an extra table from an older run is removed
    assert not (tmp_path / "results" / "estimator_table-3.csv").exists()


# python -m experiments estimate -------------------------------------------------------------

MIXTURE = "mixture:weights=0.3,0.7;means=-1,1;scales=0.5,0.5"


def _estimate(*args: str) -> int:
    try:
        return cli.main(["estimate", *args])
    except SystemExit as exit_:
        return exit_.code


def test_estimate_prints_the_table_and_writes_json_and_csv(tmp_path, capsys):
    import distrax

    import jaxkl

    out_json, out_csv = tmp_path / "e.json", tmp_path / "e.csv"
    assert _estimate("--q", "normal:0,1", "--p", MIXTURE, "--num-samples", "2e5", "--no-tail",
                     "--json", str(out_json), "--csv", str(out_csv)) == 0
    printed = capsys.readouterr().out
    assert "| k3 |" in printed and "bias/true [95% CI]" in printed and "quadrature" in printed
    result = json.loads(out_json.read_text())
    p = jaxkl.gaussian_mixture_1d([-1.0, 1.0], [0.5, 0.5], weights=[0.3, 0.7])
    assert result["true_kl"] == pytest.approx(
        jaxkl.reference_kl(distrax.Normal(0.0, 1.0), p).value, rel=1e-9)
    assert result["q"] == "normal:0,1" and result["num_samples"] == 200_000
    for name in ("k1", "k3", "cv*"):  # unbiased: within 5 standard errors
        e = result["estimators"][name]
        assert abs(e["mean"] - result["true_kl"]) < 5 * e["stderr"]
    rows = fw.read_csv(out_csv)
    header = rows[0]
    assert [r[0] for r in rows[1:]] == ["k1", "k2", "k3", "cv*"]
    for row in rows[1:]:
        saved = result["estimators"][row[0]]
        for column in ("mean", "stderr", "bias_rel", "std_rel"):
            assert float(row[header.index(column)]) == saved[column]


@pytest.mark.parametrize("spec", [
    "Normal(0, 1)", "distrax.Normal(loc=0.0, scale=1.0)",
    '{"type": "normal", "loc": 0, "scale": 1}',
])
def test_estimate_spec_forms_agree(tmp_path, spec):
    paths = []
    for i, q in enumerate(("normal:0,1", spec)):
        paths.append(tmp_path / f"{i}.json")
        assert _estimate("--q", q, "--p", "gaussian_mixture_1d([-1, 1], [0.5, 0.5], "
                         "weights=[0.3, 0.7])", "--num-samples", "10000", "--no-tail",
                         "--json", str(paths[-1])) == 0
    first, second = (json.loads(p.read_text()) for p in paths)
    assert first["estimators"] == second["estimators"]


def test_estimate_tail_verdict_flags_a_heavy_ratio(tmp_path):
    """p = N(0, 2^2) is wider than q = N(0, 1) by more than sqrt 2: r's tail index is
    4/3 < 2, Var_q(r) is infinite and k3 must not be recommended."""
    out = tmp_path / "e.json"
    assert _estimate("--q", "Normal(0, 1)", "--p", "normal:0,2", "--num-samples", "20000",
                     "--json", str(out)) == 0
    tail = json.loads(out.read_text())["tail"]
    assert tail["variance"] == "heavy" and tail["best_at_budget"] == "k1"
    assert abs(tail["tail_index"] - 4 / 3) < 4 * tail["tail_index_se"]


def test_estimate_two_dimensional_mixture_from_json(capsys):
    spec = '{"type": "mixture", "means": [[0, 0], [2, 0]], "scales": [[1, 1], [1, 1]]}'
    assert _estimate("--q", "MultivariateNormalDiag([0, 0], [1, 1])", "--p", spec,
                     "--num-samples", "10000", "--no-tail") == 0
    assert "| cv* |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("q", "p", "message"),
    [
        ("normal:0", "normal:0,1", "--q 'normal:0': expected normal:LOC,SCALE"),
        ("normal:0,1", "Beta(1, 2)", "--p 'Beta(1, 2)': unknown constructor 'Beta'"),
        ("normal:0,1", "os.system('ls')", "unsupported constructor 'os.system'"),
        ("normal:0,1", "Normal(x, 1)", "arguments must be numbers"),
        ("Normal('a', 1)", "normal:0,1", "expected numbers or lists of numbers"),
        ("normal:0,1", "{bad json", "--p '{bad json': not valid JSON"),
        ("normal:0,1", '{"loc": 0}', 'with a "type"'),
        ("normal:0,1", "mixture:means=0,1;scales=1", "--p 'mixture:means=0,1;scales=1': "
                                                    "mixture(...) refused its arguments"),
        ("normal:0,1", "mixture:means=0,1;scales=1,1;weights=0.3,0.6", "must sum to 1"),
        ("normal:0,1", "mixture:mean=0,1", "expected means=..;scales=.."),
        ("normal:0,1", "normal:a,1", "expected comma-separated numbers"),
        ("normal:0,1", "Normal(0, float('inf'))", "arguments must be numbers"),
        ("normal:0,1", "Normal(0, 1e999)", "is not finite"),
        ("normal:0,1", "cauchy:0,1", "unknown short form 'cauchy'"),
        ("normal:0,1", "just words", "expected a constructor call"),
        ("Normal(0, -1)", "normal:0,1", "--q/--p: `q` has scale -1.0"),
        ("Normal(0, 1)", "MultivariateNormalDiag([0, 0], [1, 1])", "same event shape"),
    ],
)
def test_estimate_rejects_bad_specs_with_exit_2(tmp_path, capsys, q, p, message):
    out = tmp_path / "e.json"
    assert _estimate("--q", q, "--p", p, "--num-samples", "1000", "--no-tail",
                     "--json", str(out)) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--q", "normal:0,1"], "the following arguments are required: --p"),
    (["--q", "normal:0,1", "--p", "normal:1,1", "--num-samples", "0"], "--num-samples"),
    (["--q", "normal:0,1", "--p", "normal:1,1", "--num-samples", "1.5"], "positive integer"),
])
def test_estimate_bad_options_exit_2(capsys, args, message):
    assert _estimate(*args) == 2
    assert message in capsys.readouterr().err


def test_a_real_experiment_with_overrides_end_to_end(tmp_path):
    """estimator_table at 1000 samples through the real entry point: overrides recorded,
    both tables as CSV, and the CSV's numbers are the JSON's (as the table rounds them)."""
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "estimator_table", "--set", "num_samples=1e3",
         "--seed", "2", "--out", str(out), "--no-progress"],
        cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = _record(out, "estimator_table")
    assert record["overrides"] == {"seed": 2, "num_samples": 1000}
    rows = fw.read_csv(out / "results" / "estimator_table.csv")
    header, body = rows[0], rows[1:]
    by_key = {(r[0], r[2]): r for r in body}
    for row in record["result"]["rows"]:
        for name, e in row["estimators"].items():
            cell = by_key[(row["case"], name)][header.index("mean")]
            assert float(cell) == pytest.approx(e["mean"], rel=1e-4)
            cell = by_key[(row["case"], name)][header.index("std/true")]
            assert float(cell) == pytest.approx(e["std_rel"], abs=1e-3)
    fractions = fw.read_csv(out / "results" / "estimator_table-2.csv")
    assert [r[0] for r in fractions[1:]] == [r["case"] for r in record["result"]["rows"]]
    assert "Not the default configuration" in (out / "REPORT.md").read_text()


def test_list_with_names_shows_the_keys_set_accepts(toy, capsys):
    toy.add("first")
    toy.add("second")
    assert toy.main("first", "--list") == 0
    out = capsys.readouterr().out
    assert "first" in out and "second" not in out and "    x = 1" in out
    assert toy.main("first", "--list", "--full") == 0
    assert "    x = 10" in capsys.readouterr().out
    assert toy.main("--list") == 0
    out = capsys.readouterr().out
    assert "second" in out and "x = " not in out
