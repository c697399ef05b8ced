"""`kickvision watch`: drops in name order, a crash-safe ledger, one watcher at a time."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from kickvision.cli import main as cli_main
from kickvision.config import deep_merge
from kickvision.data.catalog import hash_drop
from kickvision.data.demo import write_demo_drop
from kickvision.errors import CatalogError
from kickvision.watch import (
    LEDGER_FILE,
    DropLedger,
    WatcherBusy,
    is_drop_problem,
    pending_drops,
    process_pending,
    watcher_lock,
)

MODEL = "kickvision-watch"


def _three_drops(root: Path) -> list[Path]:
    names = ["2026-01-05-winter", "2026-02-02-spring", "2026-03-02-summer"]  # name order = arrival order
    return [
        write_demo_drop(root / name, n_per_class=4, seed=21 + i, image_size=32, new_categories=False)
        for i, name in enumerate(names)
    ]


def test_ledger_orders_drops_skips_hidden_ones_and_retries_only_unfinished(tmp_path):
    drops = _three_drops(tmp_path)
    (tmp_path / ".2026-04-incoming").mkdir()  # still being copied in
    seen: list[str] = []

    def update(folder: Path) -> str:
        seen.append(folder.name)
        if folder.name.endswith("spring"):
            raise CatalogError("no usable rows")
        return "ok"

    outcomes = process_pending(tmp_path, update)
    assert seen == [d.name for d in drops]
    assert [o.status for _, o in outcomes] == ["done", "failed", "done"]
    assert pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE)) == []  # a failed drop is not retried...

    (drops[1] / "catalog.csv").write_text((drops[1] / "catalog.csv").read_text() + "\n")
    assert [p.name for p, _, _ in pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE))] == [drops[1].name]

    ledger = DropLedger(tmp_path / LEDGER_FILE)  # ...until its content changes; "started" always is
    ledger.record(drops[2].name, hash_drop(drops[2]), "started")
    pending = [p.name for p, _, _ in pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE))]
    assert pending == [drops[1].name, drops[2].name]


def test_a_second_watcher_on_the_same_folder_is_refused(tmp_path):
    with watcher_lock(tmp_path):
        with pytest.raises(WatcherBusy, match=f"pid {os.getpid()}"):
            with watcher_lock(tmp_path):
                pass
    with watcher_lock(tmp_path):  # released on exit
        pass


@pytest.fixture(scope="module")
def watch_config(tmp_path_factory):
    from tests.conftest import REPO, TINY_RUN

    run = deep_merge(TINY_RUN, {"name": "tiny-watch", "registry": {"model_name": MODEL}, "continual": {"epochs": 2}})
    path = tmp_path_factory.mktemp("config") / "tiny-watch.yaml"
    path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((REPO / "configs/demo.yaml").read_text()), run)))
    return path


def _ledger(drops_dir: Path) -> dict:
    path = drops_dir / LEDGER_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _until_the_killed_group_lets_go_of_the_lock(drops_dir: Path, seconds: float = 30.0) -> None:
    """A process group dies member by member: wait() returns for the watcher while a child it had
    just forked (git, run at a pipeline's start, holds the lock's descriptor until it exits) may
    still be dying. The kernel frees the lock when the last of them is gone; wait for that, bounded."""
    deadline = time.time() + seconds
    while True:
        try:
            with watcher_lock(drops_dir):
                return
        except WatcherBusy:
            assert time.time() < deadline, f"the killed watcher's lock was still held after {seconds:.0f} s"
            time.sleep(0.1)


@pytest.mark.integration
def test_watch_processes_drops_in_order_and_resumes_after_a_kill(watch_config, demo_drop, tmp_path, capsys):
    assert cli_main(["train", "--catalog", str(demo_drop), "--config", str(watch_config)]) == 0
    drops_dir = tmp_path / "drops"
    drops = _three_drops(drops_dir)
    watcher = [str(Path(sys.executable).with_name("kickvision")), "watch", "--drops", str(drops_dir)]
    watcher += ["--once", "--config", str(watch_config)]

    log = (tmp_path / "watch.log").open("w")
    first = subprocess.Popen(
        watcher, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.time() + 600
        while _ledger(drops_dir).get(drops[1].name, {}).get("status") != "started":
            assert first.poll() is None, f"the watcher exited early: {(tmp_path / 'watch.log').read_text()[-3000:]}"
            assert time.time() < deadline, "second drop not started in 10 minutes"
            time.sleep(0.2)
        # While it runs, a second watcher (another cron start) is refused.
        assert cli_main(["watch", "--drops", str(drops_dir), "--once", "--config", str(watch_config)]) == 2
        assert "already processing" in capsys.readouterr().err
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # the crash: mid-way through the second drop
        first.wait()
    _until_the_killed_group_lets_go_of_the_lock(drops_dir)
    ledger = _ledger(drops_dir)
    assert ledger[drops[0].name]["status"] == "done" and ledger[drops[1].name]["status"] == "started"  # mid-drop
    assert drops[2].name not in ledger

    assert cli_main(["watch", "--drops", str(drops_dir), "--once", "--config", str(watch_config)]) == 0
    assert all(_ledger(drops_dir)[d.name]["status"] == "done" for d in drops)

    from orchestration.stack import tracking_uri

    client = mlflow.MlflowClient(tracking_uri())
    versions = sorted(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    assert len(versions) == 4  # the champion + one per drop: nothing skipped, nothing repeated
    assert [v.tags["catalog_hash"] for v in versions[1:]] == [hash_drop(d) for d in drops]
    assert all(v.tags["pipeline"] == "update" for v in versions[1:])

    # The crash window: killed after the registry write of the last drop, before its ledger write.
    # The ledger then says "started"; the next watcher finds the version and applies nothing twice.
    ledger = _ledger(drops_dir)
    ledger[drops[2].name]["status"] = "started"
    (drops_dir / LEDGER_FILE).write_text(json.dumps(ledger))
    assert cli_main(["watch", "--drops", str(drops_dir), "--once", "--config", str(watch_config)]) == 0
    assert _ledger(drops_dir)[drops[2].name]["status"] == "done"
    assert "already applied" in _ledger(drops_dir)[drops[2].name]["detail"]
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 4  # still one version per drop


def test_a_folder_that_is_not_a_drop_is_recorded_as_failed_and_later_drops_still_run(tmp_path):
    drops = _three_drops(tmp_path)
    (tmp_path / "2026-01-20-notes").mkdir()  # someone's folder of notes among the drops
    (tmp_path / "2026-01-20-notes" / "readme.txt").write_text("not a catalog")
    seen: list[str] = []
    outcomes = dict(process_pending(tmp_path, lambda folder: seen.append(folder.name) or "ok"))
    assert seen == [d.name for d in drops]
    assert outcomes["2026-01-20-notes"].status == "failed" and "no catalog.csv" in outcomes["2026-01-20-notes"].detail
    assert pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE)) == []  # not retried while unchanged


def test_settled_drops_whose_files_did_not_change_are_not_hashed_again(tmp_path, monkeypatch):
    import kickvision.watch as watch_module

    drops = _three_drops(tmp_path)
    process_pending(tmp_path, lambda folder: "ok")
    hashed: list[str] = []
    monkeypatch.setattr(watch_module, "hash_drop", lambda folder: hashed.append(Path(folder).name) or hash_drop(folder))
    assert pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE)) == [] and hashed == []
    (drops[1] / "catalog.csv").write_text((drops[1] / "catalog.csv").read_text() + "\n")
    assert [p.name for p, _, _ in pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE))] == [drops[1].name]
    assert hashed == [drops[1].name]


def test_a_corrupt_ledger_is_one_line_that_says_how_to_recover(tmp_path, capsys):
    _three_drops(tmp_path)
    (tmp_path / LEDGER_FILE).write_text('{"2026-01-05-winter": {"hash": "ab')  # cut off mid-write by hand
    assert cli_main(["watch", "--drops", str(tmp_path), "--once"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: the watch ledger") and "move it aside" in err


def test_a_non_positive_interval_is_refused_in_one_line(tmp_path, capsys):
    assert cli_main(["watch", "--drops", str(tmp_path), "--interval", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --interval must be a positive number of seconds, not -1.0"


def test_a_drop_without_a_column_the_champion_reads_is_the_drops_problem(shared_trained, tiny_config, tmp_path):
    from kickvision.data.catalog import read_catalog
    from kickvision.train.update import encode_drop

    champion = copy.deepcopy(shared_trained)
    champion.spec.text_columns = ["usage"]  # a champion trained with `usage` next to the title
    drop = write_demo_drop(tmp_path / "drop", n_per_class=3, image_size=32, new_categories=False)
    with pytest.raises(CatalogError, match="lacks the column 'usage' that the champion reads"):
        encode_drop(read_catalog(drop), champion, tiny_config.data, 40_000_000, seed=0)
    assert is_drop_problem(CatalogError("x"))  # so the watcher records it as failed and moves on


def test_a_dangling_link_in_a_drop_does_not_stop_the_watcher(tmp_path):
    drops = _three_drops(tmp_path)
    (drops[0] / "images" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert [p.name for p, _, _ in pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE))] == [
        d.name for d in drops
    ]


def test_max_drops_processes_that_many_in_order_and_leaves_the_rest_pending(tmp_path):
    drops = _three_drops(tmp_path)
    seen: list[str] = []
    first = process_pending(tmp_path, lambda folder: seen.append(folder.name) or "ok", max_drops=1)
    assert [name for name, _ in first] == [drops[0].name] and seen == [drops[0].name]
    assert [p[0].name for p in pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE))] == [
        d.name for d in drops[1:]
    ]
    rest = process_pending(tmp_path, lambda folder: seen.append(folder.name) or "ok", max_drops=5)
    assert seen == [d.name for d in drops] and len(rest) == 2


def test_max_drops_without_once_is_refused_in_one_line(tmp_path, capsys):
    assert cli_main(["watch", "--drops", str(tmp_path), "--max-drops", "1"]) == 2
    assert "--max-drops goes with --once" in capsys.readouterr().err


@pytest.mark.integration
def test_a_drop_that_lost_the_champion_race_is_applied_again_to_the_new_champion(
    watch_config, demo_drop, tmp_path, capsys, monkeypatch
):
    """Another trainer promotes a version while the watcher's update trains on the old champion: the
    update's version stays challenger (the alias moved, whatever its gate said against the old
    champion), and the watcher applies the drop again, to the new champion, so the model in
    production has learnt it."""
    import steps.training.ewc_update as ewc_step

    race = tmp_path / "race.yaml"
    race.write_text(watch_config.read_text().replace(MODEL, "kickvision-race"))
    assert cli_main(["train", "--catalog", str(demo_drop), "--config", str(race)]) == 0
    from orchestration.stack import tracking_uri

    client = mlflow.MlflowClient(tracking_uri())
    first = str(client.get_model_version_by_alias("kickvision-race", "champion").version)
    real_update, raced = ewc_step.update_bundle, []

    def update_while_another_trainer_promotes(*args, **kwargs):
        if not raced:  # the other trainer finishes while this update trains
            copy_ = client.copy_model_version("models:/kickvision-race@champion", "kickvision-race")
            client.set_registered_model_alias("kickvision-race", "champion", copy_.version)
            raced.append(str(copy_.version))
        return real_update(*args, **kwargs)

    monkeypatch.setattr(ewc_step, "update_bundle", update_while_another_trainer_promotes)
    drops_dir = tmp_path / "drops"
    drop = write_demo_drop(drops_dir / "2026-04-06", n_per_class=4, seed=31, image_size=32, new_categories=False)
    capsys.readouterr()
    assert cli_main(["watch", "--drops", str(drops_dir), "--once", "--config", str(race)]) == 0
    assert "applying the drop to the new champion" in capsys.readouterr().out
    assert _ledger(drops_dir)[drop.name]["status"] == "done"

    versions = {v.version: v for v in client.search_model_versions("name='kickvision-race'")}
    updates = sorted((v for v in versions.values() if v.tags.get("pipeline") == "update"), key=lambda v: int(v.version))
    assert [v.tags["parent_version"] for v in updates] == [first, raced[0]]  # lost the race, then applied to the winner
    assert updates[0].tags["promotion_decision"] == "challenger"
    assert all(v.tags["catalog_hash"] == hash_drop(drop) for v in updates)
    champion = str(client.get_model_version_by_alias("kickvision-race", "champion").version)
    assert champion in (raced[0], str(updates[1].version))  # the winner, or its update if the gate promoted it


def _a_champion_whose_updates_are_refused(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(config, base catalog) of a trained champion `name` whose updates the gate refuses (an update
    learning rate that wrecks the model) and whose watcher falls back to a joint retrain."""
    from kickvision.data.demo import write_demo_catalog
    from tests.conftest import REPO, TINY_RUN

    run = deep_merge(
        TINY_RUN,
        {
            "name": "tiny-joint",
            "registry": {"model_name": name},
            "train": {"epochs": 30, "lr": 0.01, "patience": 30},  # a champion that knows its catalog
            "continual": {"epochs": 2, "lr": 5.0, "ewc_lambda": 0, "use_replay": False},
        },
    )
    run["continual"]["refused_update"] = "joint_retrain"
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((REPO / "configs/demo.yaml").read_text()), run)))
    base = write_demo_catalog(tmp_path / "base", n_per_class=40, image_size=32)
    assert cli_main(["train", "--catalog", str(base), "--config", str(config)]) == 0
    return config, base


