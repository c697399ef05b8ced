"""Text files users bring (catalogs, corrections): UTF-8, or one error saying how to convert them."""

from __future__ import annotations

from pathlib import Path

from kickvision.errors import CatalogError


def decode_utf8(path: Path) -> str:
    """The file's text as UTF-8 (a byte-order mark is dropped), or one CatalogError saying how to convert it."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CatalogError(
            f"{path} is not UTF-8 (byte 0x{raw[exc.start]:02x} on line {line}); spreadsheet exports are often "
            f"Windows-1252 or Latin-1: save it as 'CSV UTF-8', or convert it with "
            f"iconv -f WINDOWS-1252 -t UTF-8 {path.name} > utf8.csv"
        ) from None
