"""The README's experiment numbers are the committed results' (scripts/readme_numbers.py).

No experiment runs here: the check renders the README's generated blocks from
docs/results/quick/*.json and compares them with the committed README.
"""

import importlib.util
import json
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("readme_numbers", ROOT / "scripts" /
                                              "readme_numbers.py")
readme_numbers = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(readme_numbers)


def test_committed_readme_matches_committed_results(capsys):
    assert readme_numbers.main(["--check"]) == 0, capsys.readouterr().err


def test_every_generated_block_is_in_the_readme_once():
    names = [m["name"] for m in readme_numbers.BLOCK.finditer(readme_numbers.README.read_text())]
    assert sorted(names) == sorted(readme_numbers.BLOCKS)


def test_the_committed_results_are_default_quick_runs_of_todays_configuration():
    results = readme_numbers.Results(readme_numbers.RESULTS)
    readme_numbers.render(readme_numbers.README.read_text(), results)
    assert results.used >= {"estimator_sweep", "mixture_kl_bounds", "gradient_audit",
                            "toy_grpo"}
    assert readme_numbers.check_records(results) == []


def _copy(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copyfile(readme_numbers.README, readme)
    results = tmp_path / "results"
    shutil.copytree(readme_numbers.RESULTS, results)
    return readme, results


def test_check_fails_on_a_changed_readme_number(tmp_path, capsys):
    readme, results = _copy(tmp_path)
    text = readme.read_text()
    # The 2-D variational error the README once misquoted (issue 19).
    assert "0.078 in 1-D, 0.067 in 2-D" in text
    readme.write_text(text.replace("0.078 in 1-D, 0.067 in 2-D", "0.078 in 1-D, 0.078 in 2-D"))
    assert readme_numbers.main(["--check", "--readme", str(readme), "--results",
                                str(results)]) == 1
    err = capsys.readouterr().err
    assert "-relative error 0.078 in 1-D, 0.078 in 2-D" in err
    # Rewriting restores it.
    assert readme_numbers.main(["--readme", str(readme), "--results", str(results)]) == 0
    assert readme.read_text() == text


def test_check_fails_on_a_changed_result(tmp_path, capsys):
    readme, results = _copy(tmp_path)
    path = results / "toy_grpo.json"
    record = json.loads(path.read_text())
    run = record["result"]["runs"]["k3 loss importance-weighted"]
    run["forward_kl"] = [[x + 0.05 for x in seed] for seed in run["forward_kl"]]
    path.write_text(json.dumps(record))
    assert readme_numbers.main(["--check", "--readme", str(readme), "--results",
                                str(results)]) == 1
    assert "| k3 loss importance-weighted |" in capsys.readouterr().err


def test_a_contradicted_claim_stops_the_generator(tmp_path, capsys):
    readme, results = _copy(tmp_path)
    path = results / "mixture_kl_bounds.json"
    record = json.loads(path.read_text())
    record["result"]["2d"]["product"] = record["result"]["2d"]["truth"]  # product now exact
    path.write_text(json.dumps(record))
    assert readme_numbers.main(["--readme", str(readme), "--results", str(results)]) == 1
    assert "contradict" in capsys.readouterr().err
    assert readme.read_text() == readme_numbers.README.read_text()  # nothing written


def test_results_of_another_configuration_are_refused(tmp_path, capsys):
    readme, results = _copy(tmp_path)
    path = results / "mixture_kl_bounds.json"
    record = json.loads(path.read_text())
    record["config"]["pairs_2d"] = 25
    path.write_text(json.dumps(record))
    assert readme_numbers.main(["--check", "--readme", str(readme), "--results",
                                str(results)]) == 1
    assert "another configuration" in capsys.readouterr().err


@pytest.mark.parametrize("value, text", [(0.0673, "0.067"), (0.3, "0.30"), (44.6, "45"),
                                         (0.001000001, "0.0010"), (5.9386, "5.9")])
def test_number_format(value, text):
    assert readme_numbers.g(value) == text


def test_the_gallery_shows_every_experiment_with_committed_results():
    from experiments import _framework

    names = [n for n in _framework.discover()
             if (readme_numbers.RESULTS / f"{n}.json").exists()]
    assert {"mixture_kl_bounds", "alpha_sweep", "toy_grpo"} <= set(names)
    missing = [n for n in names if not (readme_numbers.GALLERY / f"{n}.png").exists()]
    assert not missing, f"run scripts/gallery.py: no docs/gallery picture for {missing}"
    gallery = readme_numbers.block_gallery(readme_numbers.Results(readme_numbers.RESULTS))
    for name in names:
        assert f"(docs/gallery/{name}.png)" in gallery
