"""`kickvision watch`: drops in name order, a crash-safe ledger, one watcher at a time."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from kickvision.cli import main as cli_main
from kickvision.config import deep_merge
from kickvision.data.catalog import hash_drop
from kickvision.data.demo import write_demo_drop
from kickvision.errors import CatalogError
from kickvision.watch import LEDGER_FILE, DropLedger, WatcherBusy, pending_drops, process_pending, watcher_lock

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
    assert [p.name for p, _ in pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE))] == [drops[1].name]

    ledger = DropLedger(tmp_path / LEDGER_FILE)  # ...until its content changes; "started" always is
    ledger.record(drops[2].name, hash_drop(drops[2]), "started")
    pending = [p.name for p, _ in pending_drops(tmp_path, DropLedger(tmp_path / LEDGER_FILE))]
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
