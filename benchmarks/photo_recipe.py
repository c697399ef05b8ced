"""Which photo recipe: input shape and augmentation, side by side on an image-only model.

Catalog photos are 60x80 portraits: a square input letterboxes them (a quarter of the pixels are
padding), a [height, width] input keeps their shape. Then the training recipe on that input: a
moving average of the weights, mixup, CutMix. Each recipe below is a set of config overrides
on top of `--config` (and `--set`); each trains the config's model without its text branch with the
train section's recipe, on one group split, for every seed; prints test top-1, macro-F1, the kept
epoch and wall time, and top-1 with flip test-time averaging (each test photo and its mirror image), and
writes JSON.

    .venv/bin/python benchmarks/photo_recipe.py --catalog ../shared/data/fashion-footwear --config fashion \
        --set 'model.image_encoders=[{name: resnet18, pretrained: false}]' --set train.epochs=12
    .venv/bin/python benchmarks/photo_recipe.py --recipes square,portrait      # the demo catalog
"""

from __future__ import annotations

import json

import numpy as np
from common import benchmark_parser, image_only_scores, prepared_catalog, write_result

from kickvision.config import deep_merge, dotted_overrides, load_config

PORTRAIT = {"model": {"image_size": [80, 64]}}
RECIPES: dict[str, dict] = {
    "square": {"model": {"image_size": 64}},  # 64x64 letterbox, flips only
    "portrait": PORTRAIT,  # 80x64: the 60x80 photos nearly fill it
    "portrait+crop": deep_merge(PORTRAIT, {"train": {"crop_scale": 0.8, "shift": 0.06}}),
    "portrait+crop+colour": deep_merge(PORTRAIT, {"train": {"crop_scale": 0.8, "shift": 0.06, "color_jitter": 0.15}}),
    # Finer feature maps, ResNet18 only (the recipe names the encoder): at 80x64 its last stage sees 3x2 positions;
    # output stride 16 (a dilated last stage) keeps 5x4, twice the input keeps everything twice as fine (4x the work)
    "portrait+os16": deep_merge(
        PORTRAIT,
        {"model": {"image_encoders": [{"name": "resnet18", "pretrained": False, "overrides": {"output_stride": 16}}]}},
    ),
    "portrait x2": {"model": {"image_size": [160, 128]}},
    # the training recipe (train/augment.py PhotoMix, the engine's weight average): a moving average of the
    # weights (ceiling 0.995; timm's warm-up keeps the decay below it: ~0.99, a time constant of ~100 steps or
    # 1.3 epochs of 5,044 photos, by the end of 12 epochs), mixup, CutMix, and CutMix over twice the epochs
    "portrait+ema": deep_merge(PORTRAIT, {"train": {"ema_decay": 0.995}}),
    "portrait+mixup": deep_merge(PORTRAIT, {"train": {"mixup_alpha": 0.2}}),
    "portrait+cutmix": deep_merge(PORTRAIT, {"train": {"cutmix_alpha": 1.0}}),
    "portrait+cutmix+ema x2 epochs": deep_merge(
        PORTRAIT, {"train": {"cutmix_alpha": 1.0, "ema_decay": 0.995, "epochs": 24, "patience": 24}}
    ),
}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated subset of {list(RECIPES)}")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/photo_recipe_<catalog>_<config>.json)")
    args = parser.parse_args()

    base = deep_merge({"model": {"text_encoder": None}}, dotted_overrides(args.set))  # image-only models
    prepared: dict[str, tuple] = {}  # one decode per input shape
    rows = []
    for recipe in args.recipes.split(","):
        cfg = load_config(args.config, overrides=deep_merge(base, RECIPES[recipe]))
        key = str(cfg.model.image_hw)
        if key not in prepared:
            prepared[key] = prepared_catalog(args.catalog, cfg)
        data, tokenizer, name = prepared[key]
        test = data.indices("test")
        for seed in args.seeds:
            row = {
                "recipe": recipe,
                "seed": seed,
                "input_hw": cfg.model.image_hw,
                **image_only_scores(data, cfg, tokenizer, seed),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\n{name}, config {args.config} {args.set}, image-only model, {len(test)} test products, seeds {args.seeds}")
    print("| recipe | input HxW | top-1 | macro-F1 | top-1, flip TTA | kept epoch | train s |")
    print("|---|---|---|---|---|---|---|")
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        group = [r for r in rows if r["recipe"] == recipe]
        top1, f1 = np.array([r["top1"] for r in group]), np.array([r["macro_f1"] for r in group])
        flip = np.array([r["top1_flip_tta"] for r in group])
        print(
            f"| {recipe} | {'x'.join(map(str, group[0]['input_hw']))} | {top1.mean():.4f} ± {top1.std():.4f} | "
            f"{f1.mean():.4f} ± {f1.std():.4f} | {flip.mean():.4f} | {'/'.join(str(r['best_epoch']) for r in group)} | "
            f"{np.mean([r['seconds'] for r in group]):.0f} |"
        )
    meta = {"catalog": name, "config": args.config, "overrides": args.set, "recipes": RECIPES, "seeds": args.seeds}
    print()
    write_result({"meta": meta, "rows": rows}, args.out, f"photo_recipe_{name}_{args.config}.json")


if __name__ == "__main__":
    main()
