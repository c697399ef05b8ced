"""Explanations that can be trusted: ROAD faithfulness of the image maps vs random maps, calibration, map cost.

Trains the config's model once (or loads a saved bundle with --model), then on the test split: ROAD
(pytorch-grad-cam's ROADCombined: (LeRF - MoRF) / 2 of the target-class probability, higher = more
faithful) for each image branch's maps (Grad-CAM++ for the CNN, patch occlusion for the ViT) and for
uniform random maps of the same size, per product, with the title held fixed and hidden, and each
branch's margin over random maps in paired standard errors; test ECE before and after temperature
scaling (fitted on validation); explanation seconds per product on CPU. ROAD scores one product at a time
and prints the margins so far every --report-every products, so a long run stopped early still says
something (the JSON, written at the end, keeps every scored product's row and scores).

    .venv/bin/python benchmarks/explain.py --catalog ../shared/data/fashion-footwear --epochs 10
    .venv/bin/python benchmarks/explain.py --catalog ../shared/data/fashion-footwear --model /tmp/fashion-bundle
    .venv/bin/python benchmarks/explain.py --catalog ../shared/data/fashion-footwear --config fashion \
        --model /tmp/fashion-bundle --products 64 --out benchmarks/results/explain_fashion-footwear_fashion.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import data_for_model, prepared_catalog, write_result
from PIL import Image

from kickvision.config import deep_merge, dotted_overrides, load_config
from kickvision.evaluate.calibration import calibrate_temperature, expected_calibration_error, softmax
from kickvision.evaluate.explain import explain_product
from kickvision.evaluate.faithfulness import faithfulness_metrics, road_scores
from kickvision.model.bundle import load_bundle, save_bundle
from kickvision.model.predict import predict_logits
from kickvision.train.fit import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", help="catalog drop (default: the demo catalog, generated)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--model", help="a saved bundle folder to explain instead of training one")
    parser.add_argument("--save-model", help="save the trained bundle here (for other benchmarks)")
    parser.add_argument("--products", type=int, default=64, help="test products ROAD-scored")
    parser.add_argument("--report-every", type=int, default=128, help="print the margins so far every N products")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/explain_<catalog>.json)")
    args = parser.parse_args()
    if args.report_every < 1:
        parser.error("--report-every must be at least 1")

    overrides = dotted_overrides(args.set)
    if args.epochs:
        overrides = deep_merge(overrides, {"train": {"epochs": args.epochs}})
    cfg = load_config(args.config, overrides=overrides)
    data, tokenizer, name = prepared_catalog(args.catalog, cfg)
    if args.model:
        bundle = load_bundle(args.model)
        data = data_for_model(data, bundle, cfg)
    else:
        bundle = fit(data, cfg.model, cfg.train, tokenizer, cfg.data.max_title_tokens, seed=cfg.seed).bundle
        if args.save_model:
            save_bundle(bundle, args.save_model)

    calibration = calibrate_temperature(bundle, data)
    test = data.indices("test")
    logits, _ = predict_logits(bundle.model, data, test)
    labels = data.labels()[test]
    ece_before = expected_calibration_error(softmax(logits), labels)
    ece_after = expected_calibration_error(softmax(logits, bundle.spec.temperature), labels)

    started = time.perf_counter()
    scores: dict[str, list[float]] = {}
    per_product = []
    for done, (row, product) in enumerate(road_scores(bundle, data, n=args.products, seed=cfg.seed), start=1):
        for key, score in product.items():
            scores.setdefault(key, []).append(score)
        per_product.append({"row": row, **product})
        if done % args.report_every == 0 and done < args.products:  # the margins so far, for a run cut short
            so_far = faithfulness_metrics(bundle, scores)
            margins = {k.removeprefix("cam_faithfulness_"): round(v, 1) for k, v in so_far.items() if "margin" in k}
            print(f"{done} products, {time.perf_counter() - started:.0f} s: margins (s.e.) {margins}", flush=True)
    faithfulness = faithfulness_metrics(bundle, scores) if scores else {"cam_faithfulness_products": 0.0}
    road_seconds = time.perf_counter() - started
    timed = np.random.default_rng(1).permutation(test)[:16]
    started = time.perf_counter()
    for j in timed:
        explain_product(bundle, Image.fromarray(data.images[j]), data.rows.at[j, "title"])
    cam_seconds = (time.perf_counter() - started) / len(timed)

    scored = int(faithfulness["cam_faithfulness_products"])
    n = max(scored, 1)  # per-product seconds: a run that scored none divides by one
    rows = []
    for condition, title in (("", "fixed"), ("_photo_only", "hidden")):
        random = faithfulness.get(f"cam_faithfulness_random{condition}")
        if random is None:  # no product scored (none asked for, or a model without image branches)
            continue
        for family in ("resnet", "vit", "random"):
            key = f"cam_faithfulness_{family}{condition}"
            if key not in faithfulness:
                continue
            rows.append(
                {
                    "maps": family,
                    "title": title,
                    "road": faithfulness[key],
                    "std": faithfulness[key + "_std"],
                    "margin_over_random": faithfulness[key] - random,
                    "margin_se": faithfulness.get(key + "_margin_se"),  # paired, in standard errors
                }
            )
    print(
        f"\n{name}: {cfg.name} config, {'x'.join(map(str, cfg.model.image_hw))} px, {scored} test products, "
        f"{torch.get_num_threads()} threads"
    )
    print("| maps | title | ROAD (LeRF-MoRF)/2 | std | margin over random | margin in paired s.e. |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        se = "" if r["margin_se"] is None else f"{r['margin_se']:.1f}"
        print(
            f"| {r['maps']} | {r['title']} | {r['road']:.4f} | {r['std']:.4f} | {r['margin_over_random']:+.4f} | {se} |"
        )
    print(
        f"\ntest ECE {ece_before:.4f} -> {ece_after:.4f} after temperature scaling "
        f"(T = {calibration['temperature']:.3f}, fitted on validation); "
        f"image maps (both branches) + title occlusion {cam_seconds:.2f} s/product on CPU; "
        f"ROAD scoring {road_seconds / n:.2f} s/product"
    )
    result = {
        "catalog": name,
        "config": cfg.name,
        "faithfulness": rows,
        "ece_uncalibrated": ece_before,
        "ece_calibrated": ece_after,
        "temperature": calibration["temperature"],
        "cam_seconds_per_product": cam_seconds,
        "road_seconds_per_product": road_seconds / n,
        "products": per_product,  # each scored product's catalog row and ROAD scores, in scoring order
    }
    write_result(result, args.out, f"explain_{name}.json")


if __name__ == "__main__":
    main()
