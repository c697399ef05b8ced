"""Fused vs image-only vs text-only on the embedded demo catalog: does fusion win?

Trains the demo config three times on the same split (same seed), changing only which branches
exist, and reports test top-1 / macro-F1 side by side. Prints a table, writes JSON.

    .venv/bin/python benchmarks/demo_modalities.py [--config demo] [--per-class 120] [--seeds 42]
"""

from __future__ import annotations

import argparse
import tempfile
import time
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

VARIANTS = {
    "fused (ResNet18 + ViT + DistilBERT)": {},
    "image only (ResNet18 + ViT)": {"text_encoder": None},
    "text only (DistilBERT)": {"image_encoders": []},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--out", help="JSON path (default benchmarks/results/demo_modalities.json)")
    args = parser.parse_args()

    cfg = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        drop = write_demo_catalog(Path(tmp) / "demo", n_per_class=args.per_class)
        catalog = quarantine_bad_rows(read_catalog(drop), cfg.validate_).catalog
        tokenizer = build_tokenizer(cfg.model.text_encoder)
        data = prepare_catalog(catalog, tokenizer, resolve_image_transform(cfg.model), cfg.data, cfg.seed)

    results = []
    for seed in args.seeds:
        for name, change in VARIANTS.items():
            model_cfg = cfg.model.model_copy(update=change)
            started = time.perf_counter()
            fitted = fit(data, model_cfg, cfg.train, tokenizer, cfg.data.max_title_tokens, seed=seed, progress=False)
            report = evaluate_bundle(fitted.bundle, data)
            results.append(
                {
                    "variant": name,
                    "seed": seed,
                    "test_top1": report.metrics["test_top1"],
                    "test_macro_f1": report.metrics["test_macro_f1"],
                    "train_seconds": time.perf_counter() - started,
                    "best_epoch": fitted.best_epoch,
                }
            )
            print(f"done: {name} seed {seed}: top-1 {report.metrics['test_top1']:.4f}", flush=True)

    print(f"\nDemo catalog: {len(data.rows)} products, {len(data.classes)} classes, split {data.split_counts()}")
    print(f"{'variant':<38} {'seed':>4} {'top-1':>7} {'macro-F1':>9} {'train s':>8}")
    for r in results:
        print(
            f"{r['variant']:<38} {r['seed']:>4} {r['test_top1']:>7.4f} "
            f"{r['test_macro_f1']:>9.4f} {r['train_seconds']:>8.1f}"
        )
    result = {"config": args.config, "per_class": args.per_class, "split": data.split_counts(), "results": results}
    print()
    write_result(result, args.out, "demo_modalities.json")


if __name__ == "__main__":
    main()
