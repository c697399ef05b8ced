"""Reviewer corrections: decisions about a catalog's labels, kept as data beside the catalog.

A drop folder may hold `corrections.csv` next to `catalog.csv`, one decision per line:

    product_id,action,category,note,reviewer,decided_at
    P0042,relabel,Heels,"title says flats, photo shows a heel",ana,2026-11-30T12:00:00+00:00
    P0107,exclude,,duplicate listing of P0106,ana,2026-11-30T12:01:00+00:00
    P0200,confirm,,,ana,2026-11-30T12:02:00+00:00

`relabel` replaces the row's category (`category` names the new one), `exclude` quarantines the row
with the reviewer's note as its reason, `confirm` keeps the label and tells the audit it was checked.
The file is an append-only log: the last decision about a product is the one that counts, so an
earlier one is undone by appending another. Nothing in `catalog.csv` is rewritten. The file lies
inside the drop, so the drop's content hash (data/catalog.py `hash_drop`) changes with every
decision and a retrain on corrected labels is never a cache hit on the old ones.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from kickvision.data.textfile import decode_utf8
from kickvision.errors import CatalogError

CORRECTIONS_FILE = "corrections.csv"
COLUMNS = ("product_id", "action", "category", "note", "reviewer", "decided_at")
ACTIONS = ("relabel", "confirm", "exclude")
MAX_FIELD_CHARS = 2000


def empty_corrections() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})


def read_corrections(drop_dir: str | Path) -> pd.DataFrame:
    """The decision that counts for each product (the last one in the file), or an empty frame.

    A malformed line (unknown action, a relabel without a category, no product id, more or fewer
    fields than the header, e.g. two decisions glued on one line) is a CatalogError naming the
    file and the line: a corrupt decision log must not train silently.
    """
    path = Path(drop_dir) / CORRECTIONS_FILE
    if not path.is_file():
        return empty_corrections()
    lines = list(csv.reader(io.StringIO(decode_utf8(path))))
    lines = [(number, row) for number, row in enumerate(lines, start=1) if any(cell.strip() for cell in row)]
    if not lines:
        return empty_corrections()
    (_, header), records = lines[0], lines[1:]
    header = [cell.strip() for cell in header]
    missing = [c for c in ("product_id", "action") if c not in header]
    if missing:
        raise CatalogError(f"{path} has no '{missing[0]}' column (expected: {', '.join(COLUMNS)})")
    for number, row in records:
        if len(row) != len(header):
            raise CatalogError(
                f"{path} line {number}: {len(row)} fields where the header has {len(header)} "
                "(each decision on its own line)"
            )
    rows = pd.DataFrame([row for _, row in records], columns=header, dtype=str)
    rows = rows.reindex(columns=COLUMNS).fillna("").apply(lambda col: col.astype(str).str.strip())
    for (number, _), row in zip(records, rows.itertuples(index=False), strict=True):
        problem = correction_problem(row.product_id, row.action, row.category)
        if problem:
            raise CatalogError(f"{path} line {number}: {problem}")
    return rows.drop_duplicates("product_id", keep="last").reset_index(drop=True)


def correction_problem(product_id: str, action: str, category: str) -> str | None:
    """Why a decision is malformed, or None."""
    if not product_id:
        return "no product_id"
    if action not in ACTIONS:
        return f"action '{action}' is not one of {', '.join(ACTIONS)}"
    if action == "relabel" and not category:
        return "a relabel needs the new category"
    return None


def apply_corrections(rows: pd.DataFrame, corrections: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], dict]:
    """(rows with relabels applied, {product_id: exclusion reason}, counts).

    Counts: `relabelled`, `excluded`, `confirmed` (decisions that matched a product of the catalog)
    and `unmatched` (decisions about product ids the catalog does not hold, e.g. since removed).
    """
    counts = {"relabelled": 0, "excluded": 0, "confirmed": 0, "unmatched": 0}
    if corrections.empty or "product_id" not in rows:
        counts["unmatched"] = len(corrections)
        return rows, {}, counts
    present = set(rows["product_id"].dropna())
    rows = rows.copy()
    exclusions: dict[str, str] = {}
    for c in corrections.itertuples(index=False):
        if c.product_id not in present:
            counts["unmatched"] += 1
            continue
        if c.action == "relabel":
            if "category" not in rows:  # validation quarantines every row for the missing column
                continue
            rows.loc[rows["product_id"] == c.product_id, "category"] = c.category
            counts["relabelled"] += 1
        elif c.action == "exclude":
            by = f" by {c.reviewer}" if c.reviewer else ""
            exclusions[c.product_id] = f"excluded{by} in {CORRECTIONS_FILE}" + (f": {c.note}" if c.note else "")
            counts["excluded"] += 1
        else:
            counts["confirmed"] += 1
    return rows, exclusions, counts


def append_correction(
    drop_dir: str | Path, product_id: str, action: str, category: str = "", note: str = "", reviewer: str = ""
) -> dict[str, str]:
    """Append one decision to the drop's corrections file (created with its header) and return it.

    The append holds an exclusive lock and is fsynced, so concurrent reviewers never interleave
    lines and an acknowledged decision survives a crash. A hand-edited file is respected: a missing
    final newline is added first; a file with other columns is refused rather than extended.
    """
    fields = {"product_id": str(product_id or "").strip()}  # verbatim: it must match the catalog's id
    for key, value in (("action", action), ("category", category), ("note", note), ("reviewer", reviewer)):
        fields[key] = " ".join(str(value or "").split())  # one line per decision
    for key, value in fields.items():
        if len(value) > MAX_FIELD_CHARS:
            raise CatalogError(f"correction field '{key}' is over {MAX_FIELD_CHARS} characters")
    if fields["action"] != "relabel":
        fields["category"] = ""
    problem = correction_problem(fields["product_id"], fields["action"], fields["category"])
    if problem:
        raise CatalogError(f"correction for '{product_id}': {problem}")
    record = {**fields, "decided_at": datetime.now(UTC).isoformat(timespec="seconds")}
    line = io.StringIO()
    csv.DictWriter(line, fieldnames=COLUMNS, lineterminator="\n").writerow(record)
    path = Path(drop_dir) / CORRECTIONS_FILE
    with path.open("a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            header = fh.readline()
            end = fh.seek(0, os.SEEK_END)
            out = b""
            if end == 0:
                out += (",".join(COLUMNS) + "\n").encode()
            else:
                found = next(csv.reader([header.decode("utf-8-sig", "replace")]), [])
                if [c.strip() for c in found] != list(COLUMNS):
                    raise CatalogError(f"{path} has the columns {found}, not {list(COLUMNS)}: not appending to it")
                fh.seek(end - 1)
                if fh.read(1) != b"\n":
                    out += b"\n"
            fh.seek(0, os.SEEK_END)
            fh.write(out + line.getvalue().encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return record
