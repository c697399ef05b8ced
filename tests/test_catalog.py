import os

import pytest

from kickvision.data.catalog import hash_drop, read_catalog, resolve_inside
from kickvision.errors import CatalogError


def test_resolve_inside_rejects_escapes(tmp_path):
    root = tmp_path / "drop"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"x")
    os.symlink(tmp_path / "secret.png", root / "images" / "link.png")
    assert resolve_inside(root, "images/a.png") == (root / "images" / "a.png").resolve()
    for escaping in ("../secret.png", "images/../../secret.png", str(tmp_path / "secret.png"), "images/link.png", ""):
        assert resolve_inside(root, escaping) is None, escaping


def test_hash_changes_with_any_image_byte(demo_drop, tmp_path):
    import shutil

    copy = shutil.copytree(demo_drop, tmp_path / "copy")
    before = hash_drop(copy)
    assert before == hash_drop(demo_drop)
    image = next((copy / "images").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert hash_drop(copy) != before


def test_read_catalog_without_csv_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="no catalog.csv"):
        read_catalog(tmp_path)


def test_read_catalog_marks_empty_cells_missing(bad_drop):
    rows = read_catalog(bad_drop).rows
    assert rows.loc[rows["product_id"] == "BAD-empty_title", "title"].isna().all()


def _copy_drop(demo_drop, tmp_path):
    import shutil

    drop = tmp_path / "drop"
    shutil.copytree(demo_drop, drop)
    return drop


def test_a_semicolon_separated_spreadsheet_export_reads_like_the_comma_one(demo_drop, tmp_path):
    import pandas as pd

    drop = _copy_drop(demo_drop, tmp_path)
    original = pd.read_csv(drop / "catalog.csv", dtype=str)
    original.to_csv(drop / "catalog.csv", sep=";", index=False, encoding="utf-8-sig")  # Excel: BOM + semicolons
    rows = read_catalog(drop).rows
    assert list(rows.columns) == list(original.columns) and len(rows) == len(original)
    assert rows["title"].tolist() == original["title"].str.strip().tolist()


def test_a_windows_1252_catalog_is_refused_with_the_way_to_convert_it(demo_drop, tmp_path):
    drop = _copy_drop(demo_drop, tmp_path)
    text = (drop / "catalog.csv").read_text()
    lines = text.splitlines()
    lines[3] = lines[3].replace(",", ",Café ", 1)
    (drop / "catalog.csv").write_bytes("\n".join(lines).encode("cp1252"))
    with pytest.raises(CatalogError, match=r"not UTF-8 \(byte 0xe9 on line 4\).*CSV UTF-8.*iconv"):
        read_catalog(drop)


def test_the_delimiter_is_guessed_from_the_header_fields_not_from_characters_inside_quotes():
    from kickvision.data.catalog import guess_delimiter

    assert guess_delimiter('product_id,"title (brand;model;colour)",image,category\n1,a,b,c\n') == ","
    assert guess_delimiter('product_id;"title, long";image;category\n') == ";"
    assert guess_delimiter("product_id\timage\ttitle\tcategory\n") == "\t"
    assert guess_delimiter("product_id\n") == ","
