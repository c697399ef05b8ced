"""Photo pretraining on the catalog's own photos: embedding quality and what it buys the photo model.

For each seed, side by side in one run, with the config's image encoders:
- k-NN top-1 of each encoder's photo vectors (validation photos against training photos, on the
  catalog's labels): untrained, and after `pretrain.method` (the standard self-supervised probe);
- an image-only model (the config's model without its text branch, the train section's recipe)
  trained from scratch and from the pretrained encoders: test top-1 and macro-F1, wall time.
Prints a table and writes JSON.

    .venv/bin/python benchmarks/pretrain.py --catalog ../shared/data/fashion-footwear --config fashion \
        --set 'model.image_encoders=[{name: resnet18, pretrained: false}]' --set train.epochs=8
    .venv/bin/python benchmarks/pretrain.py                     # the demo catalog and config
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import benchmark_parser, image_only_scores, prepared_catalog

from kickvision.config import deep_merge, dotted_overrides, load_config
from kickvision.train.pretrain import pretrain_photos


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--skip-scratch", action="store_true", help="no from-scratch image-only model (compare recipes)"
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/pretrain_<catalog>_<config>.json)")
    args = parser.parse_args()
    overrides = deep_merge({"pretrain": {"enabled": True}}, dotted_overrides(args.set))
    cfg = load_config(args.config, overrides=overrides)
    data, tokenizer, name = prepared_catalog(args.catalog, cfg)
    print(f"{name}: {data.split_counts()}, {len(data.classes)} classes; pretrain {cfg.pretrain.model_dump()}")
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        encoders, metrics = pretrain_photos(data, cfg.model, cfg.pretrain, cfg.train, seed=seed, progress=False)
        pretrain_seconds = time.perf_counter() - started
        scratch = {} if args.skip_scratch else image_only_scores(data, cfg, tokenizer, seed, None)
        pretrained = image_only_scores(data, cfg, tokenizer, seed, encoders)
        row = {
            "seed": seed,
            "pretrain_seconds": pretrain_seconds,
            **metrics,
            **{f"image_only_scratch_{k}": v for k, v in scratch.items()},
            **{f"image_only_pretrained_{k}": v for k, v in pretrained.items()},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'seed':>5} {'encoder':<28} {'k-NN scratch':>13} {'k-NN pretrained':>16}")
    for row in rows:
        for key in [k for k in row if k.startswith("pretrain_knn_top1_") and not k.endswith("_scratch")]:
            encoder = key.removeprefix("pretrain_knn_top1_")
            print(f"{row['seed']:>5} {encoder:<28} {row[key + '_scratch']:>13.4f} {row[key]:>16.4f}")
    print(f"\n{'seed':>5} {'image-only model':<18} {'top-1':>7} {'macro-F1':>9} {'best ep':>8} {'train s':>8}")
    for row in rows:
        for kind in ("scratch", "pretrained"):
            p = f"image_only_{kind}_"
            if p + "top1" not in row:
                continue
            print(
                f"{row['seed']:>5} {kind:<18} {row[p + 'top1']:>7.4f} {row[p + 'macro_f1']:>9.4f} "
                f"{row[p + 'best_epoch']:>8} {row[p + 'seconds']:>8.0f}"
            )
        print(f"{row['seed']:>5} {'(pretraining)':<18} {'':>7} {'':>9} {'':>8} {row['pretrain_seconds']:>8.0f}")
    out = Path(args.out or Path(__file__).parent / "results" / f"pretrain_{name}_{cfg.name}.json")
    meta = {"catalog": name, "config": cfg.name, "overrides": args.set, "splits": data.split_counts()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=float))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
