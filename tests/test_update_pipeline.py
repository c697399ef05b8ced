"""Integration: train on a demo catalog, then `kickvision update` with drops, good and bad (real ZenML + MLflow)."""

import shutil

import mlflow
import pandas as pd
import pytest
import yaml

from kickvision.cli import main as cli_main
from kickvision.config import deep_merge
from kickvision.data.corrections import append_correction
from kickvision.data.demo import write_demo_drop
from kickvision.serve.pyfunc_logging import photos_as_bytes

pytestmark = pytest.mark.integration

MODEL = "kickvision-updates"  # its own registered model, so other tests' versions do not interfere


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    from tests.conftest import REPO, TINY_RUN

    run = deep_merge(
        TINY_RUN,
        {
            "name": "tiny-update",
            "train": {"epochs": 4},
            "continual": {
                "epochs": 20,
                "batch_size": 8,
                "lr": 0.01,
                "fisher_samples": 32,
                "replay_bytes": 60_000,
                "validation_per_class": 5,
            },
            "registry": {"model_name": MODEL},
        },
    )
    path = tmp_path_factory.mktemp("config") / "tiny-update.yaml"
    path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((REPO / "configs/demo.yaml").read_text()), run)))
    return path


@pytest.fixture(scope="module")
def registry(config_file, demo_drop):
    """Train the first champion with the CLI, as a user would, and return an MLflow client on its store."""
    assert cli_main(["train", "--catalog", str(demo_drop), "--config", str(config_file)]) == 0
    from orchestration.stack import tracking_uri

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    client.uri = uri
    return client


def _champion(client) -> str:
    return str(client.get_model_version_by_alias(MODEL, "champion").version)


@pytest.fixture(scope="module")
def new_category_drop(tmp_path_factory):
    """A drop with a new category, and a reviewer's decisions beside it: one relabel, one exclusion."""
    drop = write_demo_drop(tmp_path_factory.mktemp("drops") / "drop-1", n_per_class=4, new_per_class=24, image_size=32)
    rows = pd.read_csv(drop / "catalog.csv", dtype=str)
    old = rows[rows["category"] != "Loafers"]
    other = next(c for c in old["category"].unique() if c != old["category"].iloc[0])
    append_correction(drop, old["product_id"].iloc[0], "relabel", other, reviewer="ana")
    append_correction(drop, old["product_id"].iloc[1], "exclude", note="not a shoe")
    return drop


