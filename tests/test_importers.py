"""Importers: fixtures in each foreign layout, built here, including their bad rows."""

import pandas as pd
import pytest
from PIL import Image

from kickvision.cli import main as cli_main
from kickvision.config import ValidateConfig
from kickvision.data.catalog import read_catalog
from kickvision.data.importers import REJECTS_FILE, import_catalog
from kickvision.data.validation import quarantine_bad_rows
from kickvision.errors import CatalogError


def _jpg(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (30, 40), colour).save(path)


@pytest.fixture
def fashion_product_src(tmp_path):
    src = tmp_path / "kaggle"
    lines = [
        "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName",
        "1,Men,Footwear,Shoes,Casual Shoes,Black,Fall,2011,Casual,Puma Men Black Casual Shoes",
        "2,Women,Footwear,Shoes,Heels,Red,Summer,2012,Casual,Catwalk Women Red Heels",
        "3,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,Nike Men Blue T-shirt",
        "4,Women,Footwear,Sandal,Flats,Pink,Summer,2012,Casual,Bare Women Pink, Flats with bow",  # unquoted comma
        "5,Men,Footwear,Shoes,Sports Shoes,White,Fall,2011,Sports,Adidas Men White Running Shoes",  # no image
    ]
    src.mkdir()
    (src / "styles.csv").write_text("\n".join(lines) + "\n")
    for i in (1, 2, 3, 4):
        _jpg(src / "images" / f"{i}.jpg")
    return src


def test_fashion_product_import_filters_and_keeps_every_row_accounted_for(fashion_product_src, tmp_path):
    out = import_catalog("fashion-product", fashion_product_src, tmp_path / "drop", master_category="Footwear")
    rows = pd.read_csv(out / "catalog.csv", dtype=str)
    assert rows["product_id"].tolist() == ["1", "2", "5"]
    assert rows.set_index("product_id").loc["2", "category"] == "Heels"
    assert rows.set_index("product_id").loc["1", "title"] == "Puma Men Black Casual Shoes"
    assert "base_colour" in rows
    rejects = pd.read_csv(out / REJECTS_FILE)
    assert rejects["line"].tolist() == [5] and "fields" in rejects.at[0, "reason"]
    # the product without a photo is kept and then quarantined by validation, with a reason
    result = quarantine_bad_rows(read_catalog(out), ValidateConfig(min_rows_per_class=1))
    assert result.quarantine.set_index("product_id").loc["5", "reason"].startswith("image file not found")


@pytest.fixture
def ut_zappos_src(tmp_path):
    src = tmp_path / "zappos"
    meta = pd.DataFrame(
        {
            "CID": ["100-1", "100-2", "200-7", "300-9"],
            "Category": ["Shoes", "Boots", "Sandals", "Shoes"],
            "SubCategory": ["Oxfords", "Ankle", "Flat", "Sneakers and Athletic Shoes"],
            "HeelHeight": ["", "High heel", "", ""],
            "Closure": ["Lace up", "Zipper", "Buckle", "Lace up"],
            "Gender": ["Men", "Women", "Women", "Men"],
        }
    )
    (src / "ut-zap50k-data").mkdir(parents=True)
    meta.to_csv(src / "ut-zap50k-data" / "meta-data.csv", index=False)
    _jpg(src / "ut-zap50k-images" / "Shoes" / "Oxfords" / "Florsheim" / "100.1.jpg")
    _jpg(src / "ut-zap50k-images" / "Boots" / "Ankle" / "Frye" / "100.2.jpg")
    _jpg(src / "ut-zap50k-images" / "Sandals" / "Flat" / "Teva" / "200.7.jpg")
    return src  # 300-9 has no image


def test_ut_zappos_import_composes_titles_and_finds_images(ut_zappos_src, tmp_path):
    out = import_catalog("ut-zappos", ut_zappos_src, tmp_path / "drop")
    rows = pd.read_csv(out / "catalog.csv", dtype=str, keep_default_na=False).set_index("product_id")
    assert rows.loc["100-2", "category"] == "Boots"
    assert rows.loc["100-2", "title"] == "Frye High heel Zipper Women Ankle"
    assert (out / rows.loc["100-1", "image"]).is_file()
    assert not (out / rows.loc["300-9", "image"]).exists()
    sub = import_catalog("ut-zappos", ut_zappos_src, tmp_path / "sub", label="SubCategory")
    assert set(pd.read_csv(sub / "catalog.csv")["category"]) >= {"Oxfords", "Ankle"}


def test_import_errors_are_clear(tmp_path):
    with pytest.raises(CatalogError, match="unknown catalog format"):
        import_catalog("csv", tmp_path, tmp_path / "out")
    with pytest.raises(CatalogError, match="meta-data"):
        import_catalog("ut-zappos", tmp_path, tmp_path / "out")


def test_cli_import_and_validate_with_format(fashion_product_src, tmp_path, capsys):
    out = tmp_path / "drop"
    args = ["import", "--format", "fashion-product", "--src", str(fashion_product_src), "--out", str(out)]
    assert cli_main([*args, "--master-category", "Footwear"]) == 0
    assert "3 products" in capsys.readouterr().out
    small = tmp_path / "small.yaml"  # five products: usable only when the config says so
    small.write_text("validate:\n  min_good_rows: 1\n  min_good_fraction: 0.1\n  min_rows_per_class: 1\n")
    validate = ["validate", "--catalog", str(fashion_product_src), "--format", "fashion-product"]
    assert cli_main([*validate, "--config", str(small)]) == 0
    assert "rows passed validation" in capsys.readouterr().out
    assert cli_main(validate) == 2  # the demo config needs 100 good rows
    assert "unusable" in capsys.readouterr().err


def test_a_line_longer_than_csv_allows_is_a_reject_and_the_import_goes_on(fashion_product_src, tmp_path):
    styles = fashion_product_src / "styles.csv"
    lines = styles.read_text().splitlines()
    lines.insert(2, "9,Men,Footwear,Shoes,Casual Shoes,Black,Fall,2011,Casual," + "very long name " * 20_000)
    styles.write_text("\n".join(lines) + "\n")
    out = import_catalog("fashion-product", fashion_product_src, tmp_path / "drop", master_category="Footwear")
    assert pd.read_csv(out / "catalog.csv", dtype=str)["product_id"].tolist() == ["1", "2", "5"]
    rejects = pd.read_csv(out / "import_rejects.csv", dtype=str)
    long = rejects[rejects["reason"].str.contains("characters")]
    assert long["line"].tolist() == ["3"] and long["content"].str.len().max() < 300
