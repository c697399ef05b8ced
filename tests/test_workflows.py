"""CI workflows parse and call only commands that exist (kickvision subcommands, make targets)."""

import re
import shlex
from pathlib import Path

import yaml

from kickvision.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _run_lines(workflow: dict) -> list[str]:
    lines = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            lines += [line.strip() for line in step.get("run", "").splitlines() if line.strip()]
    return lines


def test_workflows_parse_and_reference_real_commands():
    assert {w.name for w in WORKFLOWS} >= {"tests.yml", "retrain.yml"}
    make_targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M))
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        assert workflow["jobs"], path
        for line in _run_lines(workflow):
            words = shlex.split(re.sub(r"\$\{\{[^}]*\}\}", "X", line), posix=True) if "<<" not in line else []
            for i, word in enumerate(words):
                if word.endswith("kickvision") and i + 1 < len(words):
                    assert words[i + 1] in subcommands, f"{path.name}: unknown kickvision command in: {line}"
                    build_parser().parse_args(_cli_args(words[i + 1 :]))  # options exist and parse
                if word == "make" and i + 1 < len(words):
                    assert words[i + 1] in make_targets, f"{path.name}: unknown make target in: {line}"
                if word == "bash" and i + 1 < len(words) and words[i + 1].startswith("."):
                    assert (REPO / words[i + 1]).is_file(), f"{path.name}: missing script in: {line}"


def _cli_args(words: list[str]) -> list[str]:
    """The kickvision arguments of a shell line, up to a redirection or the next command."""
    args = []
    for word in words:
        if word in {"&&", "||", ";", "|", ">>", ">"}:
            break
        args.append(word)
    return args


def test_tests_workflow_runs_the_ci_script_and_retraining_has_a_nightly_cron():
    tests = yaml.safe_load((REPO / ".github/workflows/tests.yml").read_text())
    assert "bash .ci/run" in _run_lines(tests)
    retrain = yaml.safe_load((REPO / ".github/workflows/retrain.yml").read_text())
    triggers = retrain[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["schedule"][0]["cron"] and "drop" in triggers["workflow_dispatch"]["inputs"]
    assert triggers["push"]["paths"] == ["configs/**"]
    assert any("watch --drops" in line for line in _run_lines(retrain))


def test_workflows_ask_for_read_only_tokens_and_retraining_saves_the_ledger_after_every_drop():
    for path in WORKFLOWS:
        assert yaml.safe_load(path.read_text())["permissions"] == {"contents": "read"}, path.name
    retrain = yaml.safe_load((REPO / ".github/workflows/retrain.yml").read_text())
    steps = [s for job in retrain["jobs"].values() for s in job["steps"] if "watch --drops" in s.get("run", "")]
    assert len(steps) == 1 and "--max-drops 1" in steps[0]["run"]
    assert steps[0]["shell"] == "bash"  # GitHub's `bash` shell is -e -o pipefail: a failing watcher stops the loop
    loop = steps[0]["run"]
    assert loop.index("watch --drops") < loop.index("aws s3 cp drops/.kickvision-watch.json") < loop.index("break")
