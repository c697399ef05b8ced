"""What every benchmark starts with: a validated, prepared catalog (a real one, or the demo)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from kickvision.config import RunConfig
from kickvision.data.catalog import read_catalog
from kickvision.data.demo import write_demo_catalog
from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import PreparedData, prepare_catalog
from kickvision.data.validation import quarantine_bad_rows
from kickvision.model.encoders import build_tokenizer


def prepared_catalog(catalog: str | None, cfg: RunConfig):
    """(prepared data, tokenizer, catalog name) for `catalog`, or for a freshly drawn demo catalog."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(catalog) if catalog else write_demo_catalog(Path(tmp) / "demo")
        rows = quarantine_bad_rows(read_catalog(source), cfg.validate_).catalog
        tokenizer = build_tokenizer(cfg.model.text_encoder)
        data: PreparedData = prepare_catalog(rows, tokenizer, resolve_image_transform(cfg.model), cfg.data, cfg.seed)
    return data, tokenizer, source.name if catalog else "demo"
