"""Catalog drops: the generic on-disk format, its reader, content hashing and path safety.

A drop is a folder with `catalog.csv` (columns `product_id, image, title, category` plus optional
attribute columns) and the images it names by paths relative to the folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kickvision.data.textfile import decode_utf8
from kickvision.errors import CatalogError

CATALOG_FILE = "catalog.csv"
REQUIRED_COLUMNS = ("product_id", "image", "title", "category")


@dataclass
class Catalog:
    """A catalog drop read into memory: one row per product, every cell a string or missing."""

    root: Path
    rows: pd.DataFrame
    content_hash: str
    # Reviewer decisions (data/corrections.py), already applied to `rows`' categories: the rows to
    # quarantine with their reasons, and how many decisions of each kind matched.
    exclusions: dict[str, str] = field(default_factory=dict)
    corrections: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.name


def resolve_inside(root: Path, relative: str) -> Path | None:
    """The file `relative` names inside `root`, or None when it would escape the drop folder.

    Absolute paths, `..` segments and symlinks that lead outside all count as escaping.
    """
    if not relative or Path(relative).is_absolute() or relative.startswith(("/", "\\")):
        return None
    root = root.resolve()
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root) else None


def link_or_copy(source: Path, target: Path) -> None:
    """Place the file `source` at `target` (folders made, an existing file replaced): a hard link,
    or a copy where links are not possible (another file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def hash_drop(drop_dir: str | Path) -> str:
    """SHA-256 over every file of the drop (relative path + bytes): unchanged drop -> same hash."""
    root = Path(drop_dir).resolve()
    if not (root / CATALOG_FILE).is_file():
        raise CatalogError(f"{root} is not a catalog drop: it has no {CATALOG_FILE}")
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if resolve_inside(root, str(path.relative_to(root))) is None or not path.is_file():
                continue  # a symlink leading out of the drop is not part of it
            digest.update(str(path.relative_to(root)).encode())
            digest.update(b"\0")
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def guess_delimiter(text: str) -> str:
    """`,` unless the header line splits into more columns on `;` or a tab (spreadsheet exports in
    locales with a decimal comma write semicolons)."""
    header = text.split("\n", 1)[0]
    fields = {d: len(next(csv.reader([header], delimiter=d), [])) for d in (",", ";", "\t")}  # quotes respected
    return max(fields, key=lambda d: (fields[d], d == ","))


def read_catalog(drop_dir: str | Path, content_hash: str | None = None) -> Catalog:
    """Read a generic catalog drop; every cell stays a string, empty cells become missing.

    Column problems are left to validation (which quarantines rows with reasons); only a
    missing or unparseable `catalog.csv` is an error here. Semicolon- or tab-separated exports are
    read as such; text that is not UTF-8 is refused with the way to convert it. A reviewer's
    `corrections.csv` beside it is applied (relabels here, exclusions by validation).
    """
    from kickvision.data.corrections import apply_corrections, read_corrections

    root = Path(drop_dir).resolve()
    csv_path = root / CATALOG_FILE
    if not csv_path.is_file():
        raise CatalogError(f"{root} is not a catalog drop: it has no {CATALOG_FILE}")
    text = decode_utf8(csv_path)
    try:
        rows = pd.read_csv(io.StringIO(text), sep=guess_delimiter(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CatalogError(f"{csv_path} cannot be read as a CSV: {exc}") from None
    rows.columns = [str(c).strip() for c in rows.columns]
    rows = rows.apply(lambda col: col.str.strip()).replace("", None)
    rows, exclusions, counts = apply_corrections(rows, read_corrections(root))
    return Catalog(
        root=root,
        rows=rows.reset_index(drop=True),
        content_hash=content_hash or hash_drop(root),
        exclusions=exclusions,
        corrections=counts,
    )


def write_catalog(rows: pd.DataFrame, drop_dir: str | Path) -> Path:
    """Write `rows` as the drop's catalog.csv (images must already be in place)."""
    drop = Path(drop_dir)
    drop.mkdir(parents=True, exist_ok=True)
    rows.to_csv(drop / CATALOG_FILE, index=False)
    return drop / CATALOG_FILE
