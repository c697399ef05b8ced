"""Do the ViT branch's maps point at the evidence? Patch occlusion against gradient maps, side by side.

Part 1, synthetic catalogs whose right answer is known: a small mean-pooled ViT (the one
tests/test_explain.py trains: patch 8, depth 2, width 64, 32 px) learns each of two catalogs whose
class is decided by the top-left quadrant alone, once per training seed. `where`: a dark square
top-left (class `top_left`) or in another quadrant. `colour`: a square in every quadrant, the
top-left one red (`top_left`) or blue (`elsewhere`), the others red or blue at random, so the rest of
the photo says nothing. Each test product is explained for its own class; the score is the share of
the map's mass in the top-left quadrant (uniform maps: 0.25; an all-zero map counts as 0), for the
classes whose evidence lies there (both colour classes; `top_left` of `where`).
Methods: kickvision's patch occlusion, and pytorch-grad-cam's Grad-CAM++, Grad-CAM and LayerCAM
hooked on the embedded patches, after the first block and after the last.

Part 2, with --model and --catalog: ROAD (as kickvision.evaluate.faithfulness scores it) of the
model's ViT-branch maps by patch occlusion, by Grad-CAM++ after the last block (kickvision's ViT map
before patch occlusion) and by LayerCAM on the embedded patches, against random maps, on the same
test products with the title hidden; margins over random in paired standard errors.

    .venv/bin/python benchmarks/vit_maps.py --seeds 0 1 2 3 42
    .venv/bin/python benchmarks/vit_maps.py --seeds 0 1 --catalog ../shared/data/fashion-footwear \
        --config fashion --model /tmp/fashion-bundle --products 128
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from common import benchmark_parser, prepared_catalog, write_result
from PIL import Image
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

from kickvision.config import dotted_overrides, load_config
from kickvision.data.prepare import PreparedData
from kickvision.data.synthetic import TINY_VIT, region_catalog
from kickvision.evaluate.cam import is_vit, patch_occlusion
from kickvision.evaluate.explain import ImageOnlyInput, encode_product
from kickvision.evaluate.faithfulness import PERCENTILES, paired_margin_se
from kickvision.model.bundle import load_bundle
from kickvision.model.encoders import build_tokenizer
from kickvision.model.predict import predict_logits
from kickvision.train.fit import fit

GRADIENT_METHODS = {"Grad-CAM++": GradCAMPlusPlus, "Grad-CAM": GradCAM, "LayerCAM": LayerCAM}
SIZE = 32


def vit_tokens_to_map(backbone) -> Callable[[torch.Tensor], torch.Tensor]:
    """[B, prefix + rows·cols, C] tokens (or the patch embedding's [B, rows·cols, C]) -> [B, C, rows, cols]."""
    rows, cols = backbone.patch_embed.grid_size

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, tokens.shape[1] - rows * cols :, :]
        return patches.reshape(patches.shape[0], rows, cols, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def gradient_map(method, wrapper, backbone, layer, images, target) -> np.ndarray:
    with method(model=wrapper, target_layers=[layer], reshape_transform=vit_tokens_to_map(backbone)) as cam:
        return cam(input_tensor=images, targets=[target])


def synthetic_rows(seeds: list[int]) -> list[dict]:
    heads = {"projection_dim": 32, "fusion_hidden": 32, "embedding_dim": 16, "branch_loss_weight": 0.5}
    cfg = load_config("demo", overrides={"model": {"image_size": SIZE} | heads})  # the test's sizes
    model_cfg = cfg.model.model_copy(
        update={"image_encoders": [TINY_VIT], "text_encoder": None, "modality_dropout": 0.0}
    )
    settings = {"epochs": 40, "lr": 0.003, "patience": 40, "batch_size": 16, "augment": False}
    train = cfg.train.model_copy(update=settings | {"label_smoothing": 0.0, "contrastive_weight": 0.0})
    rows = []
    for rule in ("where", "colour"):
        data = region_catalog(rule, size=SIZE)
        for seed in seeds:
            started = time.perf_counter()
            bundle = fit(data, model_cfg, train, build_tokenizer(None), 12, progress=False, seed=seed).bundle
            test = data.indices("test")
            logits, _ = predict_logits(bundle.model, data, test)
            encoder = bundle.model.image_encoders[0]
            backbone = encoder.backbone
            layers = {"embedded patches": backbone.patch_embed, "first block": backbone.blocks[0]}
            layers["last block"] = backbone.blocks[-1]
            transform = bundle.image_transform()
            blank = transform.blank_input()
            for label, category in enumerate(data.classes):
                mass: dict[str, list[float]] = {}
                for j in test[data.labels()[test] == label]:
                    _, images, ids, mask = encode_product(bundle, Image.fromarray(data.images[j]), None)
                    wrapper = ImageOnlyInput(bundle.model, ids, mask, torch.zeros(1))
                    maps = {"patch occlusion": patch_occlusion(wrapper, encoder, images, blank, label)}
                    for name, method in GRADIENT_METHODS.items():
                        for where, layer in layers.items():
                            target = ClassifierOutputTarget(label)
                            maps[f"{name}, {where}"] = gradient_map(method, wrapper, backbone, layer, images, target)
                    for key, cam in maps.items():
                        mass.setdefault(key, []).append(float(cam[0, :16, :16].sum() / max(cam[0].sum(), 1e-9)))
                row = {"catalog": rule, "seed": seed, "explained": category}
                row["test_top1"] = float((logits.argmax(1) == data.labels()[test]).mean())
                rows.append(row | {key: float(np.mean(values)) for key, values in mass.items()})
            print(
                f"{rule} seed {seed}: top-1 {row['test_top1']:.3f}, {time.perf_counter() - started:.0f} s", flush=True
            )
    return rows


def road_rows(bundle, data: PreparedData, products: int, seed: int) -> list[dict]:
    """ROAD per ViT-map method and for random maps, title hidden, the same products and noise for each."""
    from pytorch_grad_cam.metrics.road import ROADCombined

    model = bundle.model.eval()
    encoder = next(e for e in model.image_encoders if is_vit(e))
    transform = bundle.image_transform()
    blank = transform.blank_input()
    road = ROADCombined(percentiles=list(PERCENTILES))
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(data.indices("test"))[:products]
    scores: dict[str, list[float]] = {}
    with torch.random.fork_rng():
        for j in chosen:
            images = transform.normalise(data.images[j : j + 1])
            ids, mask = torch.from_numpy(data.input_ids[j : j + 1]), torch.from_numpy(data.attention_mask[j : j + 1])
            wrapper = ImageOnlyInput(model, ids, mask, torch.zeros(1))
            with torch.no_grad():
                target = int(wrapper(images).argmax(1))
            softmax_target = ClassifierOutputSoftmaxTarget(target)
            maps = {
                "patch occlusion": patch_occlusion(wrapper, encoder, images, blank, target),
                "Grad-CAM++, last block": gradient_map(
                    GradCAMPlusPlus, wrapper, encoder.backbone, encoder.backbone.blocks[-1], images, softmax_target
                ),
                "LayerCAM, embedded patches": gradient_map(
                    LayerCAM, wrapper, encoder.backbone, encoder.backbone.patch_embed, images, softmax_target
                ),
                "random": rng.random((1, *images.shape[-2:]), dtype=np.float32),
            }
            for key, grayscale in maps.items():
                torch.manual_seed(seed + int(j))  # the same imputation noise for every map of a product
                scores.setdefault(key, []).append(float(road(images, grayscale, [softmax_target], wrapper)[0]))
    random = np.array(scores["random"])
    return [
        {
            "maps": key,
            "road": float(np.mean(values)),
            "std": float(np.std(values)),
            "margin_se": None if key == "random" else paired_margin_se(np.array(values), random),
            "products": len(values),
        }
        for key, values in scores.items()
    ]


def main() -> None:
    parser = benchmark_parser(__doc__, config="fashion", seeds=(0, 1, 2, 3, 42))
    parser.add_argument("--model", help="a saved bundle with a ViT branch, for the ROAD part (needs --catalog)")
    parser.add_argument("--products", type=int, default=128, help="test products ROAD-scored")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/vit_maps[_<catalog>].json)")
    args = parser.parse_args()
    result: dict = {"seeds": args.seeds}
    if not args.skip_synthetic:
        rows = synthetic_rows(args.seeds)
        table = pd.DataFrame(rows)
        methods = [c for c in table.columns if c not in ("catalog", "seed", "explained", "test_top1")]
        print("\nshare of the map's mass in the deciding quadrant (uniform maps 0.25), min-max over seeds")
        columns = [("where", "top_left"), ("colour", "top_left"), ("colour", "elsewhere")]  # evidence top-left
        print("| method | " + " | ".join(f"{rule}: {category}" for rule, category in columns) + " |")
        print("|---|---|---|---|")
        learnt = table[table["test_top1"] >= 0.9]  # a model that did not learn the rule has nothing to explain
        for method in methods:
            cells = []
            for rule, category in columns:
                values = learnt[(learnt["catalog"] == rule) & (learnt["explained"] == category)][method]
                cells.append(f"{values.min():.2f}-{values.max():.2f}" if len(values) else "-")
            print(f"| {method} | " + " | ".join(cells) + " |")
        skipped = table[table["test_top1"] < 0.9][["catalog", "seed"]].drop_duplicates().values.tolist()
        print(f"seeds whose model did not learn the rule (test top-1 < 0.9), left out: {skipped or 'none'}")
        result["synthetic"] = rows
    if args.model:
        cfg = load_config(args.config, overrides=dotted_overrides(args.set))
        data, _, name = prepared_catalog(args.catalog, cfg)
        rows = road_rows(load_bundle(args.model), data, args.products, cfg.seed)
        print(f"\n{name}: ROAD of the ViT branch's maps, title hidden, {rows[0]['products']} test products")
        print("| ViT maps | ROAD | std | margin over random (paired s.e.) |")
        print("|---|---|---|---|")
        for r in rows:
            se = "" if r["margin_se"] is None else f"{r['margin_se']:.1f}"
            print(f"| {r['maps']} | {r['road']:.4f} | {r['std']:.4f} | {se} |")
        result |= {"catalog": name, "config": cfg.name, "model": args.model, "road": rows}
    suffix = f"_{result['catalog']}" if "catalog" in result else ""
    write_result(result, args.out, f"vit_maps{suffix}.json")


if __name__ == "__main__":
    main()
