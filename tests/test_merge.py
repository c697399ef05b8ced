"""Merging a base catalog and its drops into one catalog for a joint retrain (kickvision/data/merge.py)."""

from pathlib import Path

import pandas as pd
import pytest

from kickvision.data.catalog import read_catalog
from kickvision.data.corrections import append_correction
from kickvision.data.demo import write_demo_catalog, write_demo_drop
from kickvision.data.merge import catalog_rows, merge_catalogs
from kickvision.data.validation import quarantine_bad_rows
from kickvision.errors import CatalogError
from tests.conftest import TINY_RUN


@pytest.fixture
def base_and_drop(tmp_path):
    base = write_demo_catalog(tmp_path / "base", n_per_class=3, image_size=16)
    drop = write_demo_drop(tmp_path / "drop", n_per_class=2, new_per_class=3, image_size=16)
    rows = pd.read_csv(base / "catalog.csv", dtype=str)
    drop_rows = pd.read_csv(drop / "catalog.csv", dtype=str)
    relisted = drop_rows.iloc[0].copy()
    relisted["product_id"] = rows.at[0, "product_id"]  # the drop lists a base product again, newer title
    relisted["title"] = "Relisted " + str(relisted["title"])
    escape = drop_rows.iloc[1].copy()
    escape["product_id"], escape["image"] = "ESCAPE-1", "../base/" + rows.at[1, "image"]  # leaves the drop
    back_in = drop_rows.iloc[2].copy()  # leaves the drop and comes back into it: a file of the drop
    back_in["product_id"], back_in["image"] = "BACK-IN-1", "../../" + drop.parent.name + "/drop/" + back_in["image"]
    extra = pd.DataFrame([relisted, escape, back_in])
    pd.concat([drop_rows, extra]).to_csv(drop / "catalog.csv", index=False)
    append_correction(base, rows.at[2, "product_id"], "relabel", "Boots", note="a boot", reviewer="ana")
    append_correction(base, rows.at[3, "product_id"], "exclude", note="a sock, not a shoe", reviewer="ana")
    return base, drop, rows, drop_rows


def test_a_merged_catalog_keeps_every_product_once_with_the_later_listing_and_its_images(base_and_drop, tmp_path):
    base, drop, rows, drop_rows = base_and_drop
    report = merge_catalogs([base, drop], tmp_path / "joint")
    merged = read_catalog(report.folder)
    assert report.replaced == 1 and report.rows == len(rows) + len(drop_rows) + 3 - 1
    assert merged.rows["product_id"].is_unique
    by_id = merged.rows.set_index("product_id")
    assert by_id.at[rows.at[0, "product_id"], "title"].startswith("Relisted ")
    assert by_id.at[rows.at[0, "product_id"], "image"].startswith("1-drop/")
    assert by_id.at["BACK-IN-1", "image"].startswith("1-drop/images/")  # normalised, no `..`
    assert by_id.at["ESCAPE-1", "image"].startswith("../base/")  # kept verbatim: it names nothing here
    images = set(merged.rows["image"].dropna()) - {by_id.at["ESCAPE-1", "image"]}
    assert all((report.folder / image).is_file() for image in images)
    assert report.images == len(images)  # every photo but the one that left its folder, each once
    written = {p.resolve() for p in tmp_path.rglob("*") if p.is_file()}
    assert all(p.is_relative_to(report.folder) or p.is_relative_to(base) or p.is_relative_to(drop) for p in written)


def test_duplicate_ids_within_one_catalog_are_left_for_validation_to_quarantine(tmp_path):
    base = write_demo_catalog(tmp_path / "base", n_per_class=3, image_size=16)
    rows = pd.read_csv(base / "catalog.csv", dtype=str)
    pd.concat([rows, rows.iloc[[0]]]).to_csv(base / "catalog.csv", index=False)
    drop = write_demo_drop(tmp_path / "drop", n_per_class=1, new_per_class=1, image_size=16)
    report = merge_catalogs([base, drop], tmp_path / "joint")
    merged = read_catalog(report.folder).rows
    assert report.replaced == 0 and (merged["product_id"] == rows.at[0, "product_id"]).sum() == 2


def test_reviewer_decisions_hold_in_the_merged_catalog(base_and_drop, tmp_path):
    base, drop, rows, _ = base_and_drop
    merged = read_catalog(merge_catalogs([base, drop], tmp_path / "joint").folder)
    assert merged.rows.set_index("product_id").at[rows.at[2, "product_id"], "category"] == "Boots"
    assert merged.exclusions == {rows.at[3, "product_id"]: merged.exclusions[rows.at[3, "product_id"]]}
    assert "a sock" in merged.exclusions[rows.at[3, "product_id"]]
    assert merged.corrections["relabelled"] == 1 and merged.corrections["excluded"] == 1


def test_an_image_path_that_left_its_drop_still_names_nothing_and_is_quarantined(base_and_drop, tmp_path):
    from kickvision.config import load_config
    from tests.conftest import REPO

    base, drop, _, _ = base_and_drop
    merged = read_catalog(merge_catalogs([base, drop], tmp_path / "joint").folder)
    result = quarantine_bad_rows(merged, load_config(REPO / "configs/demo.yaml", overrides=TINY_RUN).validate_)
    quarantined = result.quarantine.set_index("product_id")
    assert "ESCAPE-1" in quarantined.index and "image" in quarantined.at["ESCAPE-1", "reason"]
    assert result.total_rows == len(merged.rows)  # nothing lost: used or quarantined


def test_merging_is_refused_into_a_catalog_it_reads_or_from_the_same_folder_twice(base_and_drop):
    base, drop, _, _ = base_and_drop
    with pytest.raises(CatalogError, match="inside a catalog it reads"):
        merge_catalogs([base, drop], base / "joint")
    with pytest.raises(CatalogError, match="or around one"):
        merge_catalogs([base, drop], Path(base).parent)  # would delete both to write the merge
    with pytest.raises(CatalogError, match="named twice"):
        merge_catalogs([base, base], Path(base).parent / "joint")
    assert (base / "catalog.csv").is_file() and not (base / "joint").exists()


def test_catalog_rows_counts_every_listing_and_says_none_when_a_catalog_is_gone(base_and_drop, tmp_path):
    base, drop, rows, drop_rows = base_and_drop
    assert catalog_rows([base, drop]) == len(rows) + len(drop_rows) + 3
    assert catalog_rows([base, tmp_path / "gone"]) is None
