import shutil

import pandas as pd
import pytest
from PIL import Image

from kickvision.config import ValidateConfig
from kickvision.data.catalog import read_catalog
from kickvision.data.demo import BAD_ROW_KINDS
from kickvision.data.validation import quarantine_bad_rows, usable_or_raise
from kickvision.errors import CatalogError


@pytest.fixture(scope="module")
def bad_result(bad_drop):
    return quarantine_bad_rows(read_catalog(bad_drop), ValidateConfig(min_rows_per_class=1))


@pytest.mark.parametrize("kind", [k for k in BAD_ROW_KINDS if k != "duplicate_id"])
def test_validation_quarantines_each_bad_row_kind(bad_result, kind):
    row = bad_result.quarantine[bad_result.quarantine["product_id"] == f"BAD-{kind}"]
    assert len(row) == 1, f"BAD-{kind} not quarantined"
    assert BAD_ROW_KINDS[kind] in row["reason"].iloc[0]


def test_validation_quarantines_duplicate_ids(bad_result):
    dupes = bad_result.quarantine[bad_result.quarantine["reason"].str.contains("more than once")]
    assert len(dupes) == 2 and dupes["product_id"].nunique() == 1


def test_every_row_is_used_or_quarantined(bad_result):
    assert bad_result.good_rows + len(bad_result.quarantine) == bad_result.total_rows
    assert bad_result.quarantine["reason"].str.len().gt(0).all()
    assert not bad_result.catalog.rows["product_id"].str.startswith("BAD-").any()


def test_validation_quarantines_path_traversal(bad_result):
    row = bad_result.quarantine.set_index("product_id").loc["BAD-path_traversal"]
    assert "escapes the drop folder" in row["reason"]


def test_oversized_image_is_refused_before_decoding(demo_drop, tmp_path):
    drop = shutil.copytree(demo_drop, tmp_path / "drop")
    rows = pd.read_csv(drop / "catalog.csv", dtype=str)
    Image.new("RGB", (400, 400), "white").save(drop / rows.at[0, "image"])
    result = quarantine_bad_rows(read_catalog(drop), ValidateConfig(max_image_pixels=100_000, min_rows_per_class=1))
    assert "pixel limit" in result.quarantine.set_index("product_id").loc[rows.at[0, "product_id"], "reason"]


def test_missing_column_quarantines_every_row_and_fails_clearly(demo_drop, tmp_path):
    drop = shutil.copytree(demo_drop, tmp_path / "drop")
    pd.read_csv(drop / "catalog.csv").drop(columns=["title"]).to_csv(drop / "catalog.csv", index=False)
    result = quarantine_bad_rows(read_catalog(drop), ValidateConfig())
    assert result.good_rows == 0
    assert result.quarantine["reason"].str.contains("no 'title' column").all()
    with pytest.raises(CatalogError, match="unusable"):
        usable_or_raise(result, ValidateConfig())


def test_rare_categories_are_quarantined_with_reason(demo_drop):
    result = quarantine_bad_rows(read_catalog(demo_drop), ValidateConfig(min_rows_per_class=11))
    assert result.good_rows == 0
    assert result.quarantine["reason"].str.contains("min_rows_per_class").all()


def test_enough_good_rows_passes(bad_result):
    usable_or_raise(bad_result, ValidateConfig(min_good_rows=10))


def test_a_drop_may_bring_few_products_of_a_category_the_model_knows(demo_drop):
    catalog = read_catalog(demo_drop)
    catalog.rows = catalog.rows.groupby("category").head(1).reset_index(drop=True)  # one product per category
    strict = quarantine_bad_rows(catalog, ValidateConfig(min_rows_per_class=3))
    assert strict.good_rows == 0 and strict.quarantine["reason"].str.contains("too few good rows").all()
    known = sorted(catalog.rows["category"])[:3]
    lenient = quarantine_bad_rows(catalog, ValidateConfig(min_rows_per_class=3), known_categories=known)
    assert sorted(lenient.catalog.rows["category"]) == known


def test_data_docs_page_shows_the_failed_expectations(bad_result):
    html = bad_result.data_docs_html
    assert html.startswith("<!DOCTYPE html>") and "Great Expectations" in html
    assert "product_id" in html and "unique" in html.lower()
    assert "failed" in html.lower()
