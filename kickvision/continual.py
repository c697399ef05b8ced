"""Learning from catalog drops without forgetting: online EWC plus exemplar replay.

What every model carries for its next update (`ContinualState`, saved inside the bundle):

- the diagonal Fisher information of its parameters on its own training data; the EWC anchor θ*
  is the model's own weights, so it is not stored twice;
- replay exemplars: a few products per category (pixels, tokens and metadata, not file
  references that may be gone), chosen by herding on the embedding (iCaRL);
- a holdout: old test products, never trained on, on which forgetting is measured.

An update grows the classifier for new categories (old rows untouched), trains on the drop plus the
replay exemplars with loss CE + λ/2·Σ Fᵢ(θᵢ − θ*ᵢ)², then recomputes the Fisher on what it trained
on and accumulates it with decay γ (online EWC, Schwarz et al. 2018: F ← γ·F_old + F_new), and
refreshes replay and holdout, so a chain of drops keeps working.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from kickvision.config import ContinualConfig, TrainConfig
from kickvision.data import PreparedData, images_to_tensor, load_image_array, tokenize_titles
from kickvision.errors import RegistryError

log = logging.getLogger(__name__)

EXEMPLAR_COLUMNS = ("product_id", "title", "category", "image", "base_colour")


# ---------------------------------------------------------------- stored products
@dataclass
class ExemplarSet:
    """Encoded products kept inside a model bundle: uint8 pixels, token ids and their metadata."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    input_ids: np.ndarray  # int64 [N, L]
    attention_mask: np.ndarray  # int64 [N, L]
    rows: pd.DataFrame  # product_id, title, category (+ image path and base_colour when known)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_prepared(cls, data: PreparedData, indices: np.ndarray) -> ExemplarSet:
        indices = np.asarray(indices, dtype=np.int64)
        rows = data.rows_with_image_paths(indices)
        columns = [c for c in EXEMPLAR_COLUMNS if c in rows]
        return cls(
            data.images[indices],
            data.input_ids[indices],
            data.attention_mask[indices],
            rows[columns].fillna("").astype(str).reset_index(drop=True),
        )

    def take(self, indices: np.ndarray) -> ExemplarSet:
        indices = np.asarray(indices, dtype=np.int64)
        return ExemplarSet(
            self.images[indices],
            self.input_ids[indices],
            self.attention_mask[indices],
            self.rows.iloc[indices].reset_index(drop=True),
        )

    def concat(self, other: ExemplarSet) -> ExemplarSet:
        return ExemplarSet(
            np.concatenate([self.images, other.images]),
            np.concatenate([self.input_ids, other.input_ids]),
            np.concatenate([self.attention_mask, other.attention_mask]),
            pd.concat([self.rows, other.rows], ignore_index=True).fillna(""),
        )

    def labels(self, classes: list[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[c] for c in self.rows["category"]], dtype=np.int64)

    def as_prepared(self, classes: list[str], split: str = "train") -> PreparedData:
        """A PreparedData view, so the training and prediction loops take stored products as they are."""
        rows = self.rows.assign(label=self.labels(classes), split=split)
        return PreparedData(rows, list(classes), self.images, self.input_ids, self.attention_mask, "", "")

    def save(self, folder: Path, name: str) -> None:
        tensors = {
            "images": torch.from_numpy(np.ascontiguousarray(self.images)),
            "input_ids": torch.from_numpy(np.ascontiguousarray(self.input_ids)),
            "attention_mask": torch.from_numpy(np.ascontiguousarray(self.attention_mask)),
        }
        save_file(tensors, str(folder / f"{name}.safetensors"))
        (folder / f"{name}.json").write_text(json.dumps(self.rows.to_dict(orient="records")))

    @classmethod
    def load(cls, folder: Path, name: str) -> ExemplarSet:
        tensors = load_file(str(folder / f"{name}.safetensors"))
        rows = pd.DataFrame(json.loads((folder / f"{name}.json").read_text()), columns=None)
        if rows.empty:
            rows = pd.DataFrame(columns=["product_id", "title", "category"])
        return cls(tensors["images"].numpy(), tensors["input_ids"].numpy(), tensors["attention_mask"].numpy(), rows)


