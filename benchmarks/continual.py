"""Catalog-drop updates: update recipes side by side against a full joint retrain, on one drop and on a chain.

Three scenarios cut from one real catalog, each run in one process with the same encoders, splits
and seed:

- A, class-incremental: the base catalog lacks Heels and Flats; the drop brings them plus 30% of
  the other categories' products (by product group, so near-duplicates stay on one side);
- B, temporal: base = products up to 2012, drop = 2013 onwards;
- C, a chain of four drops in time order (the `year` column): base = up to 2012 without Heels and
  Flats; drop 1 = 2013 plus every earlier Heels and Flats product (the new categories arrive);
  drop 2 = 2014-2015; drop 3 = 2016; drop 4 = 2017 onwards. Each drop updates the champion of the
  step before when the update gate promoted it (as `kickvision watch` would), else the old one.

The catalog is split once (group-aware train/val/test over all of it), so every recipe is tested on
the same products: old = the base catalog's test split, new = the drop's test products of new
categories (A) or all of the drop's (B; C: every drop so far, whether its update was promoted or not),
overall = both. Forgetting = the base model's old top-1 minus the recipe's. The same numbers on the
validation split (`val_*`) are what recipes are chosen on; test numbers are reported. Time of an
update covers training plus the Fisher/replay refresh; the joint retrain (photo pretraining when the
config has it, then training) runs from scratch on everything. Both are timed in wall seconds and in
this process's CPU seconds (user + system, all threads; on a CPU device only, as GPU work is not
counted): on a shared machine other tenants stretch wall time from one minute to the next; CPU
seconds are less sensitive to them but not immune (a shared core runs slower, and torch's threads
spin while they wait for a stalled one), so both ratios to the joint retrain are reported. Base
models and joint retrains are cached on disk (--cache), keyed by the catalog, the config sections
they depend on, the seed and the class order. An update recipe that adjusts its logits to the drop's
class prior (`logit_adjustment`, train/prior.py) is also scored with the shift taken out of its
classifier's biases (`NAME (τ 0)`): the same weights, side by side, at no second training.

    .venv/bin/python benchmarks/continual.py --catalog ../shared/data/fashion-footwear --config fashion
    .venv/bin/python benchmarks/continual.py                      # the demo catalog (scenario A only)
    .venv/bin/python benchmarks/continual.py --catalog ... --config fashion --scenarios A \
        --methods "config,config[epochs=4]" --update-seeds 42 7 3   # each update three times: mean ± s.e.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import prepared_catalog, split_methods, write_result
from pydantic import ValidationError

from kickvision.config import RunConfig, deep_merge, dotted_overrides, load_config
from kickvision.data.prepare import PreparedData
from kickvision.errors import ConfigError
from kickvision.evaluate.update import evaluate_update
from kickvision.model.bundle import ModelBundle, load_bundle, save_bundle
from kickvision.model.predict import predict_logits
from kickvision.serve.gates import update_gate
from kickvision.train.engine import pick_device
from kickvision.train.fit import fit
from kickvision.train.pretrain import pretrain_photos
from kickvision.train.prior import class_prior, shift_classifier_bias
from kickvision.train.replay import continual_state_after_training
from kickvision.train.update import update_bundle

# The recipes start from plain EWC + replay (raw photos), whatever the config ships; "config" is the config as is.
PLAIN = {
    "logit_replay_weight": 0.0,
    "distill_weight": 0.0,
    "bias_correction": "none",
    "fisher_normalise": False,
    "replay_bytes": 0,
}
RECIPES: dict[str, dict] = {
    "naive fine-tune": {**PLAIN, "ewc_lambda": 0.0, "use_replay": False},
    "EWC + replay": PLAIN,
    "+ LwF": {**PLAIN, "distill_weight": 1.0},
    "+ DER++": {**PLAIN, "logit_replay_weight": 0.5},
    "+ weight aligning": {**PLAIN, "bias_correction": "weight_aligning"},
    "+ LwF + DER++ + WA": {
        **PLAIN,
        "distill_weight": 1.0,
        "logit_replay_weight": 0.5,
        "bias_correction": "weight_aligning",
    },
    "+ JPEG replay": {**PLAIN, "replay_bytes": -1},  # -1: the raw replay's bytes, as JPEG (more exemplars)
    "+ DER++ + JPEG replay": {**PLAIN, "logit_replay_weight": 0.5, "replay_bytes": -1},
    "+ DER++ + WA": {**PLAIN, "logit_replay_weight": 0.5, "bias_correction": "weight_aligning"},
    "+ LwF + DER++ + WA + JPEG replay": {
        **PLAIN,
        "distill_weight": 1.0,
        "logit_replay_weight": 0.5,
        "bias_correction": "weight_aligning",
        "replay_bytes": -1,
    },
    "config": {},  # the config's own continual section, as shipped
}
JOINT = "joint retrain"
NEW = ["Heels", "Flats"]


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


def scenario_masks(data: PreparedData, name: str, seed: int) -> list[np.ndarray]:
    """[base, drop 1, ...] row masks of scenario `name`."""
    rows = data.rows
    new = rows["category"].isin(NEW).to_numpy()
    years = pd.to_numeric(rows["year"], errors="coerce").to_numpy() if "year" in rows else None
    if name == "A":
        groups = rows["group"].unique()
        to_drop = set(np.random.default_rng(seed).permutation(groups)[: int(0.3 * len(groups))])
        moved = rows["group"].isin(to_drop).to_numpy()
        return [~new & ~moved, new | moved]
    early = ~(years >= 2013)  # no year: the base catalog
    if name == "B":
        return [early, ~early]
    return [
        early & ~new,
        (years == 2013) | (early & new),
        (years >= 2014) & (years <= 2015),
        years == 2016,
        years >= 2017,
    ]


def class_order(data: PreparedData, masks: list[np.ndarray]) -> list[list[str]]:
    """The label map after each step: the base's categories sorted, then each drop's new ones sorted."""
    classes = sorted(data.rows.loc[masks[0], "category"].unique())
    orders = [classes]
    for mask in masks[1:]:
        classes = classes + sorted(set(data.rows.loc[mask, "category"]) - set(classes))
        orders.append(classes)
    return orders


# Train settings left out of the cache key: where and how fast a model trains, not what it learns (batches cut
# on the device come in the loader's order; a compiled forward computes the same model up to floating-point
# rounding), and settings added later while at the value that trains as before, so that models cached before
# them stay valid.
SPEED_ONLY = ("data_on_device", "compile")
AS_BEFORE = {"pretrained_trainable_layers": None, "cpu_amp": False}  # cpu_amp changes the numbers: in the key when on


def cache_key(cfg: RunConfig, data: PreparedData, classes: list[str], seed: int) -> str:
    """What a trained base or joint model depends on: rows, label order, config sections, seed."""
    sections = {k: getattr(cfg, k).model_dump(mode="json") for k in ("model", "train", "pretrain", "data")}
    for key in SPEED_ONLY:
        sections["train"].pop(key, None)
    for key, value in AS_BEFORE.items():
        if key in sections["train"] and sections["train"][key] == value:
            del sections["train"][key]
    parts = {
        "rows": hashlib.sha256("\n".join(data.rows["product_id"].astype(str)).encode()).hexdigest(),
        "catalog": data.catalog_hash,
        "classes": classes,
        "sections": sections,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class Clock:
    """Wall seconds and process CPU seconds (user + system over all threads) of one timed block;
    `cpu` is None for a model cached before CPU seconds were recorded; `cached` when read from the
    cache (timed in an earlier run, maybe on another machine: `where` says which)."""

    wall: float = 0.0
    cpu: float | None = 0.0
    cached: bool = False
    where: str = ""

    def row(self, prefix: str = "") -> dict:
        timed = {f"{prefix}seconds": self.wall, f"{prefix}cpu_seconds": self.cpu}
        return timed | ({f"{prefix}timed_in": self.where} if self.cached else {})


def machine(cfg: RunConfig) -> str:
    """Where a time was measured: host, training device and torch threads."""
    return f"{platform.node()}, {pick_device(cfg.train.device)}, {torch.get_num_threads()} threads"


@contextmanager
def clocked() -> Iterator[Clock]:
    """Times the block; process_time covers every thread of this process, and training runs here
    (the loaders have no worker processes)."""
    clock, wall, cpu = Clock(), time.perf_counter(), time.process_time()
    yield clock
    clock.wall, clock.cpu = time.perf_counter() - wall, time.process_time() - cpu


def trained(data: PreparedData, cfg: RunConfig, seed: int, cache: Path, label: str) -> tuple[ModelBundle, Clock]:
    """A model trained as `kickvision train` would (photo pretraining first when the config asks),
    and its wall and CPU seconds; from the cache when the same model was trained before."""
    folder = cache / cache_key(cfg, data, data.classes, seed)
    if (folder / "seconds.json").is_file():
        timed = json.loads((folder / "seconds.json").read_text())
        clock = Clock(timed["seconds"], timed.get("cpu_seconds"), cached=True, where=timed.get("machine", "?"))
        cpu = f", {clock.cpu:.0f} CPU s" if clock.cpu is not None else ""
        print(f"  {label}: cached ({folder.name}, trained in {clock.wall:.0f}s{cpu} on {clock.where})", flush=True)
        return load_bundle(folder / "bundle"), clock
    with clocked() as clock:
        encoders = None
        if cfg.pretrain.enabled:
            encoders, _ = pretrain_photos(data, cfg.model, cfg.pretrain, cfg.train, seed, progress=False)
        tokenizer = _tokenizer(cfg)
        bundle = fit(
            data,
            cfg.model,
            cfg.train,
            tokenizer,
            cfg.data.max_title_tokens,
            seed=seed,
            progress=False,
            text_columns=cfg.data.text_columns,
            photo_encoders=encoders,
        ).bundle
    save_bundle(bundle, folder / "bundle")
    (folder / "seconds.json").write_text(json.dumps(clock.row() | {"label": label, "machine": machine(cfg)}))
    print(f"  {label}: trained in {clock.wall:.0f}s ({clock.cpu:.0f} CPU s)", flush=True)
    return bundle, clock


def relative_times(results: list[dict], joint: Clock) -> None:
    """Each result's wall and CPU time as a fraction of the joint retrain's (CPU: when both have it)."""
    for r in results:
        r["time_vs_joint"] = r["seconds"] / joint.wall
        if r.get("cpu_seconds") is not None and joint.cpu:
            r["cpu_vs_joint"] = r["cpu_seconds"] / joint.cpu


def _tokenizer(cfg: RunConfig):
    from kickvision.model.encoders import build_tokenizer

    return build_tokenizer(cfg.model.text_encoder)


def top1_on(bundle: ModelBundle, data: PreparedData, mask: np.ndarray) -> float:
    """Top-1 of `bundle` on the rows `mask` of `data` (labelled against `bundle.classes`)."""
    idx = np.flatnonzero(mask)
    if not len(idx):
        return float("nan")
    logits, _ = predict_logits(bundle.model, data, idx)
    labels = data.rows["category"].to_numpy()[idx]
    return float(np.mean(np.array(bundle.classes)[logits.argmax(1)] == labels))


def split_scores(bundle: ModelBundle, data: PreparedData, old: np.ndarray, new: np.ndarray, prefix: str) -> dict:
    """old / new / overall top-1 of `bundle` on the val and the test split (val_ and test_ keys); for
    each category among `new`, its recall there (`test_recall_Flats`) and what its products are
    predicted as (`test_predicted_Flats`: share per class): where the new products' errors sit."""
    scores = {}
    categories = data.rows["category"].to_numpy()
    for split in ("val", "test"):
        in_split = (data.rows["split"] == split).to_numpy()
        scores[f"{prefix}{split}_old"] = top1_on(bundle, data, in_split & old)
        scores[f"{prefix}{split}_overall"] = top1_on(bundle, data, in_split & (old | new))
        idx = np.flatnonzero(in_split & new)
        if not len(idx):
            scores[f"{prefix}{split}_new"] = float("nan")
            continue
        logits, _ = predict_logits(bundle.model, data, idx)  # top1_on's pass over the same rows, kept for the detail
        predicted = np.array(bundle.classes)[logits.argmax(1)]
        scores[f"{prefix}{split}_new"] = float(np.mean(predicted == categories[idx]))
        for category in sorted(set(categories[idx])):
            mine = predicted[categories[idx] == category]
            scores[f"{prefix}{split}_recall_{category}"] = float(np.mean(mine == category))
            shares = pd.Series(mine).value_counts(normalize=True)
            scores[f"{prefix}{split}_predicted_{category}"] = {str(k): round(float(v), 4) for k, v in shares.items()}
    return scores


