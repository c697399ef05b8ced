"""The benchmark scripts' own helpers: how methods are named and split, how seeds are summarised, where
results are written. (The benchmarks themselves measure; these are the parts that must not misreport.)"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their neighbours as `common`
    try:
        import common
        import continual

        yield common, continual
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_methods_split_on_the_commas_outside_brackets_only(bench):
    _, continual = bench
    assert continual.split_methods("config,joint retrain") == ["config", "joint retrain"]
    assert continual.split_methods("config[interpolation=[0.5,1.0]],config[epochs=4]") == [
        "config[interpolation=[0.5,1.0]]",
        "config[epochs=4]",
    ]
    assert continual.split_methods("config,,") == ["config"]


def test_a_recipe_changes_only_the_settings_it_names_and_an_unknown_one_is_refused(bench):
    _, continual = bench
    assert continual.recipe_settings("config[epochs=4; batch_size=64]") == {"epochs": 4, "batch_size": 64}
    assert continual.recipe_settings("config") == continual.RECIPES["config"]
    for bad in ("no such recipe", "config[epochs=4", "joint retrain[epochs=4]"):
        with pytest.raises(ValueError, match="unknown method"):
            continual.recipe_settings(bad)


def test_seed_summary_gives_the_mean_and_the_standard_error_of_the_mean_per_recipe(bench):
    _, continual = bench
    rows = [
        {"scenario": "A", "method": "config", "update_seed": seed, "promoted": seed != 3}
        | {"test_new": new, "test_overall": 0.95, "test_forgetting": 0.0, "val_overall": 0.94, "seconds": 600.0}
        for seed, new in ((42, 0.86), (7, 0.88), (3, 0.87))
    ]
    rows.append({"scenario": "A", "method": "joint retrain", "test_new": 0.9})  # no update seed: not summarised
    lines = continual.seed_summary(rows)
    assert len(lines) == 3  # header, rule, one recipe
    se = np.std([0.86, 0.88, 0.87], ddof=1) / np.sqrt(3)
    assert f"| A | config | 3 | 0.8700 ± {se:.4f} |" in lines[2]
    assert lines[2].endswith("| 2/3 |")


def test_a_result_goes_to_the_results_folder_unless_a_path_is_given_and_numpy_numbers_are_written(
    bench, tmp_path, capsys
):
    common, _ = bench
    assert common.RESULTS == BENCHMARKS / "results"
    chosen = tmp_path / "deeper" / "out.json"
    path = common.write_result({"top1": np.float32(0.5), "rows": [1, 2]}, str(chosen), "never_used.json")
    assert path == chosen and json.loads(chosen.read_text()) == {"top1": 0.5, "rows": [1, 2]}
    assert capsys.readouterr().out.strip() == f"wrote {chosen}"
    assert not (common.RESULTS / "never_used.json").exists()
