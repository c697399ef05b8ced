"""`kickvision review`: the review desk (kickvision/review/) on a local web page."""

from __future__ import annotations

import argparse
from pathlib import Path

from kickvision.cli.common import loading, model_uri
from kickvision.errors import KickvisionError


def cmd_review(args: argparse.Namespace) -> int:
    from kickvision.config import load_config
    from kickvision.data.catalog import hash_drop
    from kickvision.review.app import LOOPBACK, serve
    from kickvision.review.service import ReviewDesk
    from kickvision.serve.registry import load_registered_bundle

    cfg = load_config(args.config)
    catalog = Path(args.catalog).resolve() if args.catalog else None
    if catalog is not None:
        hash_drop(catalog)  # not a catalog drop: one error line before the model loads
    drops = Path(args.drops) if args.drops else None
    if drops is not None and not drops.is_dir():
        raise KickvisionError(f"--drops {args.drops} is not a folder")
    uri = model_uri(args)
    with loading(uri):
        bundle = load_registered_bundle(uri)
    desk = ReviewDesk(bundle, uri, catalog, drops, cfg.validate_)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"review desk for {uri} on http://{shown}:{args.port}/  (Ctrl+C stops it)", flush=True)
    if args.host not in LOOPBACK:
        print(f"note: listening on {args.host}: anyone who can reach this port can read and relabel the catalog")
    serve(desk, args.host, args.port)
    return 0
