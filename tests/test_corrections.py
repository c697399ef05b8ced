"""Reviewer corrections: a decision log beside the catalog, applied on read, never rewriting the catalog."""

import shutil

import pandas as pd
import pytest

from kickvision.cli import main as cli_main
from kickvision.config import ValidateConfig
from kickvision.data.catalog import CATALOG_FILE, hash_drop, read_catalog
from kickvision.data.corrections import CORRECTIONS_FILE, append_correction, read_corrections
from kickvision.data.validation import quarantine_bad_rows
from kickvision.errors import CatalogError
from kickvision.evaluate.model_card import corrections_line


@pytest.fixture
def drop(demo_drop, tmp_path):
    return shutil.copytree(demo_drop, tmp_path / "drop")


def _ids(drop, n=3):
    rows = pd.read_csv(drop / CATALOG_FILE, dtype=str)
    return rows["product_id"].head(n).tolist(), rows


def test_relabel_exclude_and_confirm_apply_without_rewriting_the_catalog(drop):
    (a, b, c), rows = _ids(drop)
    before = (drop / CATALOG_FILE).read_bytes()
    other = next(x for x in rows["category"].unique() if x != rows.at[0, "category"])
    append_correction(drop, a, "relabel", other, note="photo shows it", reviewer="ana")
    append_correction(drop, b, "exclude", note="duplicate listing")
    append_correction(drop, c, "confirm")
    append_correction(drop, "NOT-IN-CATALOG", "confirm")

    catalog = read_catalog(drop)
    assert (drop / CATALOG_FILE).read_bytes() == before
    assert catalog.rows.set_index("product_id").at[a, "category"] == other
    assert catalog.corrections == {"relabelled": 1, "excluded": 1, "confirmed": 1, "unmatched": 1}

    result = quarantine_bad_rows(catalog, ValidateConfig(min_rows_per_class=1))
    assert b not in set(result.catalog.rows["product_id"])
    reason = result.quarantine.set_index("product_id").at[b, "reason"]
    assert reason == f"excluded in {CORRECTIONS_FILE}: duplicate listing"
    assert result.good_rows + len(result.quarantine) == result.total_rows == len(rows)  # nothing lost
    assert "reviewer corrections applied: 1 relabelled, 1 excluded, 1 confirmed, 1 unmatched" in result.summary()
    assert result.catalog.corrections == catalog.corrections  # carried to preprocessing and the model card


def test_the_last_decision_about_a_product_counts(drop):
    (a, _, _), rows = _ids(drop)
    original = rows.at[0, "category"]
    other = next(c for c in rows["category"].unique() if c != original)
    append_correction(drop, a, "relabel", other)
    assert read_catalog(drop).rows.set_index("product_id").at[a, "category"] == other
    append_correction(drop, a, "confirm")  # undoes the relabel
    assert read_catalog(drop).rows.set_index("product_id").at[a, "category"] == original
    assert read_corrections(drop).set_index("product_id").at[a, "action"] == "confirm"


def test_every_decision_changes_the_catalog_hash(drop):
    (a, _, _), _ = _ids(drop)
    first = hash_drop(drop)
    append_correction(drop, a, "confirm")
    second = hash_drop(drop)
    append_correction(drop, a, "exclude")
    assert len({first, second, hash_drop(drop)}) == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("P1,delete,,,,", "line 2: action 'delete' is not one of relabel, confirm, exclude"),
        ("P1,relabel,,,,", "line 2: a relabel needs the new category"),
        (",confirm,,,,", "line 2: no product_id"),
    ],
)
def test_a_malformed_decision_is_one_error_line_naming_it(drop, line, message, capsys):
    (drop / CORRECTIONS_FILE).write_text("product_id,action,category,note,reviewer,decided_at\n" + line + "\n")
    with pytest.raises(CatalogError, match=message):
        read_catalog(drop)
    assert cli_main(["validate", "--catalog", str(drop)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_append_refuses_a_malformed_decision_and_writes_nothing(drop):
    with pytest.raises(CatalogError, match="relabel needs the new category"):
        append_correction(drop, "P1", "relabel", "")
    with pytest.raises(CatalogError, match="over 2000 characters"):
        append_correction(drop, "P1", "confirm", note="x" * 2001)
    assert not (drop / CORRECTIONS_FILE).exists()


def test_a_note_with_commas_quotes_and_newlines_stays_one_decision(drop):
    (a, _, _), _ = _ids(drop)
    append_correction(drop, a, "exclude", note='says "flat",\nshows a heel')
    decisions = read_corrections(drop)
    assert len(decisions) == 1 and decisions.at[0, "note"] == 'says "flat", shows a heel'


def test_an_append_waits_for_another_reviewers_lock(drop):
    import fcntl
    import subprocess
    import sys
    import time

    (a, _, _), _ = _ids(drop)
    append_correction(drop, a, "confirm")
    code = f"from kickvision.data.corrections import append_correction as f; f({str(drop)!r}, {a!r}, 'exclude')"
    with (drop / CORRECTIONS_FILE).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another reviewer is mid-write
        writer = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(3)
        assert writer.poll() is None  # still waiting for the lock
        fcntl.flock(held, fcntl.LOCK_UN)
    assert writer.wait(30) == 0
    assert read_corrections(drop).set_index("product_id").at[a, "action"] == "exclude"


def test_a_hand_edited_file_without_a_final_newline_keeps_both_decisions(drop):
    (a, b, _), _ = _ids(drop)
    (drop / CORRECTIONS_FILE).write_text(f"product_id,action,category,note,reviewer,decided_at\n{a},exclude,,,ana,x")
    append_correction(drop, b, "confirm")
    decisions = read_corrections(drop).set_index("product_id")["action"]
    assert decisions[a] == "exclude" and decisions[b] == "confirm"


def test_two_decisions_glued_on_one_line_are_an_error_not_a_lost_decision(drop, capsys):
    (drop / CORRECTIONS_FILE).write_text(
        "product_id,action,category,note,reviewer,decided_at\nP1,exclude,,,ana,2026-01-01P2,confirm,,,ana,x\n"
    )
    with pytest.raises(CatalogError, match="line 2: 11 fields where the header has 6"):
        read_corrections(drop)


def test_append_refuses_a_file_with_other_columns(drop):
    (drop / CORRECTIONS_FILE).write_text("product_id,action\nP1,confirm\n")
    with pytest.raises(CatalogError, match="not appending"):
        append_correction(drop, "P2", "confirm")
    assert read_corrections(drop)["product_id"].tolist() == ["P1"]  # (a short file is still read)


def test_a_product_id_with_inner_spaces_is_kept_verbatim(drop):
    rows = pd.read_csv(drop / CATALOG_FILE, dtype=str)
    rows.loc[0, "product_id"] = "C  D"
    rows.to_csv(drop / CATALOG_FILE, index=False)
    append_correction(drop, "C  D", "exclude")
    assert read_catalog(drop).exclusions == {"C  D": f"excluded in {CORRECTIONS_FILE}"}


def test_the_model_card_counts_the_decisions():
    assert corrections_line({}).startswith("No reviewer corrections")
    line = corrections_line({"relabelled": 3, "excluded": 1, "confirmed": 0, "unmatched": 2})
    assert "3 relabelled, 1 excluded, 0 confirmed" in line and "2 named products" in line