def test_update_adds_a_version_that_knows_the_new_category(registry, config_file, new_category_drop, capsys):
    assert _champion(registry) == "1"
    capsys.readouterr()
    assert cli_main(["update", "--drop", str(new_category_drop), "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    mlflow.set_tracking_uri(registry.uri)  # the step's tracker context is over
    assert "old top-1" in out and "forgetting" in out and f"{MODEL} v2" in out

    version = registry.get_model_version(MODEL, "2")
    assert version.tags["promotion_decision"] in ("champion", "challenger")
    assert version.tags["parent_version"] == "1" and version.tags["pipeline"] == "update"
    assert "old-category top-1" in version.tags["promotion_reason"]
    assert _champion(registry) == ("2" if version.tags["promotion_decision"] == "champion" else "1")
    assert str(registry.get_model_version_by_alias(MODEL, "challenger").version) == "2"

    run = registry.get_run(version.run_id)
    m = run.data.metrics
    # The gate decided on exactly the metrics the run logged.
    assert (
        f"old-category top-1 {m['update_old_top1_before']:.4f} -> {m['update_old_top1_after']:.4f} "
        f"(forgetting {m['update_forgetting']:+.4f}" in version.tags["promotion_reason"]
    )
    assert m["update_forgetting"] == pytest.approx(m["update_old_top1_before"] - m["update_old_top1_after"])
    # The epoch was chosen on the champion's old validation products plus the drop's validation split.
    assert m["update_validation_products"] > 5 and 1 <= m["update_kept_epoch"] <= 20
    # The replay memory is a byte budget of JPEGs: more than 3 exemplars per category, in about 60 kB.
    assert m["replay_exemplars"] > 3 * 8 and m["replay_stored_bytes"] <= 66_000
    card = mlflow.artifacts.load_text(f"runs:/{version.run_id}/model_card.md")
    assert "## Catalog-drop update" in card
    # The reviewer's decisions were applied: counted on the card and the run, the exclusion quarantined.
    assert "Reviewer corrections applied (corrections.csv): 1 relabelled, 1 excluded, 0 confirmed." in card
    assert m["corrections_relabelled"] == 1 and m["corrections_excluded"] == 1
    quarantine = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{version.run_id}/validation/quarantine.csv"))
    assert "excluded in corrections.csv: not a shoe" in set(quarantine["reason"])

    # The updated model predicts the new category (a tiny model: some of them, and it ranks Loafers
    # higher for Loafers than for other products) and recommends the drop's products.
    rows = pd.read_csv(new_category_drop / "catalog.csv", dtype=str)
    frame = pd.DataFrame({"image": [str(new_category_drop / p) for p in rows["image"]], "title": rows["title"]})
    out = mlflow.pyfunc.load_model(f"models:/{MODEL}/2").predict(photos_as_bytes(frame))
    assert out["probability"].between(0, 1).all()
    is_loafer = (rows["category"] == "Loafers").to_numpy()
    p_loafers = out["probabilities"].map(lambda p: p["Loafers"]).to_numpy()
    assert (out["category"][is_loafer] == "Loafers").any()
    assert p_loafers[is_loafer].mean() > p_loafers[~is_loafer].mean()
    recommended = {pid for ids in out["similar_product_ids"] for pid in ids}
    assert recommended & set(rows["product_id"])  # new products are recommendable


def test_the_same_drop_again_is_a_no_op(registry, config_file, new_category_drop, capsys):
    versions = len(registry.search_model_versions(f"name='{MODEL}'"))
    champion = _champion(registry)
    assert cli_main(["update", "--drop", str(new_category_drop), "--config", str(config_file)]) == 0
    assert "nothing to do: this drop" in capsys.readouterr().out
    assert len(registry.search_model_versions(f"name='{MODEL}'")) == versions and _champion(registry) == champion


def _broken(new_category_drop, tmp_path, name, change) -> str:
    drop = shutil.copytree(new_category_drop, tmp_path / name)
    rows = pd.read_csv(drop / "catalog.csv", dtype=str)
    change(rows).to_csv(drop / "catalog.csv", index=False)
    return str(drop)


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("all-bad", lambda rows: rows.assign(image="images/missing.png"), "0 of 52 rows passed validation"),
        ("label-column", lambda rows: rows.rename(columns={"category": "label"}), "no 'category' column"),
        ("one-product", lambda rows: rows.head(1), "1 of 1 rows passed validation"),
    ],
)
def test_a_bad_drop_is_one_clear_line_and_leaves_the_champion(
    registry, config_file, new_category_drop, tmp_path, capsys, name, change, message
):
    versions = len(registry.search_model_versions(f"name='{MODEL}'"))
    champion = _champion(registry)
    drop = _broken(new_category_drop, tmp_path, name, change)
    assert cli_main(["update", "--drop", drop, "--config", str(config_file)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.startswith("error: ")
    assert "Traceback" not in captured.err + captured.out
    assert len(registry.search_model_versions(f"name='{MODEL}'")) == versions and _champion(registry) == champion


def test_update_without_a_champion_says_how_to_get_one(registry, config_file, new_category_drop, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(config_file.read_text().replace(f"model_name: {MODEL}", "model_name: never-trained"))
    assert cli_main(["update", "--drop", str(new_category_drop), "--config", str(other)]) == 2
    err = capsys.readouterr().err
    assert "no 'champion' version of model 'never-trained'" in err and "train one first" in err
