import numpy as np
import pandas as pd

from kickvision.config import DataConfig
from kickvision.data.prepare import group_split, product_groups


def _rows(n=300, seed=0):
    rng = np.random.default_rng(seed)
    titles = [f"Brand {rng.integers(0, 150)} shoe" for _ in range(n)]  # many repeated titles
    sha = [f"h{rng.integers(0, 1500)}" for _ in range(n)]  # a few shared images
    cats = [f"c{i % 5}" for i in range(n)]
    return pd.DataFrame({"title": titles, "image_sha1": sha, "category": cats})


def test_split_has_no_group_leakage():
    rows = _rows()
    split = group_split(rows, DataConfig(), seed=1)
    for key in ("title", "image_sha1"):
        per_key = pd.DataFrame({"k": rows[key], "s": split}).groupby("k")["s"].nunique()
        assert (per_key == 1).all(), f"rows sharing {key} straddle splits"


def test_groups_join_title_and_image_chains():
    rows = pd.DataFrame({"title": ["a", "a", "b", "c"], "image_sha1": ["1", "2", "2", "3"], "category": ["x"] * 4})
    groups = product_groups(rows)
    assert groups[0] == groups[1] == groups[2] != groups[3]


def test_split_is_stratified_and_sized():
    rows = pd.DataFrame(
        {
            "title": [f"t{i}" for i in range(500)],
            "image_sha1": [f"h{i}" for i in range(500)],
            "category": [f"c{i % 4}" for i in range(500)],
        }
    )
    split = group_split(rows, DataConfig(val_fraction=0.15, test_fraction=0.2), seed=3)
    assert abs((split == "test").mean() - 0.2) < 0.03
    assert abs((split == "val").mean() - 0.15) < 0.03
    for s in ("train", "val", "test"):
        assert rows.loc[split == s, "category"].nunique() == 4


def test_too_few_groups_is_a_clear_catalog_error():
    import pytest

    from kickvision.errors import CatalogError

    rows = pd.DataFrame(
        {"title": ["same title"] * 20, "image_sha1": [f"h{i}" for i in range(20)], "category": ["a", "b"] * 10}
    )
    with pytest.raises(CatalogError, match="distinct products"):
        group_split(rows, DataConfig(), seed=0)


def test_a_small_drop_with_four_products_per_category_still_splits_without_leakage():
    rows = pd.DataFrame(
        {
            "title": [f"shoe {i}" for i in range(28)],
            "image_sha1": [f"h{i}" for i in range(28)],
            "category": [f"c{i % 7}" for i in range(28)],  # 4 per category: fewer than the 5 test folds
        }
    )
    split = group_split(rows, DataConfig(), seed=3)
    assert set(split) == {"train", "val", "test"}
    assert 3 <= (split == "test").sum() <= 9 and (split == "train").sum() >= 14


def test_product_texts_append_the_chosen_attribute_columns():
    from kickvision.data.text import product_texts

    rows = pd.DataFrame(
        {
            "title": ["Puma Men Running Shoe", "", None],
            "usage": ["Sports", "Casual", np.nan],
            "base_colour": ["White", None, ""],
        }
    )
    assert product_texts(rows) == ["Puma Men Running Shoe", None, None]
    assert product_texts(rows, ["usage", "base_colour"]) == [
        "Puma Men Running Shoe | usage: Sports | base colour: White",
        "usage: Casual",
        None,
    ]


def test_text_columns_reach_the_tokens_and_travel_with_the_model(tiny_config, demo_drop):
    import pytest

    from kickvision.data.catalog import read_catalog
    from kickvision.data.images import resolve_image_transform
    from kickvision.data.prepare import prepare_catalog
    from kickvision.data.validation import quarantine_bad_rows
    from kickvision.errors import ConfigError
    from kickvision.model.bundle import BundleSpec, ModelBundle
    from kickvision.model.encoders import build_tokenizer
    from kickvision.model.net import build_model
    from kickvision.serve.predictor import ShoePredictor

    catalog = quarantine_bad_rows(read_catalog(demo_drop), tiny_config.validate_).catalog
    tokenizer = build_tokenizer(tiny_config.model.text_encoder)
    transform = resolve_image_transform(tiny_config.model)
    plain = prepare_catalog(catalog, tokenizer, transform, tiny_config.data, seed=1)
    with_colour = prepare_catalog(
        catalog, tokenizer, transform, tiny_config.data.model_copy(update={"text_columns": ["base_colour"]}), seed=1
    )
    colour_id = tokenizer.convert_tokens_to_ids("colour")
    assert (with_colour.input_ids == colour_id).any(axis=1).mean() > 0.5 and not (plain.input_ids == colour_id).any()
    with pytest.raises(ConfigError, match="no column 'season'"):
        prepare_catalog(
            catalog, tokenizer, transform, tiny_config.data.model_copy(update={"text_columns": ["season"]}), 1
        )

    spec = BundleSpec(classes=["a", "b", "c"], max_title_tokens=16, text_columns=["base_colour"])
    bundle = ModelBundle(build_model(tiny_config.model, 3), tokenizer, spec)
    _, texts = ShoePredictor(bundle).read_frame(pd.DataFrame({"title": ["Red Heels", "x"], "base_colour": ["Red", ""]}))
    assert texts == ["Red Heels | base colour: Red", "x"]


def test_prepared_labels_are_a_writable_copy_that_torch_takes_without_a_warning(demo_data):
    import warnings

    import torch

    labels = demo_data.labels()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' read-only views made torch warn in the pretraining log
        tensor = torch.from_numpy(labels)
    labels[0] = labels[0] + 1  # a copy: the caller's edit leaves the catalog alone
    assert int(tensor[0]) == int(labels[0]) and demo_data.labels()[0] == labels[0] - 1
