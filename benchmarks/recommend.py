"""Recommendation quality and latency: fused vs image-only vs text-only embeddings of one model.

Trains the given config once, embeds the test split (queries) and the training catalog (gallery)
three ways (both modalities, photo only, title only), and reports same-category precision@k, mAP
and same-colour p@5. Then times exact top-k queries (p50/p95, batch 1, CPU) on an index of the
catalog's size and on synthetic 10k and 100k indexes. Prints tables and writes JSON.

    .venv/bin/python benchmarks/recommend.py                                   # demo catalog
    .venv/bin/python benchmarks/recommend.py --catalog ../shared/data/fashion-footwear --epochs 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import write_result

from kickvision.config import load_config
from kickvision.data.catalog import read_catalog
from kickvision.data.demo import write_demo_catalog
from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import prepare_catalog
from kickvision.data.validation import quarantine_bad_rows
from kickvision.evaluate.retrieval import retrieval_scores
from kickvision.model.encoders import build_tokenizer
from kickvision.model.index import make_index
from kickvision.model.predict import predict_logits
from kickvision.train.fit import fit

MODES = {"fused": {}, "image only": {"use_text": False}, "text only": {"use_image": False}}


def query_latency_ms(n_items: int, dim: int, k: int = 10, queries: int = 200) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"product_id": np.arange(n_items).astype(str), "category": "x", "title": "", "image": ""})
    index = make_index(rng.normal(size=(n_items, dim)).astype(np.float32), rows)
    q = torch.nn.functional.normalize(torch.randn(queries, dim), dim=1)
    for i in range(10):  # warm-up
        index.search(q[i : i + 1], k)
    times = []
    for i in range(queries):
        started = time.perf_counter()
        index.search(q[i : i + 1], k)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", help="catalog drop (default: the demo catalog, generated)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/recommend_<catalog>.json)")
    args = parser.parse_args()

    overrides = {"train": {"epochs": args.epochs}} if args.epochs else {}
    cfg = load_config(args.config, overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        drop = Path(args.catalog) if args.catalog else write_demo_catalog(Path(tmp) / "demo")
        catalog = quarantine_bad_rows(read_catalog(drop), cfg.validate_).catalog
        tokenizer = build_tokenizer(cfg.model.text_encoder)
        data = prepare_catalog(catalog, tokenizer, resolve_image_transform(cfg.model), cfg.data, cfg.seed)
    name = Path(args.catalog).name if args.catalog else "demo"
    started = time.perf_counter()
    model = fit(data, cfg.model, cfg.train, tokenizer, cfg.data.max_title_tokens, seed=cfg.seed).bundle.model
    train_seconds = time.perf_counter() - started

    test_idx, train_idx = data.indices("test"), data.indices("train")
    quality = {}
    for mode, hide in MODES.items():
        logits, queries = predict_logits(model, data, test_idx, **hide)
        _, gallery_emb = predict_logits(model, data, train_idx, **hide)
        gallery = make_index(gallery_emb, data.rows.iloc[train_idx], dtype=torch.float32)
        scores = retrieval_scores(queries, data.rows.iloc[test_idx], gallery)
        scores["top1"] = float((logits.argmax(1) == data.labels()[test_idx]).mean())
        quality[mode] = scores

    dim = cfg.model.embedding_dim
    latency = {n: query_latency_ms(n, dim) for n in (len(data.rows), 10_000, 100_000)}

    print(f"\n{name}: {len(data.rows)} products, split {data.split_counts()}, trained in {train_seconds:.0f} s")
    cols = ["p_at_1", "p_at_5", "p_at_10", "map", "colour_p_at_5", "top1"]
    print(f"{'embedding':<12}" + "".join(f"{c:>14}" for c in cols))
    for mode, scores in quality.items():
        print(f"{mode:<12}" + "".join(f"{scores.get(c, float('nan')):>14.4f}" for c in cols))
    print(f"\nexact cosine top-10, batch 1, {torch.get_num_threads()} CPU threads, dim {dim}, float16 index")
    print(f"{'items':>10} {'p50 ms':>8} {'p95 ms':>8}")
    for n, (p50, p95) in latency.items():
        print(f"{n:>10} {p50:>8.3f} {p95:>8.3f}")
    result = {
        "catalog": name,
        "config": args.config,
        "overrides": overrides,
        "products": len(data.rows),
        "train_seconds": train_seconds,
        "quality": quality,
        "latency_ms": {str(n): {"p50": a, "p95": b} for n, (a, b) in latency.items()},
    }
    write_result(result, args.out, f"recommend_{name}.json")


if __name__ == "__main__":
    main()