@pytest.mark.integration
def test_a_refused_update_falls_back_to_a_joint_retrain_on_the_base_catalog_and_the_drop(tmp_path, state_dir, capsys):
    """With continual.refused_update: joint_retrain, a drop whose update the gate refuses (here: an
    update learning rate that wrecks the model) is learnt by a fresh training on the champion's
    catalog merged with the drop, and that model goes through the training gate. A drop whose refused
    update is registered but whose joint retrain never ran (a crash between the two leaves exactly what
    `kickvision update` by hand leaves) gets its joint retrain when the watcher meets it."""
    from orchestration.stack import tracking_uri

    name = "kickvision-joint"
    config, base = _a_champion_whose_updates_are_refused(tmp_path, name)
    # By hand, a refused update names the joint retrain to run, with the time it should take.
    drops = tmp_path / "drops"
    by_hand = write_demo_drop(drops / "2026-03-01-by-hand", n_per_class=10, new_per_class=20, seed=5, image_size=32)
    assert cli_main(["update", "--drop", str(by_hand), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "stays challenger (forgot too much" in out
    hint = next(line for line in out.splitlines() if line.startswith("next step"))
    command = f"kickvision train --catalog {base.resolve()} --also-drop {by_hand.resolve()} --config {config}"
    assert command in hint and "on the machine that trained the champion" in hint

    drop = write_demo_drop(drops / "2026-04-01-loafers", n_per_class=10, new_per_class=20, image_size=32)

    assert cli_main(["watch", "--drops", str(drops), "--once", "--config", str(config)]) == 0
    ledger = _ledger(drops)
    client = mlflow.MlflowClient(tracking_uri())
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    assert [v.tags["pipeline"] for v in versions] == ["training", "update", "training", "update", "training"]
    recovered = ledger[by_hand.name]  # its update stands (not repeated); its joint retrain runs now
    assert recovered["status"] == "done" and recovered["detail"].startswith("nothing to do")
    assert f"joint retrain {name} v{versions[2].version}" in recovered["detail"]
    entry = ledger[drop.name]
    assert entry["status"] == "done"
    assert "challenger: forgot too much" in entry["detail"] and "joint retrain" in entry["detail"]
    assert f"joint retrain {name} v{versions[4].version}" in entry["detail"]  # then the training gate decided:
    assert versions[4].tags["promotion_decision"] in ("champion", "challenger")  # on the merged catalog test rows
    merged = [p for p in (state_dir / "catalogs").iterdir() if (p / "catalog.csv").is_file()]
    joint = next(p for p in merged if versions[4].tags["catalog_hash"] == hash_drop(p))
    categories = set(pd.read_csv(joint / "catalog.csv")["category"])
    assert "Loafers" in categories and len(categories) == 8  # the base's seven and the drop's new one

    # A watcher killed after that joint retrain registered but before the ledger said so finds the drop
    # "started" again: it trains nothing twice, whichever way the training gate decided.
    DropLedger(drops / LEDGER_FILE).record(drop.name, entry["hash"], "started", stamp=entry["stamp"])
    assert cli_main(["watch", "--drops", str(drops), "--once", "--config", str(config)]) == 0
    assert len(client.search_model_versions(f"name='{name}'")) == 5
    again = _ledger(drops)[drop.name]
    assert again["status"] == "done" and again["detail"].startswith("nothing to do")
    if versions[4].tags["promotion_decision"] == "champion":  # it learnt the drop: its tag says so
        assert versions[4].tags["joint_retrain_of"] == entry["hash"]
    else:  # the refused update stands, and so does the joint retrain's answer
        assert f"joint retrain {name} v{versions[4].version} challenger (before a restart)" in again["detail"]


@pytest.mark.integration
def test_a_joint_retrain_that_lost_the_champion_race_is_not_taken_for_the_drops_answer(tmp_path, capsys, monkeypatch):
    """The watcher's joint retrain after a refused update was compared against a champion that another
    trainer replaced meanwhile: the new champion has not learnt the drop, so the watcher applies the drop
    to it (its update, refused again, then a joint retrain compared against the new champion), rather
    than recording the drop as done or reusing the stale retrain's answer."""
    import steps.registry.register as register_step
    from orchestration.stack import tracking_uri

    name = "kickvision-joint-race"
    config, _ = _a_champion_whose_updates_are_refused(tmp_path, name)
    client = mlflow.MlflowClient(tracking_uri())
    real_register, raced = register_step.register_and_promote, []

    def compared_while_another_trainer_promotes(*args, **kwargs):
        decision = real_register(*args, **kwargs)
        if not raced:  # the other trainer's version becomes champion after the comparison, before the alias moves
            copy_ = client.copy_model_version(f"models:/{name}@champion", name)
            client.set_registered_model_alias(name, "champion", copy_.version)
            raced.append(str(copy_.version))
        return decision

    monkeypatch.setattr(register_step, "register_and_promote", compared_while_another_trainer_promotes)
    drops = tmp_path / "drops"
    drop = write_demo_drop(drops / "2026-04-01-loafers", n_per_class=10, new_per_class=20, image_size=32)
    capsys.readouterr()
    assert cli_main(["watch", "--drops", str(drops), "--once", "--config", str(config)]) == 0

    out = capsys.readouterr().out
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    pipelines = [v.tags["pipeline"] for v in versions]
    assert pipelines == ["training", "update", "training", "training", "update", "training"]  # v4: the other's
    first, update, stale, winner, again, joint = versions
    assert raced == [str(winner.version)] and update.tags["parent_version"] == str(first.version)
    assert stale.tags["promotion_champion_moved"] == "true" and stale.tags["promotion_decision"] == "challenger"
    assert f"champion moved from v{first.version} to v{winner.version}" in stale.tags["promotion_reason"]
    assert f"joint retrain {name} v{stale.version} challenger" in out and "applying the drop to the new champion" in out
    assert again.tags["parent_version"] == str(winner.version) and again.tags["promotion_decision"] == "challenger"
    assert (
        joint.tags["promotion_champion_moved"] == "false" and joint.tags["catalog_hash"] == stale.tags["catalog_hash"]
    )
    entry = _ledger(drops)[drop.name]
    assert entry["status"] == "done" and f"joint retrain {name} v{joint.version}" in entry["detail"]
