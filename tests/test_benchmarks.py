"""The benchmark scripts' own helpers: how methods are named and split, how seeds are summarised, where
results are written. (The benchmarks themselves measure; these are the parts that must not misreport.)"""

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
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


def test_a_saved_model_relabels_the_catalog_in_its_own_class_order_and_refuses_what_it_cannot_read(
    bench, tiny_config, learnt_data, trained_bundle
):
    common, _ = bench
    assert common.data_for_model(learnt_data, trained_bundle, tiny_config) is learnt_data  # same order: as it is

    # An update appends its new categories, so a saved model's order can differ from the catalog's sorted one.
    reordered = list(reversed(learnt_data.classes))
    trained_bundle.spec = trained_bundle.spec.model_copy(update={"classes": reordered})
    relabelled = common.data_for_model(learnt_data, trained_bundle, tiny_config)
    assert relabelled.classes == reordered
    categories = learnt_data.rows["category"].to_numpy()
    assert [reordered[i] for i in relabelled.labels()] == list(categories)
    assert [learnt_data.classes[i] for i in learnt_data.labels()] == list(categories)  # the input is untouched
    assert relabelled.images is learnt_data.images and relabelled.corrections == learnt_data.corrections

    trained_bundle.spec = trained_bundle.spec.model_copy(update={"classes": reordered[:-1] + ["Clogs"]})
    with pytest.raises(SystemExit, match=r"^error: the model's classes .* are not the catalog's"):
        common.data_for_model(learnt_data, trained_bundle, tiny_config)

    trained_bundle.spec = trained_bundle.spec.model_copy(update={"classes": reordered})
    reads_more = tiny_config.model_copy(
        update={"data": tiny_config.data.model_copy(update={"text_columns": ["brand"]})}
    )
    with pytest.raises(SystemExit, match=r"^error: the model reads \(text columns, tokens\)"):
        common.data_for_model(learnt_data, trained_bundle, reads_more)


def test_flip_averaging_adds_the_logits_of_each_photo_mirrored_left_to_right(bench, learnt_data, shared_trained):
    common, _ = bench
    from kickvision.model.predict import predict_arrays
    from kickvision.train.engine import classification_scores

    rows = learnt_data.indices("test")
    model, labels = shared_trained.model, learnt_data.labels()[rows]
    as_they_are, _ = predict_arrays(
        model, learnt_data.images[rows], learnt_data.input_ids[rows], learnt_data.attention_mask[rows]
    )
    # Mirrored photos with no logits of their own: averaging flips them back, so the scores are the originals'.
    mirrored = dataclasses.replace(learnt_data, images=np.ascontiguousarray(learnt_data.images[:, :, ::-1]))
    scores = common.flip_tta_scores(model, mirrored, rows, np.zeros_like(as_they_are))
    plain = classification_scores(labels, as_they_are.argmax(1))
    assert scores == {"top1_flip_tta": plain["top1"], "macro_f1_flip_tta": plain["macro_f1"]}

    # What the caller hides stays hidden in the mirrored pass: with the photo hidden, a mirror changes nothing.
    ids, mask = learnt_data.input_ids[rows], learnt_data.attention_mask[rows]
    title_only, _ = predict_arrays(model, learnt_data.images[rows], ids, mask, use_image=False)
    hidden = common.flip_tta_scores(model, learnt_data, rows, np.zeros_like(title_only), use_image=False)
    alone = classification_scores(labels, title_only.argmax(1))
    assert hidden == {"top1_flip_tta": alone["top1"], "macro_f1_flip_tta": alone["macro_f1"]}