def without_prior_shift(bundle: ModelBundle, drop: PreparedData, tau: float) -> ModelBundle:
    """`bundle` with the update's logit adjustment (τ·log of the drop's training prior) taken out of
    its classifier's biases: the update as it would be without it, at no second training."""
    model = copy.deepcopy(bundle.model)
    shift_classifier_bias(model, class_prior(drop.labels()[drop.indices("train")], len(drop.classes)), -tau)
    unshifted = copy.copy(bundle)
    unshifted.model = model
    return unshifted


def forgetting(scores: dict, val_old_before: float, test_old_before: float) -> dict:
    """Old-category top-1 lost since the base model, on the val and the test split."""
    return {
        "val_forgetting": val_old_before - scores["val_old"],
        "test_forgetting": test_old_before - scores["test_old"],
    }


def recipe_settings(recipe: str) -> dict:
    """A method's continual settings: a recipe of RECIPES, or one with settings changed,
    `NAME[key=value;key=value]` (values as YAML scalars), e.g. `config[batch_size=64;epochs=4]`."""
    name, bracket, changes = recipe.partition("[")
    if name not in RECIPES or (bracket and not changes.endswith("]")):
        raise ValueError(f"unknown method {recipe!r}; choose from {[*RECIPES, JOINT]}, or NAME[key=value;...]")
    assignments = [a for a in changes[:-1].split(";") if a.strip()] if bracket else []
    return RECIPES[name] | dotted_overrides([a.strip() for a in assignments])


