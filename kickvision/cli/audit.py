"""`kickvision audit`: a catalog's products ranked by how much the model doubts their label."""

from __future__ import annotations

import argparse

from kickvision.cli.commands import _catalog_dir, _loading, _model_uri, _output_path
from kickvision.errors import KickvisionError


def cmd_audit(args: argparse.Namespace) -> int:
    import pandas as pd

    from kickvision.config import load_config
    from kickvision.data.catalog import read_catalog, resolve_inside
    from kickvision.data.corrections import read_corrections
    from kickvision.data.validation import quarantine_bad_rows
    from kickvision.evaluate.audit import audit_html, audit_products, audit_summary
    from kickvision.serve.predictor import ShoePredictor
    from kickvision.serve.registry import load_registered_bundle

    out = _output_path(args.out, "--out")
    page = _output_path(args.html, "--html") if args.html else None
    cfg = load_config(args.config)
    uri = _model_uri(args)
    catalog = read_catalog(_catalog_dir(args))
    with _loading(uri):
        bundle = load_registered_bundle(uri)
    result = quarantine_bad_rows(catalog, cfg.validate_, known_categories=list(bundle.classes))
    rows = result.catalog.rows.reset_index(drop=True)
    if rows.empty:
        raise KickvisionError(f"no product of {catalog.root} passed validation: nothing to audit (kickvision validate)")
    rows["image"] = [str(resolve_inside(catalog.root, p)) for p in rows["image"]]  # validated: inside the root
    decisions = read_corrections(catalog.root).set_index("product_id")["action"]
    rows["reviewed"] = rows["product_id"].map(decisions).fillna("")  # relabels are already applied
    frame = rows.reindex(columns=["image", "title", *bundle.text_columns])
    predictor = ShoePredictor(bundle, max_pixels=cfg.validate_.max_image_pixels)  # validation's own bound
    audit = audit_products(rows, predictor.model_views(frame))
    quarantined = result.quarantine.reindex(columns=["product_id", "category", "title", "reason"])
    quarantined = quarantined.assign(issue="quarantined: " + quarantined.pop("reason").astype(str))
    table = pd.concat([audit, quarantined], ignore_index=True)  # every catalog row: audited or quarantined
    table.to_csv(out, index=False)
    print(audit_summary(audit))
    print(f"{len(audit)} audited + {len(quarantined)} quarantined rows, most doubted first: {out}")
    if page:
        page.write_text(audit_html(audit), encoding="utf-8")
        print(f"page: {page}")
    return 0
