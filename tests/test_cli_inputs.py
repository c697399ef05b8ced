"""Inputs that hurt: bad arguments and unusable catalogs are one `error:` line and exit 2, checked
before any work (no model is loaded, no stack is touched), never a traceback."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kickvision.cli import main as cli_main


@pytest.mark.parametrize(
    "argv",
    [
        ["recommend", "--title", "x", "-k", "0"],
        ["recommend", "--title", "x", "-k", "-3"],
        ["recommend", "--title", "x", "-k", "many"],
        ["demo", "--per-class", "0"],
        ["demo-drop", "--per-class", "-1"],
        ["ui", "--port", "70000"],
    ],
)
def test_out_of_range_numbers_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["explain", "--title", "Black Heels", "--out", "{tmp}/no/such/folder/e.png"],
        ["explain", "--title", "Black Heels", "--out", "{tmp}"],
        ["recommend", "--title", "Black Heels", "--sheet", "{tmp}/missing/sheet.png"],
    ],
)
def test_an_output_file_in_a_missing_folder_fails_before_any_model_is_loaded(argv, tmp_path):
    # In a process of its own: ZenML's configuration is a per-process singleton, which a stack made
    # under another ZENML_CONFIG_PATH would leave behind for the other tests.
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml-never-created")}
    kickvision = str(Path(sys.executable).with_name("kickvision"))
    done = subprocess.run(
        [kickvision, *[a.format(tmp=tmp_path) for a in argv]], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    err = done.stderr.strip()
    assert err.startswith("error: --") and len(err.splitlines()) == 1
    assert not (tmp_path / "zenml-never-created").exists()  # failed before the stack was touched


def test_validate_writes_the_report_then_fails_an_unusable_catalog(demo_drop, tmp_path, capsys):
    drop = tmp_path / "drop"
    shutil.copytree(demo_drop, drop)
    shutil.rmtree(drop / "images")  # every photo gone: no row is usable
    report = tmp_path / "quarantine.csv"
    assert cli_main(["validate", "--catalog", str(drop), "--report", str(report)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: catalog drop") and "unusable" in err and len(err.splitlines()) == 1
    assert report.read_text().count("\n") > 20  # every row, each with its reason
    assert cli_main(["validate", "--catalog", str(demo_drop), "--report", str(tmp_path / "no" / "r.csv")]) == 2
    assert "folder" in capsys.readouterr().err
    assert cli_main(["validate", "--catalog", str(demo_drop)]) == 2  # 70 good rows; the demo config needs 100
    small = tmp_path / "small.yaml"
    small.write_text("validate:\n  min_good_rows: 50\n")
    assert cli_main(["validate", "--catalog", str(demo_drop), "--config", str(small)]) == 0


BAD_INPUTS = {  # every subcommand, with an input a user really gets wrong
    "demo": ["demo", "--config", "{tmp}/no-such-config.yaml", "--out", "{tmp}/demo"],
    "train": ["train", "--catalog", "{tmp}/no-such-drop"],
    "pretrain": ["pretrain", "--catalog", "{tmp}/no-such-drop"],
    "update": ["update", "--drop", "{tmp}/no-such-drop"],
    "watch": ["watch", "--drops", "{tmp}/no-such-folder", "--once"],
    "schedule": ["schedule", "--file", "{tmp}/no-such-schedule.yaml"],
    "validate": ["validate", "--catalog", "{tmp}/no-such-drop"],
    "import": ["import", "--format", "fashion-product", "--src", "{tmp}/no-such-src", "--out", "{tmp}/out"],
    "predict": ["predict", "--image", "{tmp}/no-such-photo.jpg"],
    "recommend": ["recommend", "--image", "{tmp}/no-such-photo.jpg"],
    "explain": ["explain", "--image", "{tmp}/no-such-photo.jpg"],
    "audit": ["audit", "--catalog", "{tmp}/no-such-drop", "--out", "{tmp}/audit.csv"],
    "review": ["review", "--catalog", "{tmp}/no-such-drop"],
    "review a drops folder that is a file": ["review", "--drops", "{tmp}/a-file.txt"],
    "stack": ["stack", "use", "no-such-recipe"],
    "demo-drop": ["demo-drop", "--out", "{tmp}/a-file.txt"],
    "predict a model that is not there": ["predict", "--title", "x", "--model-uri", "models:/no-such-model/3"],
    "explain a folder that is not a model": ["explain", "--title", "x", "--model-uri", "{tmp}/no-such-model"],
}


def test_every_subcommand_has_a_bad_input_case():
    from kickvision.cli.parser import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) - {"ui"} <= set(BAD_INPUTS)  # ui: its only input is --port (above)


@pytest.mark.parametrize("command", sorted(BAD_INPUTS))
def test_a_bad_input_is_one_error_line_and_exit_2(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (the session's ZenML store: a stack made elsewhere would outlive the test)
    (tmp_path / "a-file.txt").write_text("not a folder")
    code = cli_main([a.format(tmp=tmp_path) for a in BAD_INPUTS[command]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = err.splitlines()  # (a first MLflow run may log that it creates its database: not errors)
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1
    assert "Traceback" not in err