def recipe_config(cfg: RunConfig, recipe: str, data: PreparedData):
    """The config's continual section with the recipe's settings (validated); replay_bytes -1 = the
    bytes the raw replay memory takes (replay_per_class photos per category of this catalog), spent on JPEGs."""
    update = recipe_settings(recipe)
    if update.get("replay_bytes") == -1:
        update["replay_bytes"] = cfg.continual.replay_per_class * len(data.classes) * int(data.images[0].nbytes)
    return type(cfg.continual).model_validate(cfg.continual.model_dump() | update)


def with_memory(champion: ModelBundle, data: PreparedData, c, seed: int, states: dict) -> ModelBundle:
    """`champion` carrying the replay memory recipe `c` keeps (chosen at registration, so per recipe and seed)."""
    key = (c.replay_per_class, c.replay_bytes, c.replay_jpeg_quality, c.validation_per_class, seed)
    if key not in states:
        states[key] = continual_state_after_training(champion.model, data, c, seed)
    bundle = copy.copy(champion)
    bundle.continual = states[key]
    return bundle


def run_single_drop(
    name: str, data: PreparedData, cfg: RunConfig, seed: int, recipes: list[str], cache: Path, update_seeds: list[int]
) -> list:
    base_mask, drop_mask = scenario_masks(data, name, seed)
    base_classes, all_classes = class_order(data, [base_mask, drop_mask])
    base = subset(data, base_mask, base_classes, "base")
    drop = subset(data, drop_mask, all_classes, "drop")
    joint = subset(data, base_mask | drop_mask, all_classes, "joint")
    everything = subset(data, np.ones(len(data.rows), bool), all_classes, "all")
    print(
        f"\nscenario {name}: base {base.split_counts()}, drop {drop.split_counts()}, new classes "
        f"{all_classes[len(base_classes) :] or 'none'}",
        flush=True,
    )
    champion, base_clock = trained(base, cfg, seed, cache, "base model")
    states: dict = {}
    champion = with_memory(champion, base, cfg.continual, seed, states)
    old = base_mask
    new = (
        drop_mask & ~data.rows["category"].isin(base_classes).to_numpy()
        if len(all_classes) > len(base_classes)
        else drop_mask
    )
    before = split_scores(champion, everything, old, new, "before_")

    results = []
    for recipe, update_seed in [(r, u) for r in recipes if r != JOINT for u in update_seeds]:
        c = recipe_config(cfg, recipe, base)
        start = with_memory(champion, base, c, update_seed, states)
        with clocked() as clock:
            result = update_bundle(start, drop, c, cfg.train, seed=update_seed, progress=False)
        variants = [(recipe, result.bundle)]
        if tau := result.metrics.get("update_logit_adjustment"):  # the same weights without the prior shift
            variants.append((f"{recipe} (τ 0)", without_prior_shift(result.bundle, drop, tau)))
        for method, updated in variants:
            metrics = evaluate_update(start, updated, drop) | {"replay_exemplars": len(start.continual.replay)}
            metrics |= result.metrics  # e.g. weight aligning's scale per class head
            if updated is not result.bundle:  # the shift taken out: its τ and score are not this model's
                metrics = {k: v for k, v in metrics.items() if k != "update_val_top1_adjusted"}
                metrics["update_logit_adjustment"] = 0.0
            promoted, reason = update_gate(metrics, c.forgetting_tolerance)
            scores = split_scores(updated, everything, old, new, "")
            scores |= forgetting(scores, before["before_val_old"], before["before_test_old"])
            results.append(
                {"scenario": name, "method": method, "update_seed": update_seed, "promoted": promoted, "gate": reason}
                | clock.row()
                | scores
                | metrics
                | {"recipe": c.model_dump(mode="json"), "history": result.history}
            )
            print(_row(results[-1]), flush=True)

    if JOINT in recipes:
        retrained, clock = trained(joint, cfg, seed, cache, "joint retrain")
        scores = split_scores(retrained, everything, old, new, "")
        scores |= forgetting(scores, before["before_val_old"], before["before_test_old"])
        results.append({"scenario": name, "method": JOINT, "promoted": None} | clock.row() | scores)
        print(_row(results[-1]), flush=True)
        relative_times(results, clock)
    for r in results:
        r |= before | base_clock.row("base_train_")
    return results


