"""Importers: other catalog layouts -> the generic drop format (catalog.csv + images/).

- `fashion-product`: Kaggle "Fashion Product Images" (`styles.csv` + `images/<id>.jpg`);
  label = articleType, title = productDisplayName, optional masterCategory filter.
- `ut-zappos`: UT-Zappos50K (a meta-data CSV with CID, Category, SubCategory and attribute columns,
  plus an image tree `<Category>/<SubCategory>/<Brand>/<CID>.jpg`); label = Category or SubCategory,
  title composed from the attribute columns (and the brand folder).

Nothing is dropped silently: CSV lines that cannot be parsed go to `import_rejects.csv` in the
output drop with a reason, and rows whose image is missing stay in the catalog so validation
quarantines them with its own reason. Images are hard-linked when possible, copied otherwise.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from kickvision.data.catalog import CATALOG_FILE, link_or_copy, read_catalog, resolve_inside, write_catalog
from kickvision.errors import CatalogError

FORMATS = ("generic", "fashion-product", "ut-zappos")
REJECTS_FILE = "import_rejects.csv"


def _place_image(source: Path | None, out: Path, relative: str) -> None:
    if source is None or not source.is_file():
        return  # the row stays; validation reports the missing file
    link_or_copy(source, out / relative)


MAX_LINE_CHARS = 100_000  # a product line longer than this is a reject, not a crash (csv's field limit is 131,072)


def _bounded_lines(lines, rejects: list[dict]):
    """The physical lines of a CSV file, with overlong ones replaced by an empty line and rejected."""
    for line_no, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_CHARS:
            rejects.append(
                {"line": line_no, "content": line[:200] + "...", "reason": f"line of {len(line):,} characters"}
            )
            yield "\n"
        else:
            yield line


def _read_csv_keeping_rejects(path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Read a CSV as strings; lines with the wrong number of fields are returned as rejects."""
    rejects: list[dict] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(_bounded_lines(fh, rejects))
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise CatalogError(f"{path} is empty") from None
        rows = []
        try:
            for fields in reader:
                if len(fields) == len(header):
                    rows.append([f.strip() for f in fields])
                elif fields:
                    rejects.append(
                        {
                            "line": reader.line_num,
                            "content": ",".join(fields),
                            "reason": f"{len(fields)} fields where the header has {len(header)}",
                        }
                    )
        except csv.Error as exc:  # e.g. a quote left open across many lines
            raise CatalogError(f"{path}: line {reader.line_num}: {exc}") from None
    return pd.DataFrame(rows, columns=header), rejects


def import_fashion_product(src: Path, out: Path, master_category: str | None = None) -> tuple[pd.DataFrame, list[dict]]:
    styles, rejects = _read_csv_keeping_rejects(src / "styles.csv")
    required = {"id", "articleType", "productDisplayName"}
    if missing := required - set(styles.columns):
        raise CatalogError(f"{src / 'styles.csv'} lacks column(s) {', '.join(sorted(missing))}")
    if master_category:
        if "masterCategory" not in styles:
            raise CatalogError(f"{src / 'styles.csv'} has no masterCategory column to filter on")
        styles = styles[styles["masterCategory"] == master_category]
    rows = pd.DataFrame(
        {
            "product_id": styles["id"],
            "image": [f"images/{i}.jpg" for i in styles["id"]],
            "title": styles["productDisplayName"],
            "category": styles["articleType"],
        }
    )
    renames = {
        "gender": "gender",
        "masterCategory": "master_category",
        "subCategory": "sub_category",
        "baseColour": "base_colour",
        "season": "season",
        "year": "year",
        "usage": "usage",
    }
    for column, name in renames.items():
        if column in styles:
            rows[name] = styles[column].to_numpy()
    for product_id, relative in zip(rows["product_id"], rows["image"], strict=True):
        _place_image(resolve_inside(src, f"images/{product_id}.jpg"), out, relative)
    return rows, rejects


def import_ut_zappos(src: Path, out: Path, label: str = "Category") -> tuple[pd.DataFrame, list[dict]]:
    candidates = sorted(src.rglob("meta-data.csv")) or sorted(src.rglob("meta*.csv"))
    if not candidates:
        raise CatalogError(f"{src} has no UT-Zappos meta-data CSV (meta-data.csv)")
    meta, rejects = _read_csv_keeping_rejects(candidates[0])
    if "CID" not in meta or label not in meta:
        raise CatalogError(f"{candidates[0]} lacks the CID or {label} column")
    # CIDs appear as 7965307-5291 in the CSV and 7965307.5291.jpg on disk: match on a common key.
    images = {p.stem.replace(".", "-"): p for p in src.rglob("*.jpg")}
    attributes = [c for c in meta.columns if c not in ("CID", "Category", "SubCategory")]
    titles, brands = [], []
    for _, row in meta.iterrows():
        path = images.get(row["CID"].replace(".", "-"))
        brand = path.parent.name if path is not None else ""
        words = [brand] + [row[c] for c in attributes if row[c] and row[c].lower() not in ("nan", "none")]
        words.append(row.get("SubCategory", "") if label == "Category" else row.get("Category", ""))
        titles.append(" ".join(w for w in words if w))
        brands.append(brand)
    rows = pd.DataFrame(
        {
            "product_id": meta["CID"],
            "image": [f"images/{cid}.jpg" for cid in meta["CID"]],
            "title": titles,
            "category": meta[label],
            "brand": brands,
        }
    )
    for cid, relative in zip(meta["CID"], rows["image"], strict=True):
        _place_image(images.get(cid.replace(".", "-")), out, relative)
    return rows, rejects


def import_catalog(fmt: str, src: str | Path, out: str | Path, **options) -> Path:
    """Write the catalog at `src` (in layout `fmt`) as a generic drop at `out`; returns `out`."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if fmt not in FORMATS:
        raise CatalogError(f"unknown catalog format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if not src.is_dir():
        raise CatalogError(f"catalog source {src} is not a folder")
    if out == src:
        raise CatalogError("--out must differ from --src")
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "generic":
        catalog = read_catalog(src)
        rows, rejects = catalog.rows, []
        for relative in rows["image"].dropna():
            _place_image(resolve_inside(src, relative), out, relative)
    elif fmt == "fashion-product":
        rows, rejects = import_fashion_product(src, out, options.get("master_category"))
    else:
        rows, rejects = import_ut_zappos(src, out, options.get("label") or "Category")
    write_catalog(rows, out)
    if rejects:
        pd.DataFrame(rejects).to_csv(out / REJECTS_FILE, index=False)
    return out


def catalog_dir_for(fmt: str, src: str | Path, workdir: str | Path, **options) -> Path:
    """A generic drop for `src`: itself when already generic, else an imported copy under `workdir`."""
    if fmt == "generic":
        if not (Path(src) / CATALOG_FILE).is_file():
            raise CatalogError(f"{src} is not a catalog drop: it has no {CATALOG_FILE}")
        return Path(src)
    return import_catalog(fmt, src, Path(workdir) / f"{Path(src).name}-{fmt}", **options)
