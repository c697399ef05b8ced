"""Does the supervised contrastive loss help? Fused demo model, CE alone vs CE + w * SupCon.

.venv/bin/python benchmarks/contrastive_weight.py [--weights 0 0.1 0.2] [--seeds 42 7]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import write_result

from kickvision.config import load_config
from kickvision.data.catalog import read_catalog
from kickvision.data.demo import write_demo_catalog
from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import prepare_catalog
from kickvision.data.validation import quarantine_bad_rows
from kickvision.evaluate.metrics import evaluate_bundle
from kickvision.model.encoders import build_tokenizer
from kickvision.train.fit import fit

METRICS = ("test_top1", "test_macro_f1", "test_p_at_5", "test_map")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7])
    parser.add_argument("--out", help="JSON path (default benchmarks/results/contrastive_weight.json)")
    args = parser.parse_args()

    base = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = quarantine_bad_rows(read_catalog(write_demo_catalog(Path(tmp) / "demo")), base.validate_).catalog
        tokenizer = build_tokenizer(base.model.text_encoder)
        data = prepare_catalog(catalog, tokenizer, resolve_image_transform(base.model), base.data, base.seed)
    rows = []
    for weight in args.weights:
        cfg = load_config(args.config, overrides={"train": {"contrastive_weight": weight}})
        for seed in args.seeds:
            fitted = fit(data, cfg.model, cfg.train, tokenizer, cfg.data.max_title_tokens, seed=seed, progress=False)
            metrics = evaluate_bundle(fitted.bundle, data).metrics
            rows.append({"weight": weight, "seed": seed, **{m: metrics[m] for m in METRICS}})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'weight':>6} {'seed':>5}" + "".join(f"{m:>15}" for m in METRICS))
    for r in rows:
        print(f"{r['weight']:>6} {r['seed']:>5}" + "".join(f"{r[m]:>15.4f}" for m in METRICS))
    write_result({"config": args.config, "results": rows}, args.out, "contrastive_weight.json")


if __name__ == "__main__":
    main()
