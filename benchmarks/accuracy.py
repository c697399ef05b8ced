"""Fused model vs single-modality models vs TF-IDF on a real catalog: one group split, several seeds.

For each training seed: the config's fused model, the same model without its text branch (image
only), without its image branches (text only), all with the same encoders and budget; the fused
model is also scored with the photo hidden and with the title hidden (modality dropout is what
makes that meaningful). With `--photos scratch,pretrained` each model with photos is trained twice:
photo encoders from scratch, and from the config's photo pretraining (run once per seed). TF-IDF
(word 1-2 grams + character 2-5 grams) + logistic regression on the same text the model reads (the
title and `data.text_columns`) is the classical baseline (C chosen on validation). Prints top-1 and macro-F1 (mean ±
std over seeds), top-1 with flip test-time averaging (each product's logits averaged with those of
its photo's mirror image; where the photo is read), per-class F1, training wall time and peak RSS
during training, plus where a training step's CPU time goes per branch; writes JSON. With
`--train-arms` each model is also trained with other train settings, side by side in the same run
(same split, seeds and photo pretraining), e.g. how much of the fit's time and accuracy MiniLM's
backward pass is worth.

    .venv/bin/python benchmarks/accuracy.py --catalog ../shared/data/fashion-footwear --config fashion
    .venv/bin/python benchmarks/accuracy.py --catalog ../shared/data/fashion-footwear --config demo --seeds 42 7 1
    .venv/bin/python benchmarks/accuracy.py ... --variants fused --set model.branch_loss_weight=0.5
    .venv/bin/python benchmarks/accuracy.py ... --variants fused,"image only" --photos scratch,pretrained
    .venv/bin/python benchmarks/accuracy.py ... --variants fused --train-arms "pretrained_trainable_layers=0,epochs=8"
    .venv/bin/python benchmarks/accuracy.py ... --model path/to/saved/model   # score it on val + test, no training
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    add_validated_option,
    benchmark_parser,
    data_for_model,
    fit_quietly,
    flip_tta_scores,
    prepared_catalog,
    split_methods,
    write_result,
)
from sklearn.metrics import f1_score

from kickvision.config import deep_merge, dotted_overrides, load_config
from kickvision.data.text import product_texts
from kickvision.evaluate.catalog_audit import tfidf_text_model
from kickvision.model.bundle import load_bundle
from kickvision.model.net import build_model
from kickvision.model.predict import predict_logits
from kickvision.train.engine import classification_scores, pick_device
from kickvision.train.pretrain import pretrain_photos

VARIANTS = {"fused": {}, "image only": {"text_encoder": None}, "text only": {"image_encoders": []}}


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 0.2 s)."""

    def __enter__(self):
        self.peak, self._stop = _rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def branch_costs(cfg, n_classes: int, batch: int) -> dict[str, float]:
    """Seconds of forward + backward per training batch, per branch, on the training device (where the
    time goes; in fp32, as on a CPU)."""
    device = pick_device(cfg.train.device)
    model = build_model(cfg.model, n_classes).train().to(device)
    (height, width), tokens = cfg.model.image_hw, cfg.data.max_title_tokens
    images = torch.rand(batch, 3, height, width, device=device)
    ids = torch.randint(1000, 2000, (batch, tokens), device=device)
    mask = torch.ones(batch, tokens, dtype=torch.long, device=device)
    branches = {enc.name: (lambda enc=enc: enc(images)) for enc in model.image_encoders}
    if model.text_encoder is not None:
        branches[cfg.model.text_encoder.name] = lambda: model.text_encoder(ids, mask)
    branches["whole model"] = lambda: model(images, ids, mask).logits
    costs = {}
    for name, forward in branches.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            forward().float().sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        costs[name] = float(np.median(times[1:]))
    return costs


