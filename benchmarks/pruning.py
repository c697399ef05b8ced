"""Structured pruning of the whole fused model: size, MACs, CPU latency and accuracy per ratio.

Trains the config's model once, its photo encoders pretrained first when the config's `pretrain`
section is enabled (as `kickvision train` does; or loads a saved bundle with --model), then for each ratio prunes
a copy (every encoder and the fusion MLP; see kickvision/train/prune.py), fine-tunes it for
`prune.finetune_epochs` and reports parameters, weights-file MB, MACs, CPU latency at batch 1 and
32 (median of interleaved runs: the unpruned model and the pruned ones alternate in the same
process, so machine noise hits all alike), validation top-1 / macro-F1 before and after (what the prune
step's gate reads) and test top-1 / macro-F1 right after pruning and after the fine-tune. Prints a
table, writes JSON.

    .venv/bin/python benchmarks/pruning.py --catalog ../shared/data/fashion-footwear --epochs 10
    .venv/bin/python benchmarks/pruning.py                        # the demo catalog
    # a model the training pipeline already trained (its train step's output artifact folder):
    .venv/bin/python benchmarks/pruning.py --catalog ../shared/data/fashion-footwear --config fashion --model DIR
    # the text encoder's hidden width narrowed and kept, side by side:
    .venv/bin/python benchmarks/pruning.py --catalog ../shared/data/fashion-footwear --config fashion \
        --keep-text-width 0,1
    # ... and keep the pruned bundles, e.g. to serve one (benchmarks/serving.py --bundle DIR/r0.3-d1.0):
    .venv/bin/python benchmarks/pruning.py ... --ratios 0.3 --save-pruned /tmp/pruned
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from common import prepared_catalog, write_result

from kickvision.config import load_config
from kickvision.model.bundle import load_bundle, save_bundle
from kickvision.model.costs import example_inputs, model_costs
from kickvision.model.predict import predict_logits
from kickvision.serve.release import equip_for_release
from kickvision.train.engine import classification_scores, split_validator
from kickvision.train.fit import fit
from kickvision.train.pretrain import pretrain_photos
from kickvision.train.prune import prune_bundle, prune_gate, prune_structured


@torch.no_grad()
def interleaved_latency_ms(models: list, batch: int, tokens: int, repeats: int = 21) -> list[float]:
    """Median forward time per model, the models timed in turn within each repeat."""
    inputs = example_inputs(models[0], batch, tokens)
    for model in models:
        model.eval()
        for _ in range(3):
            model(*inputs)
    times = [[] for _ in models]
    for _ in range(repeats):
        for i, model in enumerate(models):
            started = time.perf_counter()
            model(*inputs)
            times[i].append((time.perf_counter() - started) * 1000)
    return [float(np.median(t)) for t in times]


def test_scores(model, data) -> dict[str, float]:
    idx = data.indices("test")
    logits, _ = predict_logits(model, data, idx)
    return classification_scores(data.labels()[idx], logits.argmax(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", help="catalog drop (default: the demo catalog, generated)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument(
        "--seed",
        type=int,
        help="training seed (pretraining, fit, fine-tunes); the split stays the config's, as accuracy.py",
    )
    parser.add_argument("--ratios", default="0.2,0.3,0.4,0.5,0.6")
    parser.add_argument("--finetune-epochs", type=int, help="override prune.finetune_epochs")
    parser.add_argument("--finetune-lr", type=float, help="override prune.lr")
    parser.add_argument("--finetune-encoder-lr", type=float, help="override prune.encoder_lr")
    parser.add_argument(
        "--distill-weights", default=None, help="e.g. 0,1: each ratio fine-tuned without and with distillation"
    )
    parser.add_argument(
        "--keep-text-width",
        default=None,
        help="e.g. 0,1: each ratio pruned with the text encoder's hidden width narrowed, then kept "
        "(prune.keep_text_width)",
    )
    parser.add_argument("--model", help="a bundle folder trained with --config on --catalog")
    parser.add_argument("--save-model", help="also save the trained (unpruned) bundle here, e.g. for explain.py")
    parser.add_argument(
        "--save-pruned",
        help="also save each pruned, fine-tuned bundle under DIR/r<ratio>-d<distill> (serving.py --bundle)",
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/pruning_<catalog>.json)")
    args = parser.parse_args()

    gate = load_config(args.config).prune  # its tolerances: what the pipeline's prune step would refuse
    overrides: dict = {"prune": {"tolerance": 1.0, "macro_f1_tolerance": None}}  # measure every ratio, refuse none
    if args.epochs:
        overrides["train"] = {"epochs": args.epochs}
    if args.finetune_epochs is not None:
        overrides["prune"]["finetune_epochs"] = args.finetune_epochs
    if args.finetune_lr is not None:
        overrides["prune"]["lr"] = args.finetune_lr
    if args.finetune_encoder_lr is not None:
        overrides["prune"]["encoder_lr"] = args.finetune_encoder_lr
    cfg = load_config(args.config, overrides=overrides)
    data, tokenizer, name = prepared_catalog(args.catalog, cfg)
    tokens = cfg.data.max_title_tokens
    seed = cfg.seed if args.seed is None else args.seed

    started = time.perf_counter()
    if args.model:  # same config and seed as its training, so the same split and label map
        bundle = load_bundle(args.model)
        if bundle.classes != data.classes:
            raise SystemExit(f"{args.model} was trained on classes {bundle.classes}, not this catalog's {data.classes}")
        train_seconds = float("nan")
    else:
        encoders = None
        if cfg.pretrain.enabled:
            encoders, knn = pretrain_photos(data, cfg.model, cfg.pretrain, cfg.train, seed, progress=False)
            print(f"pretrained photo encoders in {time.perf_counter() - started:.0f} s: {knn}", flush=True)
        bundle = fit(
            data,
            cfg.model,
            cfg.train,
            tokenizer,
            tokens,
            seed=seed,
            progress=False,
            text_columns=cfg.data.text_columns,
            photo_encoders=encoders,
        ).bundle
        train_seconds = time.perf_counter() - started
    if args.save_model:
        save_bundle(bundle, args.save_model)
    validate = split_validator(data, data.indices("val"))
    validated = {k: v for k, v in validate(bundle.model).items() if k != "val_loss"}
    base = model_costs(bundle.model, tokens, latency=False) | test_scores(bundle.model, data) | validated
    rows = [{"ratio": 0.0, **base, "top1_no_finetune": base["top1"], "macro_f1_no_finetune": base["macro_f1"]}]
    pruned_models = []
    weights = [cfg.prune.distill_weight]
    if args.distill_weights:
        weights = [float(w) for w in args.distill_weights.split(",")]
    widths = [cfg.prune.keep_text_width]
    if args.keep_text_width:
        widths = [bool(int(k)) for k in args.keep_text_width.split(",")]
    arms = [(ratio, keep) for ratio in [float(r) for r in args.ratios.split(",")] for keep in widths]
    for ratio, keep in arms:
        shallow = copy.deepcopy(bundle.model).cpu()
        prune_structured(shallow, ratio, ratio, cfg.prune.round_to, tokens, keep_text_width=keep)
        no_finetune = test_scores(shallow, data)
        for weight in weights:
            started = time.perf_counter()
            changes = {"ratio": ratio, "head_ratio": ratio, "distill_weight": weight, "keep_text_width": keep}
            prune_cfg = cfg.prune.model_copy(update=changes)
            result = prune_bundle(bundle, data, prune_cfg, cfg.train, seed=seed, progress=False)
            model = result.bundle.model
            pruned_models.append(model)
            scores = {k: result.metrics[f"prune_{k}_after"] for k in ("val_top1", "val_macro_f1")}
            rows.append(
                {
                    "ratio": ratio,
                    "distill_weight": weight,
                    "keep_text_width": keep,
                    **model_costs(model, tokens, latency=False),
                    **test_scores(model, data),
                    **scores,
                    "top1_no_finetune": no_finetune["top1"],
                    "macro_f1_no_finetune": no_finetune["macro_f1"],
                    "val_top1_before": result.metrics.get("prune_val_top1_before"),
                    "val_top1_after": result.metrics.get("prune_val_top1_after"),
                    "val_macro_f1_before": result.metrics.get("prune_val_macro_f1_before"),
                    "val_macro_f1_after": result.metrics.get("prune_val_macro_f1_after"),
                    "prune_step_gate": prune_gate(base, scores, gate.tolerance, gate.macro_f1_tolerance)[1],
                    "prune_and_finetune_seconds": time.perf_counter() - started,
                }
            )
            print(f"ratio {ratio} distill {weight} text width kept {keep}: {rows[-1]}", flush=True)
            if args.save_pruned:  # equipped as the prune step releases it: index, calibration, continual state
                equip_for_release(result.bundle, data, cfg.continual, seed)
                save_bundle(result.bundle, Path(args.save_pruned) / f"r{ratio}-d{weight}{'-w' if keep else ''}")

    for batch in (1, 32):
        latencies = interleaved_latency_ms([bundle.model, *pruned_models], batch, tokens)
        for row, ms in zip(rows, latencies, strict=True):
            row[f"latency_b{batch}_ms"] = ms

    print(
        f"\n{name}: {cfg.name} config, {'x'.join(map(str, cfg.model.image_hw))} px, trained {cfg.train.epochs} epochs "
        f"({train_seconds:.0f} s), fine-tune {cfg.prune.finetune_epochs} epochs, {torch.get_num_threads()} CPU threads"
    )
    print(
        "| ratio | distill | text width | params | vs base | file MB | MACs (M) | b1 ms | b32 ms | b32 speed-up | "
        "val top-1 | val macro-F1 | top-1 pruned | top-1 tuned | Δ top-1 | macro-F1 tuned |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    b = rows[0]
    for r in rows:
        print(
            f"| {r['ratio']:.1f} | {r.get('distill_weight', '-')} | "
            f"{'-' if r['ratio'] == 0 else 'kept' if r['keep_text_width'] else 'pruned'} | {r['params'] / 1e6:.2f}M | "
            f"{r['params'] / b['params']:.0%} | "
            f"{r['file_bytes'] / 1e6:.1f} | {r['macs'] / 1e6:.0f} | {r['latency_b1_ms']:.1f} | "
            f"{r['latency_b32_ms']:.1f} | {b['latency_b32_ms'] / r['latency_b32_ms']:.2f}x | "
            f"{r['val_top1']:.4f} | {r['val_macro_f1']:.4f} | "
            f"{r['top1_no_finetune']:.4f} | {r['top1']:.4f} | {(r['top1'] - b['top1']) * 100:+.2f} pt | "
            f"{r['macro_f1']:.4f} |"
        )
    for r in rows[1:]:
        width = "kept" if r["keep_text_width"] else "pruned"
        print(
            f"ratio {r['ratio']:.1f}, distill {r['distill_weight']}, text width {width}: "
            f"the prune step's gate: {r['prune_step_gate']}"
        )
    meta = {
        "catalog": name,
        "config": cfg.name,
        "seed": seed,
        "train_epochs": cfg.train.epochs,
        "prune": cfg.prune.model_dump(),
    }
    write_result({"meta": meta, "train_seconds": train_seconds, "rows": rows}, args.out, f"pruning_{name}.json")


if __name__ == "__main__":
    main()