def test_a_catalog_written_as_validated_reads_back_as_the_validated_one_with_the_same_split(
    bench, tiny_config, demo_drop, tmp_path, monkeypatch
):
    """What a lent GPU box (no GX there) trains on: validation's good rows, the same products in each split."""
    common, _ = bench
    sys.path.insert(0, str(BENCHMARKS / "gpu"))
    try:
        import validated_catalog
    finally:
        sys.path.remove(str(BENCHMARKS / "gpu"))
    copy = tmp_path / "drop"
    shutil.copytree(demo_drop, copy)
    (copy / "images" / "broken.jpg").write_bytes(b"not a photo")  # quarantined, so not written
    rows = (copy / "catalog.csv").read_text().splitlines()
    broken = rows[1].split(",")
    broken[0], broken[1] = "broken-1", "images/broken.jpg"
    (copy / "catalog.csv").write_text("\n".join([*rows, ",".join(broken)]) + "\n")
    monkeypatch.setattr(sys, "argv", ["validated_catalog.py", str(copy), str(tmp_path / "out"), "--config", "demo"])
    validated_catalog.main()
    assert not (tmp_path / "out" / "images" / "broken.jpg").exists()
    checked, _, _ = common.prepared_catalog(str(copy), tiny_config)
    read, _, _ = common.prepared_catalog(str(tmp_path / "out"), tiny_config, validated=True)
    for split in ("train", "val", "test"):
        ids = [d.rows.loc[d.indices(split), "product_id"].astype(str).tolist() for d in (checked, read)]
        assert ids[0] == ids[1]
    assert np.array_equal(checked.images, read.images) and "broken-1" not in read.rows["product_id"].astype(str).values


def test_a_cached_model_is_reused_whatever_device_knobs_train_it_but_not_when_what_it_learns_changes(
    bench, tiny_config
):
    _, continual = bench
    data = SimpleNamespace(rows=pd.DataFrame({"product_id": ["a", "b"]}), catalog_hash="h")
    key = continual.cache_key(tiny_config, data, ["x", "y"], 42)
    faster = tiny_config.model_copy(
        update={"train": tiny_config.train.model_copy(update={"data_on_device": True, "compile": True})}
    )
    assert continual.cache_key(faster, data, ["x", "y"], 42) == key
    frozen_text = tiny_config.model_copy(
        update={"train": tiny_config.train.model_copy(update={"pretrained_trainable_layers": 0})}
    )
    assert continual.cache_key(frozen_text, data, ["x", "y"], 42) != key
    assert continual.cache_key(tiny_config, data, ["x", "y"], 7) != key


def test_a_train_arm_changes_only_the_train_settings_it_names_and_a_bad_one_fails_before_training(bench):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import accuracy
    finally:
        sys.path.remove(str(BENCHMARKS))
    from kickvision.config import load_config
    from kickvision.errors import ConfigError

    base = load_config("fashion")
    arms = accuracy.train_arms(base, "fashion", {}, "pretrained_trainable_layers=0, epochs=8;lr=0.0005")
    assert list(arms) == ["", ", train[pretrained_trainable_layers=0]", ", train[epochs=8;lr=0.0005]"]
    assert arms[""] is base
    frozen, shorter = arms[", train[pretrained_trainable_layers=0]"], arms[", train[epochs=8;lr=0.0005]"]
    assert frozen.train.pretrained_trainable_layers == 0 and base.train.pretrained_trainable_layers is None
    assert frozen.train.model_copy(update={"pretrained_trainable_layers": None}) == base.train
    assert (shorter.train.epochs, shorter.train.lr) == (8, 0.0005) and shorter.model == base.model
    with pytest.raises(ConfigError, match="pretrained_trainable_layers"):
        accuracy.train_arms(base, "fashion", {}, "pretrained_trainable_layers=-1")


def test_an_update_variant_is_the_config_with_only_the_named_settings_changed_and_a_misspelt_one_fails(bench, tmp_path):
    import update_as_a_user
    import yaml

    from kickvision.config import ConfigError, load_config, resolve_config_path

    path = update_as_a_user.variant_config("fashion", "continual.epochs=6; continual.patience=2", tmp_path / "v.yaml")
    original = yaml.safe_load(resolve_config_path("fashion").read_text())
    changed = yaml.safe_load(path.read_text())
    assert changed["continual"] == original["continual"] | {"epochs": 6, "patience": 2}
    assert {k: v for k, v in changed.items() if k != "continual"} == {
        k: v for k, v in original.items() if k != "continual"
    }
    assert load_config(path).continual.epochs == 6
    with pytest.raises(ConfigError, match="continual.epoch'"):
        update_as_a_user.variant_config("fashion", "continual.epoch=6", tmp_path / "bad.yaml")
