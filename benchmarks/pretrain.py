"""Photo pretraining on the catalog's own photos: embedding quality and what it buys the photo model.

For each seed and each pretraining method (`--methods`, default the config's `pretrain.method`),
side by side in one run, with the config's image encoders:
- k-NN and linear-probe top-1 of each encoder's photo vectors (validation photos against training
  photos, on the catalog's labels): untrained, and after pretraining (the standard self-supervised
  evaluation), with the probe's L2 strength C (chosen on the training photos);
- an image-only model (the config's model without its text branch, the train section's recipe)
  trained from scratch and from the pretrained encoders: test top-1 and macro-F1, wall time
  (`--knn-only` skips these models: a cheap comparison of methods).
Prints a table and writes JSON.

    .venv/bin/python benchmarks/pretrain.py --catalog ../shared/data/fashion-footwear --config fashion \
        --set 'model.image_encoders=[{name: resnet18, pretrained: false}]' --set train.epochs=8
    .venv/bin/python benchmarks/pretrain.py --catalog ../shared/data/fashion-footwear --config fashion \
        --methods title_alignment,views,labels,title_alignment+views --knn-only
    .venv/bin/python benchmarks/pretrain.py                     # the demo catalog and config
"""

from __future__ import annotations

import json
import time

from common import benchmark_parser, image_only_scores, prepared_catalog, write_result

from kickvision.config import deep_merge, dotted_overrides, load_config
from kickvision.train.pretrain import pretrain_photos


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--skip-scratch", action="store_true", help="no from-scratch image-only model (compare recipes)"
    )
    parser.add_argument("--methods", help="comma-separated pretrain.method values (default: the config's)")
    parser.add_argument("--knn-only", action="store_true", help="no image-only models: the probes of each method only")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/pretrain_<catalog>_<config>.json)")
    args = parser.parse_args()
    overrides = deep_merge({"pretrain": {"enabled": True}}, dotted_overrides(args.set))
    cfg = load_config(args.config, overrides=overrides)
    data, tokenizer, name = prepared_catalog(args.catalog, cfg)
    print(f"{name}: {data.split_counts()}, {len(data.classes)} classes; pretrain {cfg.pretrain.model_dump()}")
    methods = args.methods.split(",") if args.methods else [cfg.pretrain.method]
    configs = {m: cfg.pretrain.model_copy(update={"method": m}) for m in methods}
    configs = {m: type(c).model_validate(c.model_dump()) for m, c in configs.items()}  # validated spellings
    rows = []
    for seed in args.seeds:
        scratch = {} if args.skip_scratch or args.knn_only else image_only_scores(data, cfg, tokenizer, seed, None)
        for pretrain_cfg in configs.values():
            started = time.perf_counter()
            encoders, metrics = pretrain_photos(data, cfg.model, pretrain_cfg, cfg.train, seed=seed, progress=False)
            pretrain_seconds = time.perf_counter() - started
            pretrained = {} if args.knn_only else image_only_scores(data, cfg, tokenizer, seed, encoders)
            row = {
                "seed": seed,
                "method": pretrain_cfg.method,
                "pretrain_seconds": pretrain_seconds,
                **metrics,
                **{f"image_only_scratch_{k}": v for k, v in scratch.items()},
                **{f"image_only_pretrained_{k}": v for k, v in pretrained.items()},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        f"\n{'seed':>5} {'method':<30} {'encoder':<28} {'k-NN scratch':>13} {'k-NN pretrained':>16} "
        f"{'probe scratch':>14} {'probe pretrained':>17} {'C':>6} {'s':>6}"
    )
    for row in rows:
        for key in [k for k in row if k.startswith("pretrain_knn_top1_") and not k.endswith("_scratch")]:
            encoder = key.removeprefix("pretrain_knn_top1_")
            probe = f"pretrain_probe_top1_{encoder}"
            print(
                f"{row['seed']:>5} {row['method']:<30} {encoder:<28} {row[key + '_scratch']:>13.4f} "
                f"{row[key]:>16.4f} {row[probe + '_scratch']:>14.4f} {row[probe]:>17.4f} "
                f"{row['pretrain_probe_c_' + encoder]:>6g} {row['pretrain_seconds']:>6.0f}"
            )
    print(f"\n{'seed':>5} {'image-only model':<30} {'top-1':>7} {'macro-F1':>9} {'best ep':>8} {'train s':>8}")
    for row in rows:
        for kind in ("scratch", "pretrained"):
            p = f"image_only_{kind}_"
            if p + "top1" not in row:
                continue
            label = "from scratch" if kind == "scratch" else f"from {row['method']}"
            print(
                f"{row['seed']:>5} {label:<30} {row[p + 'top1']:>7.4f} {row[p + 'macro_f1']:>9.4f} "
                f"{row[p + 'best_epoch']:>8} {row[p + 'seconds']:>8.0f}"
            )
        print(f"{row['seed']:>5} {'(pretraining)':<30} {'':>7} {'':>9} {'':>8} {row['pretrain_seconds']:>8.0f}")
    meta = {"catalog": name, "config": cfg.name, "overrides": args.set, "splits": data.split_counts()}
    print()
    write_result({"meta": meta, "rows": rows}, args.out, f"pretrain_{name}_{cfg.name}.json")


if __name__ == "__main__":
    main()