def run_chain(
    data: PreparedData, cfg: RunConfig, seed: int, recipes: list[str], cache: Path, update_seeds: list[int]
) -> list:
    masks = scenario_masks(data, "C", seed)
    orders = class_order(data, masks)
    everything = subset(data, np.ones(len(data.rows), bool), orders[-1], "all")
    base = subset(data, masks[0], orders[0], "chain-base")
    print(f"\nscenario C (chain): base {base.split_counts()}, drops {[int(m.sum()) for m in masks[1:]]}", flush=True)
    start, _ = trained(base, cfg, seed, cache, "chain base model")
    base_old = split_scores(start, everything, masks[0], np.zeros(len(masks[0]), bool), "")
    results, states = [], {}
    for recipe, update_seed in [(r, u) for r in recipes if r != JOINT for u in update_seeds]:
        c = recipe_config(cfg, recipe, base)
        champion, offered = with_memory(start, base, c, update_seed, states), masks[0].copy()
        for step, mask in enumerate(masks[1:], start=1):
            offered |= mask  # new = every drop so far, learnt or refused: what the catalog now holds
            drop = subset(data, mask, orders[step], f"chain-{step}")
            with clocked() as clock:
                result = update_bundle(champion, drop, c, cfg.train, seed=update_seed, progress=False)
            updated = result.bundle
            promoted, reason = update_gate(evaluate_update(champion, updated, drop), c.forgetting_tolerance)
            if promoted:
                champion = updated
            scores = split_scores(champion, everything, masks[0], offered & ~masks[0], "")
            scores |= forgetting(scores, base_old["val_old"], base_old["test_old"])
            results.append(
                {"scenario": f"C{step}", "method": recipe, "update_seed": update_seed, "promoted": promoted}
                | {"gate": reason}
                | clock.row()
                | scores
                | result.metrics
                | {"history": result.history}
            )
            print(_row(results[-1]), flush=True)
    if JOINT in recipes:
        joint = subset(data, np.logical_or.reduce(masks), orders[-1], "chain-joint")
        retrained, clock = trained(joint, cfg, seed, cache, "joint retrain")
        scores = split_scores(retrained, everything, masks[0], ~masks[0], "")
        scores |= forgetting(scores, base_old["val_old"], base_old["test_old"])
        results.append({"scenario": "C4", "method": JOINT, "promoted": None} | clock.row() | scores)
        print(_row(results[-1]), flush=True)
        relative_times(results, clock)
    return results


