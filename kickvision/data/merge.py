"""One catalog from several: the base catalog and the drops after it, for a joint retrain.

`merge_catalogs(sources, out)` writes an ordinary catalog folder: the rows of every source in order,
a product listed again by a later source replaced by its later listing (a drop updates what the
catalog said); each image hard-linked (copied across file systems) to `<k>-<source name>/<its
path>` so names from different sources cannot collide; the reviewers' decisions of each source
(corrections.csv) carried for the products it contributes, so relabels and exclusions still hold.
An image path that names no file inside its source folder (missing, absolute, or leaving the
folder) is kept verbatim: in the merged folder it names nothing either (every photo there lies
under a `<k>-<name>/` prefix), so validation quarantines the row, as it would have in its source.
Duplicate ids within one catalog are kept as they are (validation quarantines them); only a later
catalog's listing replaces an earlier catalog's. The folder is rewritten from scratch each time.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kickvision.data.catalog import link_or_copy, read_catalog, resolve_inside, write_catalog
from kickvision.data.corrections import COLUMNS, CORRECTIONS_FILE, read_corrections
from kickvision.errors import CatalogError


@dataclass(frozen=True)
class MergeReport:
    folder: Path
    rows: int  # products in the merged catalog
    replaced: int  # listings replaced by a later source's listing of the same product
    images: int  # image files linked or copied (a photo two listings share: once)
    decisions: int  # reviewer decisions carried

    def summary(self) -> str:
        return (
            f"merged {self.rows} products into {self.folder} ({self.replaced} listed again by a later catalog: "
            f"the later listing kept; {self.decisions} reviewer decisions carried)"
        )


def merge_catalogs(sources: list[str | Path], out: str | Path) -> MergeReport:
    """Merge the catalog folders `sources` (oldest first) into the new folder `out` (see the module doc)."""
    roots = [Path(s).resolve() for s in sources]
    out = Path(out).resolve()
    if len(set(roots)) != len(roots):
        raise CatalogError("the same catalog folder is named twice")
    if any(out.is_relative_to(r) or r.is_relative_to(out) for r in roots):
        raise CatalogError(f"the merged catalog {out} cannot be written inside a catalog it reads, or around one")
    frames, decisions = [], []
    for k, root in enumerate(roots):
        rows = read_catalog(root, content_hash="-").rows.copy()  # relabels applied; decisions carried below too
        images = rows["image"].fillna("") if "image" in rows else pd.Series([""] * len(rows))
        files = [resolve_inside(root, path) if path else None for path in images]
        files = [f if f is not None and f.is_file() else None for f in files]
        # the file's own path inside its folder (normalised: no `..`), under the source's prefix
        rows["image"] = [
            f"{k}-{root.name}/{f.relative_to(root).as_posix()}" if f else (path or None)
            for f, path in zip(files, images, strict=True)
        ]
        rows["_source"], rows["_file"] = k, files
        frames.append(rows)
        decisions.append(read_corrections(root).assign(source=k))
    merged = pd.concat(frames, ignore_index=True)
    ids = merged["product_id"].fillna("").astype(str)
    latest = merged.groupby(ids)["_source"].transform("max")
    keep = (merged["_source"] == latest) | (ids == "")  # an id-less row stays: validation says why
    replaced = int((~keep).sum())
    merged = merged[keep].reset_index(drop=True)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    linked = 0
    for file, image in zip(merged["_file"], merged["image"], strict=True):
        if file is None or (out / image).exists():  # two listings, one photo: once
            continue
        target = (out / image).resolve()
        if not target.is_relative_to(out):
            raise CatalogError(f"{image}: would be written outside {out}")
        link_or_copy(file, target)
        linked += 1
    carried = 0
    kept = set(zip(merged["product_id"].astype(str), merged["_source"], strict=True))
    rows_out = [r for d in decisions for r in d.itertuples(index=False) if (r.product_id, r.source) in kept]
    if rows_out:
        with (out / CORRECTIONS_FILE).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for r in rows_out:
                writer.writerow([getattr(r, c) for c in COLUMNS])
                carried += 1
    write_catalog(merged.drop(columns=["_source", "_file"]), out)
    return MergeReport(out, len(merged), replaced, linked, carried)


def catalog_rows(folders: list[str | Path]) -> int | None:
    """Products listed by the catalogs `folders` together (their catalog.csv rows), None if one is gone."""
    total = 0
    for folder in folders:
        try:
            total += len(read_catalog(folder, content_hash="-").rows)
        except (CatalogError, OSError):  # gone, moved, unreadable: no estimate (it is advice only)
            return None
    return total