@dataclass
class ContinualState:
    """What a model needs for its next catalog-drop update (see the module docstring)."""

    fisher: dict[str, torch.Tensor]  # parameter name -> diagonal Fisher, same shape as the parameter
    replay: ExemplarSet
    holdout: ExemplarSet
    updates: int = 0  # how many drops were folded into the Fisher so far
    info: dict = field(default_factory=dict)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.fisher.items()}, str(folder / "fisher.safetensors"))
        self.replay.save(folder, "replay")
        self.holdout.save(folder, "holdout")
        (folder / "continual.json").write_text(json.dumps({"updates": self.updates, "info": self.info}))

    @classmethod
    def load(cls, folder: str | Path) -> ContinualState:
        folder = Path(folder)
        meta = json.loads((folder / "continual.json").read_text())
        return cls(
            load_file(str(folder / "fisher.safetensors")),
            ExemplarSet.load(folder, "replay"),
            ExemplarSet.load(folder, "holdout"),
            meta.get("updates", 0),
            meta.get("info", {}),
        )


# ---------------------------------------------------------------- EWC
def diagonal_fisher(
    model: torch.nn.Module, data: PreparedData, indices: np.ndarray, max_samples: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher E[(∂ log p(y|x) / ∂θ)²] over up to `max_samples` of `indices`.

    Per-product gradients (batch of one, eval mode), so it is the Fisher and not the square of a
    batch-mean gradient.
    """
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(np.asarray(indices))[:max_samples]
    device = next(model.parameters()).device
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, device="cpu") for n, p in params.items()}
    labels = data.labels()
    model.eval()
    for j in chosen:
        out = model(
            images_to_tensor(torch.from_numpy(data.images[j : j + 1].copy()).to(device)),
            torch.from_numpy(data.input_ids[j : j + 1]).to(device),
            torch.from_numpy(data.attention_mask[j : j + 1]).to(device),
        )
        loss = F.cross_entropy(out.logits.float(), torch.tensor([labels[j]], device=device))
        model.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float().cpu() ** 2
    model.zero_grad(set_to_none=True)
    return {n: f / max(len(chosen), 1) for n, f in fisher.items()}


class EWCPenalty:
    """λ/2 · Σ Fᵢ (θᵢ − θ*ᵢ)² over the parameters the Fisher covers.

    A parameter that grew along its first axis since the anchor (the classifier after new
    categories were added) is penalised on its old slice only: new rows are free to learn.
    `add_gradients()` adds the penalty's exact gradient λ·F·(θ − θ*) to `.grad` in place, which
    costs a few fused vector ops instead of an autograd graph over every weight (the text
    encoder's token embeddings alone are millions of them).
    """

    def __init__(
        self, model: torch.nn.Module, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], lam: float
    ):
        self.lam = lam
        device = next(model.parameters()).device
        self.terms: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []
        params = dict(model.named_parameters())
        for name, weight in fisher.items():
            param, theta_star = params.get(name), anchor.get(name)
            if param is None or theta_star is None or theta_star.shape != weight.shape:
                continue
            if param.shape != weight.shape and not _grown_along_rows(param.shape, weight.shape):
                continue
            self.terms.append((param, weight.to(device), theta_star.detach().to(device)))

    def _old_slice(self, param: torch.Tensor, theta_star: torch.Tensor) -> torch.Tensor:
        return param[: theta_star.shape[0]] if param.shape != theta_star.shape else param

    def __call__(self) -> torch.Tensor:
        """The penalty's value (differentiable, for tests and logging)."""
        total = torch.zeros(())
        for param, weight, theta_star in self.terms:
            current = self._old_slice(param, theta_star)
            total = total + (weight * (current.float() - theta_star.float()) ** 2).sum().cpu()
        return 0.5 * self.lam * total

    @torch.no_grad()
    def add_gradients(self) -> None:
        for param, weight, theta_star in self.terms:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            grad = self._old_slice(param.grad, theta_star)
            grad.add_(weight * (self._old_slice(param, theta_star) - theta_star), alpha=self.lam)


def _grown_along_rows(new: torch.Size, old: torch.Size) -> bool:
    return len(new) == len(old) and new[0] >= old[0] and tuple(new[1:]) == tuple(old[1:])


def _grown_linear(old: torch.nn.Linear, n_classes: int) -> torch.nn.Linear:
    grown = torch.nn.Linear(old.in_features, n_classes, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        torch.nn.init.normal_(grown.weight, std=old.weight.std().item() if old.weight.numel() > 1 else 0.02)
        grown.bias.fill_(old.bias.mean().item())  # new classes start at the old classes' mean prior
        grown.weight[: old.out_features] = old.weight
        grown.bias[: old.out_features] = old.bias
    return grown


def grow_classifier(model: torch.nn.Module, n_classes: int) -> None:
    """Give `model.classifier` (and the per-branch heads) `n_classes` outputs, keeping the old rows
    (and so the old logits) exactly."""
    old = model.classifier
    if n_classes == old.out_features:
        return
    if n_classes < old.out_features:
        raise ValueError(f"cannot shrink the classifier from {old.out_features} to {n_classes} classes")
    model.classifier = _grown_linear(old, n_classes)
    if getattr(model, "branch_classifiers", None) is not None:
        model.branch_classifiers = torch.nn.ModuleList(_grown_linear(h, n_classes) for h in model.branch_classifiers)


def grow_fisher(fisher: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Pad Fisher entries with zeros where the model's parameter grew (new classifier rows)."""
    params = dict(model.named_parameters())
    grown = {}
    for name, weight in fisher.items():
        param = params.get(name)
        if param is None:
            continue
        if param.shape != weight.shape and _grown_along_rows(param.shape, weight.shape):
            padded = torch.zeros(param.shape, dtype=weight.dtype)
            padded[: weight.shape[0]] = weight
            weight = padded
        if param.shape == weight.shape:
            grown[name] = weight
    return grown


# ---------------------------------------------------------------- exemplars
def herding(embeddings: np.ndarray, m: int) -> np.ndarray:
    """iCaRL herding: greedily pick m rows whose running mean best approximates the class mean."""
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    target = x.mean(0)
    chosen: list[int] = []
    running = np.zeros_like(target)
    available = np.ones(len(x), dtype=bool)
    for k in range(1, min(m, len(x)) + 1):
        candidate_means = (running + x) / k
        distance = np.linalg.norm(candidate_means - target, axis=1)
        distance[~available] = np.inf
        best = int(np.argmin(distance))
        chosen.append(best)
        available[best] = False
        running += x[best]
    return np.array(chosen, dtype=np.int64)


def select_exemplars(
    embeddings: np.ndarray, categories: np.ndarray, per_class: int, method: str = "herding", seed: int = 0
) -> np.ndarray:
    """Indices of up to `per_class` exemplars per category (herding on embeddings, or at random)."""
    rng = np.random.default_rng(seed)
    picked = []
    for category in sorted(set(categories)):
        members = np.flatnonzero(categories == category)
        if method == "herding":
            picked.append(members[herding(embeddings[members], per_class)])
        else:
            picked.append(rng.permutation(members)[:per_class])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def cap_per_class(categories: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """A random subset with at most `per_class` indices per category (sorted)."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(categories == c))[:per_class] for c in sorted(set(categories))]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def build_continual_state(
    model: torch.nn.Module,
    data: PreparedData,
    train_indices: np.ndarray,
    holdout: ExemplarSet,
    cfg: ContinualConfig,
    seed: int,
    previous: ContinualState | None = None,
) -> ContinualState:
    """Fisher, replay and holdout for `model`, which was just trained on `train_indices` of `data`.

    With `previous` (an update), the Fisher is accumulated online and `data` already contains the
    old replay exemplars among `train_indices`.
    """
    from kickvision.training import predict_logits

    fisher = diagonal_fisher(model, data, train_indices, cfg.fisher_samples, seed)
    updates = 0
    if previous is not None:
        old = grow_fisher(previous.fisher, model)
        fisher = {n: cfg.fisher_decay * old[n] + f if n in old else f for n, f in fisher.items()}
        updates = previous.updates + 1
    _, embeddings = predict_logits(model, data, train_indices)
    categories = data.rows["category"].to_numpy()[train_indices]
    chosen = select_exemplars(embeddings, categories, cfg.replay_per_class, cfg.replay_selection, seed)
    replay = ExemplarSet.from_prepared(data, train_indices[chosen])
    info = {"fisher_samples": min(cfg.fisher_samples, len(train_indices)), "replay_selection": cfg.replay_selection}
    return ContinualState(fisher, replay, holdout, updates, info)


def initial_holdout(data: PreparedData, cfg: ContinualConfig, seed: int) -> ExemplarSet:
    """Up to `holdout_per_class` test products per category of a freshly trained model's catalog."""
    test = data.indices("test")
    keep = cap_per_class(data.rows["category"].to_numpy()[test], cfg.holdout_per_class, seed)
    return ExemplarSet.from_prepared(data, test[keep])


def continual_state_after_training(model: torch.nn.Module, data: PreparedData, cfg: ContinualConfig, seed: int):
    """The state a freshly trained model is registered with: Fisher and replay from its train split."""
    return build_continual_state(model, data, data.indices("train"), initial_holdout(data, cfg, seed), cfg, seed)


# ---------------------------------------------------------------- the update
@dataclass
class UpdateResult:
    bundle: object  # ModelBundle (typed loosely: bundle.py imports this module)
    history: list[dict[str, float]]


def update_bundle(
    champion,
    drop: PreparedData,
    cfg: ContinualConfig,
    train_cfg: TrainConfig,
    seed: int = 42,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> UpdateResult:
    """The champion, updated on the drop's train split (+ replay) under the EWC penalty.

    `drop` must be prepared against the champion's label map (old classes first, in order).
    """
    from kickvision.bundle import ModelBundle
    from kickvision.training import (
        _loader,
        classification_scores,
        pick_device,
        predict_logits,
        seed_everything,
        train_one_epoch,
    )

    state: ContinualState | None = champion.continual
    if state is None:
        raise RegistryError(
            "the champion carries no Fisher/replay state (it was trained before catalog-drop updates existed); "
            "retrain it with `kickvision train`"
        )
    if list(drop.classes[: len(champion.classes)]) != list(champion.classes):
        raise ValueError("the drop was not prepared against the champion's label map")
    seed_everything(seed)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    device = pick_device(train_cfg.device)

    model = copy.deepcopy(champion.model)
    grow_classifier(model, len(drop.classes))
    model.to(device)
    anchor = {n: p.detach().cpu().clone() for n, p in champion.model.named_parameters()}

    # Training set: the drop's train split, plus the replay exemplars (old categories' memory).
    drop_train = ExemplarSet.from_prepared(drop, drop.indices("train"))
    train_set = drop_train.concat(state.replay) if cfg.use_replay and len(state.replay) else drop_train
    train_data = train_set.as_prepared(drop.classes)
    train_idx = np.arange(len(train_set))

    update_train_cfg = train_cfg.model_copy(
        update={"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "balanced_sampling": True}
    )
    loader = _loader(train_data, train_idx, update_train_cfg, train=True, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=max(1, cfg.epochs * len(loader)), pct_start=0.2
    )
    # The penalty takes the Fisher at the anchor's shapes: the grown classifier's new rows stay free.
    penalty = EWCPenalty(model, state.fisher, anchor, cfg.ewc_lambda) if cfg.ewc_lambda else None

    val_idx = drop.indices("val")
    history = []
    for epoch in range(1, cfg.epochs + 1):
        stats = train_one_epoch(
            model,
            loader,
            optimizer,
            scheduler,
            update_train_cfg,
            device,
            penalty.add_gradients if penalty is not None else None,
            f"update {epoch}/{cfg.epochs}",
            progress,
        )
        if penalty is not None:
            with torch.no_grad():
                stats["ewc_penalty"] = float(penalty())
        val_logits, _ = predict_logits(model, drop, val_idx, device=device)
        val = classification_scores(drop.labels()[val_idx], val_logits.argmax(1))
        metrics = {**stats, "val_top1": val["top1"], "val_macro_f1": val["macro_f1"]}
        history.append({"epoch": epoch, **metrics})
        log.info("update epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if on_epoch_end:
            on_epoch_end(epoch, metrics)
    model.to("cpu").eval()

    # Memory for the next drop: Fisher on what this update trained on, replay and holdout refreshed.
    merged = ExemplarSet.from_prepared(drop, drop.indices("test"))
    holdout = state.holdout.concat(merged) if len(merged) else state.holdout
    holdout = holdout.take(cap_per_class(holdout.rows["category"].to_numpy(), cfg.holdout_per_class, seed))
    replay_pool = drop_train.concat(state.replay).as_prepared(drop.classes)
    new_state = build_continual_state(
        model, replay_pool, np.arange(len(replay_pool.rows)), holdout, cfg, seed, previous=state
    )
    info = {
        **{k: v for k, v in champion.info.items() if k not in ("temperature",)},
        "catalog_hash": drop.catalog_hash,
        "catalog_hashes": [
            *champion.info.get("catalog_hashes", [champion.info.get("catalog_hash")]),
            drop.catalog_hash,
        ],
        "updated_from": champion.info.get("registered_version"),
        "new_classes": [c for c in drop.classes if c not in champion.classes],
    }
    bundle = ModelBundle(model, champion.tokenizer, list(drop.classes), champion.max_title_tokens, info)
    bundle.continual = new_state
    return UpdateResult(bundle, history)


def evaluate_update(before, after, drop: PreparedData) -> dict[str, float]:
    """Old-category, new and overall top-1 of the champion (before) and the updated model (after).

    old: the champion's holdout (its catalogs' test products, never trained on);
    new: the drop's test products of categories the champion did not know, or, when the drop brings
    no new category, all its test products; combined: holdout ∪ drop test.
    """
    from kickvision.training import predict_arrays

    holdout: ExemplarSet = before.continual.holdout
    drop_test = ExemplarSet.from_prepared(drop, drop.indices("test"))

    def top1(bundle, items: ExemplarSet) -> np.ndarray:
        if not len(items):
            return np.zeros(0, dtype=bool)
        logits, _ = predict_arrays(bundle.model, items.images, items.input_ids, items.attention_mask)
        return logits.argmax(1) == items.labels(after.classes)

    old_before, old_after = top1(before, holdout), top1(after, holdout)
    drop_before, drop_after = top1(before, drop_test), top1(after, drop_test)
    is_new = ~drop_test.rows["category"].isin(before.classes).to_numpy() if len(drop_test) else np.zeros(0, bool)
    new_mask = is_new if is_new.any() else np.ones(len(drop_test), dtype=bool)

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if len(x) else float("nan")

    metrics = {
        "update_old_top1_before": mean(old_before),
        "update_old_top1_after": mean(old_after),
        "update_new_top1": mean(drop_after[new_mask]),
        "update_drop_top1": mean(drop_after),
        "update_combined_top1_before": mean(np.concatenate([old_before, drop_before])),
        "update_combined_top1_after": mean(np.concatenate([old_after, drop_after])),
        "update_holdout_products": float(len(holdout)),
        "update_drop_test_products": float(len(drop_test)),
        "update_new_classes": float(len(after.classes) - len(before.classes)),
    }
    metrics["update_forgetting"] = metrics["update_old_top1_before"] - metrics["update_old_top1_after"]
    return metrics


def rebuild_index(bundle, old_index, drop: PreparedData, max_pixels: int = 40_000_000):
    """The recommendation index re-embedded by the updated model: old products plus the drop's.

    Old products are re-embedded from their stored image path when that file is still readable,
    and from their title alone otherwise (modality dropout keeps title-only embeddings meaningful).
    Returns (index, counts).
    """
    from kickvision.recommend import make_index
    from kickvision.training import predict_arrays, predict_logits

    _, drop_embeddings = predict_logits(bundle.model, drop, np.arange(len(drop.rows)))
    drop_rows = drop.rows_with_image_paths()
    counts = {"index_drop_products": len(drop_rows), "index_old_with_image": 0, "index_old_title_only": 0}
    if old_index is None or not len(old_index):
        return make_index(drop_embeddings, drop_rows), counts
    old = old_index.items[~old_index.items["product_id"].isin(drop_rows["product_id"].astype(str))]
    size = bundle.model_config.image_size
    images = np.full((len(old), size, size, 3), 255, dtype=np.uint8)
    has_image = np.zeros(len(old), dtype=bool)
    for i, path in enumerate(old["image"]):
        try:
            images[i] = load_image_array(path, size, max_pixels)
            has_image[i] = True
        except (OSError, ValueError):
            pass  # the old drop folder is gone: this product is embedded from its title
    ids, mask = tokenize_titles(bundle.tokenizer, old["title"].tolist(), bundle.max_title_tokens)
    _, old_embeddings = predict_arrays(bundle.model, images, ids, mask, use_image=has_image)
    counts["index_old_with_image"] = int(has_image.sum())
    counts["index_old_title_only"] = int((~has_image).sum())
    embeddings = np.concatenate([old_embeddings, drop_embeddings])
    rows = pd.concat([old, drop_rows.astype(str)], ignore_index=True)
    return make_index(embeddings, rows), counts