def scores_with_per_class(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> dict:
    per_class = f1_score(labels, predictions, labels=list(range(n_classes)), average=None, zero_division=0)
    return classification_scores(labels, predictions) | {"per_class_f1": [float(x) for x in per_class]}


def tfidf_baseline(data, text_columns=()) -> dict:
    """TF-IDF + logistic regression on the same text the model reads (the title, and `text_columns`)."""
    titles = np.array([t or "" for t in product_texts(data.rows, text_columns)], dtype=object)
    labels = data.labels()
    train, val, test = (data.indices(s) for s in ("train", "val", "test"))
    best = None
    for c in (1.0, 3.0, 10.0, 30.0):
        model = tfidf_text_model(c)
        started = time.perf_counter()
        model.fit(titles[train], labels[train])
        seconds = time.perf_counter() - started
        val_top1 = float((model.predict(titles[val]) == labels[val]).mean())
        if best is None or val_top1 > best[0]:
            best = (val_top1, c, model, seconds)
    val_top1, c, model, seconds = best
    return scores_with_per_class(labels[test], model.predict(titles[test]), len(data.classes)) | {
        "C": c,
        "train_seconds": seconds,
    }


def train_and_score(data, cfg, tokenizer, variant: str, suffix: str, seed: int, photo_encoders) -> list[dict]:
    """Fit one variant (photo encoders from scratch, or from `photo_encoders`) and score it on the test
    split (see score_probes), its own row also with its validation top-1."""
    model_cfg = cfg.model.model_copy(update=VARIANTS[variant])
    started = time.perf_counter()
    with PeakRSS() as memory:
        fitted = fit_quietly(data, cfg, model_cfg, tokenizer, seed, photo_encoders)
    seconds = time.perf_counter() - started
    fitted.bundle.model.to(pick_device(cfg.train.device))  # scored where it trained (a GPU, if there was one)
    rows = score_probes(fitted.bundle.model, data, data.indices("test"), variant, suffix, seed)
    rows[0] |= {"train_seconds": seconds, "peak_rss_gb": memory.peak / 1e9, "epochs": len(fitted.history)}
    rows[0] |= {"best_epoch": fitted.bundle.spec.training.best_epoch}
    rows[0] |= {"branch_head_weights": fitted.bundle.spec.training.branch_head_weights}
    val = data.indices("val")  # what recipes are chosen on
    val_logits, _ = predict_logits(fitted.bundle.model, data, val)
    rows[0] |= {"val_top1": classification_scores(data.labels()[val], val_logits.argmax(1))["top1"]}
    return rows


def score_probes(model, data, rows_in_split, variant: str, suffix: str, seed: int | None) -> list[dict]:
    """Top-1, macro-F1 and per-class F1 of `model` on `rows_in_split`, plus flip test-time averaging where
    the photo is read; the fused model also with the photo hidden, with the title hidden and with its
    branch heads silent (when they vote). The model's own row comes first."""
    labels, n_classes = data.labels(), len(data.classes)
    probes = {variant: {}}
    if variant == "fused":
        probes |= {"fused, photo removed": {"use_image": False}, "fused, title removed": {"use_text": False}}
    votes = model.branch_head_weights.clone() if model.branch_classifiers is not None else None
    if votes is not None and bool(votes.any()):  # what the branch heads' votes (train/fusion.py) add
        probes[f"{variant}, branch heads silent"] = {"silent": True}
    rows = []
    for label, hide in probes.items():
        if hide.pop("silent", False):
            model.branch_head_weights.zero_()
        logits, _ = predict_logits(model, data, rows_in_split, **hide)
        scores = scores_with_per_class(labels[rows_in_split], logits.argmax(1), n_classes)
        if hide.get("use_image", True):  # with a photo: also averaged with its mirror image
            scores |= flip_tta_scores(model, data, rows_in_split, logits, **hide)
        if votes is not None:
            model.branch_head_weights.copy_(votes)
        row = {"model": label + suffix, "seed": seed, **scores}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "per_class_f1"}), flush=True)
    return rows


def score_saved_model(
    folder: str, catalog: str, config: str, overrides: list[str], out: str | None, validated: bool = False
) -> None:
    """Score a saved model (a champion's bundle, a benchmark's cached model) on the validation and the test
    split of `catalog`, split as `config` splits it; nothing is trained."""
    cfg = load_config(config, overrides=dotted_overrides(overrides))
    data, _, name = prepared_catalog(catalog, cfg, validated)
    bundle = load_bundle(folder)
    data = data_for_model(data, bundle, cfg)
    variant = "fused" if bundle.model.image_encoders and bundle.model.text_encoder is not None else "model"
    results = {}
    print(f"{name}: {data.split_counts()} products; model {folder}", flush=True)
    for split in ("val", "test"):
        results[split] = score_probes(bundle.model, data, data.indices(split), variant, "", None)
    print("| split | model | top-1 | macro-F1 | top-1, flip TTA | macro-F1, flip TTA |\n|---|---|---|---|---|---|")
    for split, rows in results.items():
        for r in rows:
            flip = f"{r['top1_flip_tta']:.4f} | {r['macro_f1_flip_tta']:.4f}" if "top1_flip_tta" in r else "– | –"
            print(f"| {split} | {r['model']} | {r['top1']:.4f} | {r['macro_f1']:.4f} | {flip} |")
    meta = {"catalog": name, "config": cfg.name, "overrides": overrides, "model": str(folder), "classes": data.classes}
    write_result({"meta": meta, **results}, out, f"accuracy_{name}_{cfg.name}_saved_model.json")


def train_arms(cfg, config: str, overrides: dict, text: str) -> dict:
    """{row suffix: config} for the configured train section and each `--train-arms` arm: arms split
    on the commas outside brackets, an arm's train settings on semicolons (`lr=0.0005;epochs=8`),
    each arm validated as a config."""
    arms = {"": cfg}
    for arm in (a.strip() for a in split_methods(text) if a.strip()):
        settings = dotted_overrides([s.strip() for s in arm.split(";") if s.strip()])
        arms[f", train[{arm}]"] = load_config(config, overrides=deep_merge(overrides, {"train": settings}))
    return arms


