"""`kickvision audit`: a catalog's products ranked by how much the model doubts their label."""

from __future__ import annotations

import argparse

from kickvision.cli.common import catalog_dir, loading, model_uri, output_path


def cmd_audit(args: argparse.Namespace) -> int:
    import pandas as pd

    from kickvision.config import load_config
    from kickvision.data.catalog import hash_drop
    from kickvision.evaluate.audit import audit_html, audit_summary
    from kickvision.review.service import audit_catalog
    from kickvision.serve.registry import load_registered_bundle

    out = output_path(args.out, "--out")
    page = output_path(args.html, "--html") if args.html else None
    cfg = load_config(args.config)
    uri = model_uri(args)
    folder = catalog_dir(args)
    hash_drop(folder)  # not a catalog drop: one error line before the model loads
    with loading(uri):
        bundle = load_registered_bundle(uri)
    result = audit_catalog(folder, bundle, cfg.validate_)
    audit = result.table
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