def _seed(r: dict) -> str:
    return f"seed {r['update_seed']} " if "update_seed" in r else ""


def seed_summary(results: list[dict]) -> list[str]:
    """Markdown rows: per scenario and update recipe over its update seeds, mean and standard error of
    the mean of test new / overall top-1, forgetting, validation overall top-1 and wall seconds."""
    lines = ["| scen. | method | seeds | new top-1 | overall top-1 | forgetting | val overall | wall s | promoted |"]
    lines.append("|" + "---|" * 9)
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if "update_seed" in r:
            groups.setdefault((r["scenario"], r["method"]), []).append(r)

    def cell(rows: list[dict], key: str, fmt: str = ".4f") -> str:
        values = np.array([r[key] for r in rows], float)
        se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
        return f"{values.mean():{fmt}} ± {se:{fmt}}"

    for (scenario, method), rows in groups.items():
        promoted = sum(bool(r["promoted"]) for r in rows)
        lines.append(
            f"| {scenario} | {method} | {len(rows)} | {cell(rows, 'test_new')} | {cell(rows, 'test_overall')} | "
            f"{cell(rows, 'test_forgetting')} | {cell(rows, 'val_overall')} | {cell(rows, 'seconds', '.0f')} | "
            f"{promoted}/{len(rows)} |"
        )
    return lines