def main() -> None:
    parser = benchmark_parser(__doc__, config="fashion", seeds=(42, 7, 1))
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the models")
    parser.add_argument(
        "--photos",
        default="scratch",
        help="photo encoders: scratch, pretrained (the config's pretrain section, run per seed) or scratch,pretrained",
    )
    parser.add_argument(
        "--train-arms",
        default="",
        help="other train settings to fit each model with, side by side: arms split by commas, settings in an arm "
        'by semicolons, e.g. "pretrained_trainable_layers=0,pretrained_trainable_layers=2;epochs=8"',
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/accuracy_<catalog>_<config>.json)")
    parser.add_argument("--model", help="a saved model's folder: score it on val and test instead of training")
    add_validated_option(parser)
    args = parser.parse_args()
    if args.model:
        return score_saved_model(args.model, args.catalog, args.config, args.set, args.out, args.validated)

    overrides = dotted_overrides(args.set)
    if args.epochs:
        overrides = deep_merge(overrides, {"train": {"epochs": args.epochs}})
    cfg = load_config(args.config, overrides=overrides)
    arms = train_arms(cfg, args.config, overrides, args.train_arms)  # a bad arm fails before any training
    data, tokenizer, name = prepared_catalog(args.catalog, cfg, args.validated)  # one group split for every seed
    test, n_classes = data.indices("test"), len(data.classes)
    print(f"{name}: {data.split_counts()} products, classes {data.classes}", flush=True)
    costs = branch_costs(cfg, n_classes, cfg.train.batch_size)
    print("seconds per training batch (fwd+bwd):", {k: round(v, 3) for k, v in costs.items()}, flush=True)

    rows = []
    for seed in args.seeds:
        encoders = {"scratch": None}
        if "pretrained" in args.photos:
            started = time.perf_counter()
            encoders["pretrained"], knn = pretrain_photos(
                data, cfg.model, cfg.pretrain, cfg.train, seed, progress=False
            )
            print(json.dumps({"pretrain_seed": seed, "seconds": time.perf_counter() - started, **knn}), flush=True)
        for photos in args.photos.split(","):
            for variant in args.variants.split(","):
                if photos == "pretrained" and variant == "text only":
                    continue  # no photo encoder to start from
                for arm, arm_cfg in arms.items():
                    suffix = (", pretrained photos" if photos == "pretrained" else "") + arm
                    rows += train_and_score(data, arm_cfg, tokenizer, variant, suffix, seed, encoders[photos])
    tfidf = tfidf_baseline(data, cfg.data.text_columns)
    text = "title" + "".join(f" + {c}" for c in cfg.data.text_columns)
    rows.append({"model": f"TF-IDF + logistic regression ({text})", "seed": None, **tfidf})

    print(
        f"\n{name}, config {cfg.name} ({'x'.join(map(str, cfg.model.image_hw))} px), "
        f"{len(test)} test products, seeds {args.seeds}"
    )
    header = "| model | top-1 | macro-F1 | top-1, flip TTA | val top-1 | train s | peak RSS GB | "
    print(header + " | ".join(data.classes) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * n_classes)
    summary = []
    for model in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == model]
        top1 = np.array([r["top1"] for r in group])
        f1 = np.array([r["macro_f1"] for r in group])
        per_class = np.mean([r["per_class_f1"] for r in group], axis=0)
        seconds = np.mean([r["train_seconds"] for r in group if "train_seconds" in r] or [np.nan])
        peak = np.max([r["peak_rss_gb"] for r in group if "peak_rss_gb" in r] or [np.nan])
        flip = np.mean([r["top1_flip_tta"] for r in group if "top1_flip_tta" in r] or [np.nan])
        val = np.mean([r["val_top1"] for r in group if "val_top1" in r] or [np.nan])
        summary.append({"model": model, "top1_mean": top1.mean(), "top1_std": top1.std(), "macro_f1_mean": f1.mean()})
        print(
            f"| {model} | {top1.mean():.4f} ± {top1.std():.4f} | {f1.mean():.4f} ± {f1.std():.4f} | {flip:.4f} | "
            f"{val:.4f} | "
            f"{seconds:.0f} | "
            f"{peak:.2f} | " + " | ".join(f"{x:.3f}" for x in per_class) + " |"
        )
    meta = {
        "catalog": name,
        "config": cfg.name,
        "overrides": args.set,
        "train_arms": args.train_arms,
        "epochs": cfg.train.epochs,
        "seeds": args.seeds,
        "classes": data.classes,
        "branch_costs": costs,
    }
    write_result({"meta": meta, "summary": summary, "rows": rows}, args.out, f"accuracy_{name}_{cfg.name}.json")


if __name__ == "__main__":
    main()
