"""Catalog-drop updates: naive fine-tune vs EWC vs replay vs EWC + replay vs a full joint retrain.

Two scenarios cut from one real catalog, each run side by side in one process with the same
encoders, splits and seed:

- A, class-incremental: the base catalog lacks Heels and Flats; the drop brings them plus 30% of
  the other categories' products (by product group, so near-duplicates stay on one side);
- B, temporal: base = products up to 2012, drop = 2013 onwards.

The catalog is split once (group-aware train/val/test over all of it), so every method is tested
on the same products: old = the base catalog's test split (categories the base model knew),
new = the drop's test products of new categories (A) or all of the drop's test products (B),
overall = both. Forgetting = the base model's old top-1 minus the method's. Wall time of an update
covers training plus the Fisher/replay refresh; the joint retrain trains from scratch on base + drop.

    .venv/bin/python benchmarks/continual.py --catalog ../shared/data/fashion-footwear
    .venv/bin/python benchmarks/continual.py                      # the demo catalog (scenario A only)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import prepared_catalog

from kickvision.config import deep_merge, dotted_overrides, load_config
from kickvision.data.prepare import PreparedData
from kickvision.evaluate.update import evaluate_update
from kickvision.model.encoders import build_tokenizer
from kickvision.train.fit import fit
from kickvision.train.replay import continual_state_after_training
from kickvision.train.update import update_bundle

METHODS = {
    "naive fine-tune": {"ewc": False, "replay": False},
    "EWC only": {"ewc": True, "replay": False},
    "replay only": {"ewc": False, "replay": True},
    "EWC + replay": {"ewc": True, "replay": True},
}

JOINT = "joint retrain"


def subset(data: PreparedData, mask: np.ndarray, classes: list[str], tag: str) -> PreparedData:
    """Rows `mask` of `data` (splits kept) relabelled against `classes`."""
    idx = np.flatnonzero(mask)
    rows = data.rows.iloc[idx].reset_index(drop=True).copy()
    rows["label"] = rows["category"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
    return PreparedData(
        rows,
        list(classes),
        data.images[idx],
        data.input_ids[idx],
        data.attention_mask[idx],
        data.catalog_root,
        f"{data.catalog_hash[:12]}-{tag}",
    )


def scenario_masks(data: PreparedData, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows = data.rows
    if name == "A":
        new = rows["category"].isin(["Heels", "Flats"]).to_numpy()
        groups = rows["group"].unique()
        to_drop = set(np.random.default_rng(seed).permutation(groups)[: int(0.3 * len(groups))])
        moved = rows["group"].isin(to_drop).to_numpy()
        return ~new & ~moved, new | moved
    years = pd.to_numeric(rows["year"], errors="coerce").to_numpy()
    return years <= 2012, years >= 2013


def run_scenario(name: str, data: PreparedData, cfg, seed: int, methods: list[str]) -> list[dict]:
    base_mask, drop_mask = scenario_masks(data, name, seed)
    base_classes = sorted(data.rows.loc[base_mask, "category"].unique())
    all_classes = base_classes + sorted(set(data.rows.loc[drop_mask, "category"]) - set(base_classes))
    base = subset(data, base_mask, base_classes, "base")
    drop = subset(data, drop_mask, all_classes, "drop")
    joint = subset(data, base_mask | drop_mask, all_classes, "joint")
    print(
        f"\nscenario {name}: base {base.split_counts()}, drop {drop.split_counts()}, new classes "
        f"{all_classes[len(base_classes) :] or 'none'}"
    )

    tokenizer = build_tokenizer(cfg.model.text_encoder)
    started = time.perf_counter()
    champion = fit(base, cfg.model, cfg.train, tokenizer, cfg.data.max_title_tokens, seed=seed).bundle
    champion.continual = continual_state_after_training(champion.model, base, cfg.continual, seed)
    base_seconds = time.perf_counter() - started

    results = []
    for method, use in METHODS.items():
        if method not in methods:
            continue
        c = cfg.continual.model_copy(
            update={"ewc_lambda": cfg.continual.ewc_lambda if use["ewc"] else 0.0, "use_replay": use["replay"]}
        )
        started = time.perf_counter()
        updated = update_bundle(champion, drop, c, cfg.train, seed=seed).bundle
        seconds = time.perf_counter() - started
        results.append(
            {"scenario": name, "method": method, "seconds": seconds, **evaluate_update(champion, updated, drop)}
        )
        print(_row(results[-1]))

    for r in results:
        r["base_train_seconds"] = base_seconds
    if JOINT not in methods:
        return results
    started = time.perf_counter()
    retrained = fit(joint, cfg.model, cfg.train, tokenizer, cfg.data.max_title_tokens, seed=seed).bundle
    seconds = time.perf_counter() - started
    results.append(
        {"scenario": name, "method": JOINT, "seconds": seconds, **evaluate_update(champion, retrained, drop)}
    )
    print(_row(results[-1]))
    for r in results:
        r["time_vs_joint"] = r["seconds"] / seconds
        r["base_train_seconds"] = base_seconds
    return results


def _row(r: dict) -> str:
    return (
        f"  {r['scenario']:2s} {r['method']:16s} old {r['update_old_top1_after']:.4f} new {r['update_new_top1']:.4f} "
        f"overall {r['update_combined_top1_after']:.4f} forgetting {r['update_forgetting']:+.4f} {r['seconds']:.0f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", help="catalog drop (default: the demo catalog, generated)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--epochs", type=int, help="override train.epochs (base model and joint retrain)")
    parser.add_argument("--update-epochs", type=int, help="override continual.epochs")
    parser.add_argument("--scenarios", default="A,B", help="A (class-incremental), B (temporal; needs a year column)")
    parser.add_argument("--methods", default=",".join([*METHODS, JOINT]), help="comma-separated subset")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/continual_<catalog>.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides: dict = {"continual": {"holdout_per_class": 100_000}}  # the whole base test split is "old"
    if args.epochs:
        overrides["train"] = {"epochs": args.epochs}
    if args.update_epochs:
        overrides["continual"]["epochs"] = args.update_epochs
    cfg = load_config(args.config, overrides=deep_merge(overrides, dotted_overrides(args.set)))
    data, tokenizer, name = prepared_catalog(args.catalog, cfg)
    scenarios = [s for s in args.scenarios.split(",") if s == "A" or "year" in data.rows]

    results = [r for s in scenarios for r in run_scenario(s, data, cfg, cfg.seed, args.methods.split(","))]
    print(
        f"\n{name}: {cfg.name} config, train epochs {cfg.train.epochs}, update epochs {cfg.continual.epochs}, "
        f"λ {cfg.continual.ewc_lambda}, replay {cfg.continual.replay_per_class}/class, "
        f"{torch.get_num_threads()} threads"
    )
    print("| scen. | method | old top-1 | new top-1 | overall top-1 | forgetting | wall s | vs joint |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        vs_joint = f"{r['time_vs_joint']:.2f}" if "time_vs_joint" in r else "-"
        print(
            f"| {r['scenario']} | {r['method']} | {r['update_old_top1_after']:.4f} | {r['update_new_top1']:.4f} | "
            f"{r['update_combined_top1_after']:.4f} | {r['update_forgetting']:+.4f} | {r['seconds']:.0f} | {vs_joint} |"
        )
    out = Path(args.out or Path(__file__).parent / "results" / f"continual_{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "catalog": name,
        "config": cfg.name,
        "train_epochs": cfg.train.epochs,
        "continual": cfg.continual.model_dump(),
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