def _row(r: dict) -> str:
    promoted = {True: "promoted", False: "refused", None: ""}[r["promoted"]]
    cpu = f" ({r['cpu_seconds']:.0f} CPU s)" if r.get("cpu_seconds") is not None else ""
    return (
        f"  {r['scenario']:3s} {r['method']:20s} {_seed(r)}test old {r['test_old']:.4f} new {r['test_new']:.4f} "
        f"overall {r['test_overall']:.4f} forgetting {r['test_forgetting']:+.4f} | val old {r['val_old']:.4f} "
        f"new {r['val_new']:.4f} overall {r['val_overall']:.4f} | {r['seconds']:.0f}s{cpu} {promoted}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", help="catalog drop (default: the demo catalog, generated)")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--epochs", type=int, help="override train.epochs (base model and joint retrain)")
    parser.add_argument("--update-epochs", type=int, help="override continual.epochs")
    parser.add_argument(
        "--scenarios", default="A,B,C", help="A (class-incremental), B (temporal), C (chain); B, C need a year column"
    )
    parser.add_argument(
        "--methods",
        default=",".join([*RECIPES, JOINT]),
        help=f"comma-separated: {', '.join(RECIPES)}, {JOINT}; NAME[key=value;...] changes a recipe's settings",
    )
    parser.add_argument(
        "--update-seeds",
        type=int,
        nargs="+",
        help="run every update recipe once per seed (its memory and training order); base and joint models keep "
        "the config's seed; a summary gives mean ± standard error per recipe (default: the config's seed)",
    )
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument(
        "--cache", default=str(Path(__file__).parent / ".cache" / "continual"), help="trained base/joint models"
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/continual_<catalog>_<config>.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = split_methods(args.methods)

    overrides: dict = {"continual": {"holdout_per_class": 100_000}}  # the whole base test split is "old"
    if args.epochs:
        overrides["train"] = {"epochs": args.epochs}
    if args.update_epochs:
        overrides["continual"]["epochs"] = args.update_epochs
    cfg = load_config(args.config, overrides=deep_merge(overrides, dotted_overrides(args.set)))
    data, _, name = prepared_catalog(args.catalog, cfg)
    try:  # every method's settings checked before hours of training
        [recipe_config(cfg, m, data) for m in methods if m != JOINT]
    except (ValueError, ConfigError, ValidationError) as exc:
        parser.error(str(exc))
    scenarios = [s for s in args.scenarios.split(",") if s == "A" or "year" in data.rows]
    cache = Path(args.cache)
    update_seeds = args.update_seeds or [cfg.seed]
    started = time.perf_counter()
    results = []
    for s in scenarios:
        if s == "C":
            results += run_chain(data, cfg, cfg.seed, methods, cache, update_seeds)
        else:
            results += run_single_drop(s, data, cfg, cfg.seed, methods, cache, update_seeds)
    print(
        f"\n{name}: {cfg.name} config, seed {cfg.seed}, train epochs {cfg.train.epochs}, update epochs "
        f"{cfg.continual.epochs}, λ {cfg.continual.ewc_lambda}, replay {cfg.continual.replay_per_class}/class, "
        f"{torch.get_num_threads()} threads, {time.perf_counter() - started:.0f}s"
    )
    header = [
        "scen.",
        "method",
        "update seed",
        "old top-1",
        "new top-1",
        "overall top-1",
        "forgetting",
        "val overall",
        "wall s",
    ]
    header += ["wall vs joint", "CPU s", "CPU vs joint", "gate"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        vs_joint = f"{r['time_vs_joint']:.2f}" if "time_vs_joint" in r else "-"
        cpu = f"{r['cpu_seconds']:.0f}" if r.get("cpu_seconds") is not None else "-"
        cpu_vs_joint = f"{r['cpu_vs_joint']:.2f}" if "cpu_vs_joint" in r else "-"
        gate = {True: "promoted", False: "refused", None: "-"}[r["promoted"]]
        print(
            f"| {r['scenario']} | {r['method']} | {r.get('update_seed', '-')} | {r['test_old']:.4f} | "
            f"{r['test_new']:.4f} | "
            f"{r['test_overall']:.4f} | {r['test_forgetting']:+.4f} | {r['val_overall']:.4f} | {r['seconds']:.0f} | "
            f"{vs_joint} | {cpu} | {cpu_vs_joint} | {gate} |"
        )
    if len(update_seeds) > 1:
        print("\nOver the update seeds (mean ± standard error of the mean):")
        print("\n".join(seed_summary(results)))
    meta = {"catalog": name, "config": cfg.name, "seed": cfg.seed, "update_seeds": update_seeds}
    meta["train_epochs"] = cfg.train.epochs
    meta["machine"] = machine(cfg)
    result = {"meta": meta | {"continual": cfg.continual.model_dump()}, "results": results}
    write_result(result, args.out, f"continual_{name}_{cfg.name}.json")


if __name__ == "__main__":
    main()
