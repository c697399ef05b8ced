import pandas as pd

from kickvision.data.catalog import hash_drop
from kickvision.data.demo import BAD_ROW_KINDS, CATEGORIES, write_demo_catalog


def test_demo_catalog_is_deterministic(tmp_path):
    a = write_demo_catalog(tmp_path / "a", n_per_class=3, image_size=32)
    b = write_demo_catalog(tmp_path / "b", n_per_class=3, image_size=32)
    assert hash_drop(a) == hash_drop(b)


def test_demo_catalog_has_generic_drop_format_and_enough_categories(demo_drop):
    rows = pd.read_csv(demo_drop / "catalog.csv")
    assert {"product_id", "image", "title", "category"} <= set(rows.columns)
    assert rows["category"].nunique() == len(CATEGORIES) >= 5
    assert all((demo_drop / p).is_file() for p in rows["image"])


def test_demo_titles_rarely_name_the_category(demo_drop):
    rows = pd.read_csv(demo_drop / "catalog.csv")
    named = sum(c.split()[0].lower() in t.lower() for t, c in zip(rows["title"], rows["category"], strict=True))
    assert named / len(rows) < 0.5  # the title alone must not be enough


def test_demo_can_write_each_bad_row_kind(bad_drop):
    rows = pd.read_csv(bad_drop / "catalog.csv", dtype=str, keep_default_na=False)
    assert {f"BAD-{k}" for k in BAD_ROW_KINDS} - {"BAD-duplicate_id"} <= set(rows["product_id"])
    assert rows["product_id"].duplicated().any()
