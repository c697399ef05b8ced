"""Learning a catalog drop on top of the champion without forgetting.

An update grows the classifier for new categories (old rows untouched) and trains on the drop plus
the replay exemplars the champion carries, with what the config's `continual` section switches on:

- EWC: the penalty λ/2·Σ Fᵢ(θᵢ − θ*ᵢ)² as a gradient hook of the training engine (F optionally
  divided by its mean, so λ means the same across models);
- DER++ logit replay and LwF distillation (train/losses.py) towards the champion's logits, computed
  once before training on every training row (fused head, photos un-augmented): MSE on the replay
  exemplars, soft targets on the drop's products, over the old categories only;
- with `new_class_init: probe`, before training: the new categories' classifier rows fitted on the
  champion's features of the training products, the old rows fixed (LP-FT; train/probe.py);
- weight aligning (Zhao et al. 2020) after training: the new categories' classifier rows are scaled
  to the old rows' mean norm, undoing the bias towards the categories the update saw most recently;
- with a validation memory (`validation_per_class`): the epoch kept is the one with the best top-1
  on the champion's old validation products and the drop's validation split together (as the gate
  scores old and new test products together), with the new rows weight-aligned as the update
  leaves them; training stops after `patience` epochs without a better one. For a drop of known
  categories the starting weights compete too: a drop that only makes the model worse leaves the
  champion's weights as they were, its branch heads' votes included (its products still join the
  memory and the index). Without a memory, or when a category has no validation product, the last
  epoch. Then, when `interpolation` lists more than α = 1, the weights become
  α·updated + (1−α)·champion (WiSE-FT, Wortsman et al. 2022) with the listed α that scores best on
  the same validation products (a tensor the update left as it was stays bit for bit). The branch
  heads' vote weights of a trained epoch are chosen after, on the same products, and last, when
  `logit_adjustment` lists τ > 0 and a trained epoch is kept: τ·log(the drop's class prior) joins the
  classifier's biases with the τ (or none) best on them, since class-balanced sampling trained for a
  uniform prior (train/prior.py).
- with `batch_norm_statistics: keep` the photo encoders' batch norms normalise with the champion's
  running statistics and leave them as they are (their scale and shift still train);
- the encoders pretrained on generic data train at `encoder_lr`, and with `pretrained_trainable_layers`
  N only their top N layers (the engine's: no backward pass below them; 0 leaves them as they are).

Then it recomputes the Fisher on what it trained on and accumulates it with decay γ (online EWC:
F ← γ·F_old + F_new), and refreshes replay, holdout and validation memory, so a chain of drops keeps
working. The recommendation index is re-embedded by the updated model.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from kickvision.config import ContinualConfig, DataConfig, TrainConfig
from kickvision.data.catalog import Catalog
from kickvision.data.images import ImageTransform
from kickvision.data.prepare import PreparedData, prepare_catalog
from kickvision.data.text import tokenize_titles
from kickvision.errors import CatalogError, RegistryError
from kickvision.model.bundle import Lineage, ModelBundle
from kickvision.model.index import EmbeddingIndex, make_index
from kickvision.model.memory import ContinualState, ExemplarSet
from kickvision.model.net import MultimodalShoeNet, grow_classifier
from kickvision.model.predict import predict_arrays, predict_logits
from kickvision.train.engine import (
    EpochCallback,
    Validator,
    seed_everything,
    split_validator,
    train_loop,
)
from kickvision.train.ewc import EWCPenalty, normalise_fisher
from kickvision.train.fusion import choose_branch_head_weights
from kickvision.train.losses import ClassificationLoss, LogitReplay, OldClassDistillation
from kickvision.train.prior import choose_logit_adjustment, class_prior
from kickvision.train.probe import probe_new_class_rows
from kickvision.train.replay import build_continual_state, capped_memory
from kickvision.train.settings import update_settings

log = logging.getLogger(__name__)


def encode_drop(
    catalog: Catalog, champion: ModelBundle, data_cfg: DataConfig, max_pixels: int, seed: int
) -> PreparedData:
    """A drop encoded the way the champion was trained: its tokenizer, title length, text columns,
    image transform and label map (old categories first, then new ones). A drop without a column the
    champion reads is the drop's problem (a CatalogError), not the config's."""
    missing = [c for c in champion.text_columns if c not in catalog.rows]
    if missing:
        raise CatalogError(
            f"catalog drop '{catalog.name}' lacks the column {', '.join(map(repr, missing))} that the champion "
            f"reads next to the title (it has: {', '.join(map(str, catalog.rows.columns))})"
        )
    cfg = data_cfg.model_copy(
        update={"max_title_tokens": champion.max_title_tokens, "text_columns": champion.text_columns}
    )
    transform = champion.image_transform(max_pixels)
    return prepare_catalog(catalog, champion.tokenizer, transform, cfg, seed, known_classes=champion.classes)


@dataclass
class UpdateResult:
    bundle: ModelBundle
    history: list[dict[str, float]]
    metrics: dict[str, float]  # the epoch kept, what validation it was chosen on, weight aligning's scales


def champion_targets(champion: MultimodalShoeNet, data: PreparedData) -> torch.Tensor:
    """The champion's fused-head logits on every row of `data` (eval mode, photos as stored): the
    targets of DER++ and LwF. Its branch heads are silenced, since the student trains in train mode,
    where they do not vote."""
    teacher = copy.deepcopy(champion)
    if teacher.branch_classifiers is not None:
        teacher.branch_head_weights.zero_()
    logits, _ = predict_logits(teacher, data, np.arange(len(data.rows)))
    return torch.from_numpy(logits).float()


def align_new_class_weights(model: MultimodalShoeNet, n_old: int) -> dict[str, float]:
    """Weight aligning: scale each class head's rows (and biases) of the categories after the first
    `n_old` by mean‖w_old‖ / mean‖w_new‖. Returns the scale per head."""
    heads = [("classifier", model.classifier)]
    heads += [(f"branch_classifier_{i}", h) for i, h in enumerate(model.branch_classifiers or [])]
    scales = {}
    with torch.no_grad():
        for name, head in heads:
            if head.out_features <= n_old:
                continue
            norms = head.weight.norm(dim=1)
            scale = norms[:n_old].mean() / norms[n_old:].mean().clamp_min(1e-12)
            head.weight[n_old:] *= scale
            if head.bias is not None:
                head.bias[n_old:] *= scale
            scales[f"weight_aligning_{name}"] = float(scale)
    return scales


def update_bundle(
    champion: ModelBundle,
    drop: PreparedData,
    cfg: ContinualConfig,
    train_cfg: TrainConfig,
    seed: int = 42,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
) -> UpdateResult:
    """The champion, updated on the drop's train split (+ replay) under the EWC penalty.

    `drop` must be prepared against the champion's label map (old classes first, in order).
    """
    state = champion.continual
    if state is None:
        raise RegistryError(
            "the champion carries no Fisher/replay state (it was trained before catalog-drop updates existed); "
            "retrain it with `kickvision train`"
        )
    if list(drop.classes[: len(champion.classes)]) != list(champion.classes):
        raise ValueError("the drop was not prepared against the champion's label map")
    seed_everything(seed)
    model = copy.deepcopy(champion.model)
    grow_classifier(model, len(drop.classes))
    anchor = {n: p.detach().cpu().clone() for n, p in champion.model.named_parameters()}

    # Training set: the drop's train split, plus the replay exemplars (old categories' memory).
    drop_train = ExemplarSet.from_prepared(drop, drop.indices("train"))
    train_set = drop_train.concat(state.replay) if cfg.use_replay and len(state.replay) else drop_train
    train_data = train_set.as_prepared(drop.classes)
    # The penalty takes the Fisher at the anchor's shapes: the grown classifier's new rows stay free.
    fisher = normalise_fisher(state.fisher) if cfg.fisher_normalise else state.fisher
    hooks = [EWCPenalty(model, fisher, anchor, cfg.ewc_lambda)] if cfg.ewc_lambda else []
    losses = [ClassificationLoss.from_config(train_cfg, model.cfg)]
    metrics: dict[str, float] = {}
    started = time.perf_counter()
    if cfg.logit_replay_weight or cfg.distill_weight:
        targets = champion_targets(champion.model, train_data)
        metrics["update_seconds_targets"] = time.perf_counter() - started
        is_replay = torch.arange(len(train_set)) >= len(drop_train)
        if cfg.logit_replay_weight:
            losses.append(LogitReplay(targets, is_replay, cfg.logit_replay_weight))
        if cfg.distill_weight:
            losses.append(OldClassDistillation(targets, ~is_replay, cfg.distill_weight, cfg.distill_temperature))
    if cfg.new_class_init == "probe":  # LP-FT: the new categories' rows fitted on the champion's features first
        probed = time.perf_counter()
        metrics |= probe_new_class_rows(model, train_data, np.arange(len(train_set)), len(champion.classes))
        metrics["update_seconds_probe"] = time.perf_counter() - probed
    validation = update_validation(drop, state, cfg)
    validate = split_validator(validation.data, validation.indices)
    if validation.chooses:
        validate = corrected_validator(validate, cfg, len(champion.classes))
    started = time.perf_counter()
    loop = train_loop(
        model,
        train_data,
        np.arange(len(train_set)),
        update_settings(cfg, train_cfg, validation.chooses, new_categories=len(drop.classes) > len(champion.classes)),
        losses,
        validate,
        hooks=hooks,
        seed=seed,
        desc="update",
        on_epoch_end=on_epoch_end,
        progress=progress,
    )

    metrics["update_seconds_training"] = time.perf_counter() - started
    metrics["update_kept_epoch"] = float(loop.best_epoch)
    if validation.chooses:
        metrics["update_validation_products"] = float(len(validation.indices))
        metrics["update_val_top1_kept"] = float(loop.best_score)  # the kept epoch's
        if loop.start_metrics:  # the champion's own weights competed (kept epoch 0: they won)
            metrics["update_val_top1_start"] = loop.start_metrics["val_top1"]
        if cfg.interpolation != [1.0]:  # the kept epoch's weights mixed with the champion's, scored again
            alpha, score = choose_interpolation(model, champion.model, cfg.interpolation, validate)
            metrics["update_interpolation"] = alpha
            metrics["update_val_top1_interpolated"] = score
    if cfg.bias_correction == "weight_aligning":
        metrics |= align_new_class_weights(model, len(champion.classes))
    # The grown, retrained branch heads vote with weights chosen for this model (before the Fisher,
    # which is taken on the model as it will predict), on old and new products when the memory can;
    # the champion's own weights won the competition as they were, votes included, and stay so.
    kept_champion = loop.best_epoch == 0 and bool(loop.start_metrics)
    if kept_champion:
        head_weights = dict(champion.spec.training.branch_head_weights)
    else:
        head_weights = choose_branch_head_weights(model, validation.data, validation.indices)
    if validation.chooses and any(cfg.logit_adjustment) and not kept_champion:  # uniform prior -> the drop's
        prior = class_prior(drop.labels()[drop.indices("train")], len(drop.classes))
        tau, score = choose_logit_adjustment(model, prior, cfg.logit_adjustment, validation.data, validation.indices)
        metrics["update_logit_adjustment"] = tau
        metrics["update_val_top1_adjusted"] = score
    # Memory for the next drop: Fisher on what this update trained on, replay, holdout, validation refreshed.
    started = time.perf_counter()
    merged = ExemplarSet.from_prepared(drop, drop.indices("test"))
    holdout = capped_memory(state.holdout, merged, cfg.holdout_per_class, seed)
    remembered = capped_memory(state.validation, validation.drop_val, cfg.validation_per_class, seed)
    replay_pool = drop_train.concat(state.replay).as_prepared(drop.classes)
    new_state = build_continual_state(
        model, replay_pool, np.arange(len(replay_pool.rows)), holdout, cfg, seed, previous=state, validation=remembered
    )
    metrics["update_seconds_memory"] = time.perf_counter() - started
    old = champion.spec.lineage
    spec = champion.spec.model_copy(deep=True)
    spec.classes = list(drop.classes)
    spec.temperature = 1.0  # refitted on the drop's validation split by the caller
    spec.training.branch_head_weights = head_weights
    spec.lineage = Lineage(
        catalog_hash=drop.catalog_hash,
        catalog_hashes=[*(old.catalog_hashes or [old.catalog_hash]), drop.catalog_hash],
        catalog_paths=learnt_paths(old, drop),
        updated_from=old.registered_version,
        new_classes=[c for c in drop.classes if c not in champion.classes],
        photo_pretraining=old.photo_pretraining,  # the encoders it started from, still
    )
    return UpdateResult(ModelBundle(model, champion.tokenizer, spec, continual=new_state), loop.history, metrics)


@dataclass
class UpdateValidation:
    """What an update validates on: `indices` of `data`; `chooses` when it may choose the epoch;
    `drop_val` the drop's validation products (the next validation memory takes them in)."""

    data: PreparedData
    indices: np.ndarray
    chooses: bool
    drop_val: ExemplarSet


def update_validation(drop: PreparedData, state: ContinualState, cfg: ContinualConfig) -> UpdateValidation:
    """The champion's remembered validation products plus the drop's validation split, so the epoch
    is chosen on old and new products together (as the gate scores). Only a memory that covers every
    category can choose (otherwise the least-trained epoch of a category nobody validates would
    win); without one, the drop's validation split (it then chooses nothing: the last epoch is kept)."""
    drop_val = ExemplarSet.from_prepared(drop, drop.indices("val"))
    remembered = state.validation if state.validation is not None and len(state.validation) else None
    if cfg.validation_per_class and remembered is not None:
        both = remembered.concat(drop_val) if len(drop_val) else remembered
        unvalidated = sorted(set(drop.classes) - set(both.rows["category"]))
        if not unvalidated:
            return UpdateValidation(both.as_prepared(drop.classes, "val"), np.arange(len(both)), True, drop_val)
        reason = f"no validation products of {', '.join(unvalidated)}"
    else:
        reason = "no validation memory"
    if cfg.validation_per_class or cfg.interpolation != [1.0] or any(cfg.logit_adjustment):
        log.warning("the update keeps its last epoch (and interpolates and adjusts nothing): %s", reason)
    return UpdateValidation(drop, drop.indices("val"), False, drop_val)


def interpolate_weights(updated: dict, champion: dict, alpha: float) -> dict:
    """The state α·updated + (1−α)·champion (WiSE-FT, Wortsman et al. 2022), tensor by tensor. A grown
    classifier's new rows have no champion counterpart and stay as updated; so do integer buffers
    (batch counts) and anything the champion lacks."""
    state = {}
    for name, new in updated.items():
        old = champion.get(name)
        if old is None or not new.is_floating_point():
            state[name] = new.clone()
        elif old.shape == new.shape:
            old = old.to(new.device)  # equal (a frozen encoder, kept weights): as it was, not rounded
            state[name] = new.clone() if torch.equal(new, old) else alpha * new + (1 - alpha) * old
        elif old.dim() and old.shape[1:] == new.shape[1:] and old.shape[0] < new.shape[0]:
            state[name] = new.clone()
            state[name][: old.shape[0]] = alpha * new[: old.shape[0]] + (1 - alpha) * old.to(new.device)
        else:
            raise ValueError(f"cannot interpolate {name}: champion {tuple(old.shape)}, updated {tuple(new.shape)}")
    return state


def choose_interpolation(
    model: MultimodalShoeNet, champion: MultimodalShoeNet, alphas: list[float], validate: Validator
) -> tuple[float, float]:
    """Set `model` (in place) to its interpolation with the champion whose α has the best validation
    top-1 (on a tie the larger α: more of the update); returns that α and its validation top-1."""
    updated = {k: v.detach().clone() for k, v in model.state_dict().items()}
    old = {k: v.detach() for k, v in champion.state_dict().items()}
    best, best_alpha = None, 1.0
    for alpha in sorted(set(alphas)):
        model.load_state_dict(interpolate_weights(updated, old, alpha))
        score = validate(model)["val_top1"]
        if best is None or score >= best:
            best, best_alpha = score, alpha
    model.load_state_dict(interpolate_weights(updated, old, best_alpha))
    model.eval()
    return best_alpha, float(best)


def corrected_validator(validate: Validator, cfg: ContinualConfig, n_old: int) -> Validator:
    """`validate` scoring the model as the update will leave it: with its new categories' weights
    aligned when the recipe aligns them (on a copy; the training model is untouched)."""
    if cfg.bias_correction != "weight_aligning":
        return validate

    def aligned(model: MultimodalShoeNet) -> dict[str, float]:
        corrected = copy.deepcopy(model)
        align_new_class_weights(corrected, n_old)
        return validate(corrected)

    return aligned


def learnt_paths(old: Lineage, drop: PreparedData) -> list[str]:
    """The folders of every catalog the updated model learnt, oldest first; empty unless the champion
    names a folder for each catalog it learnt (one trained before folders were recorded does not),
    so a joint retrain is never proposed on part of what the model knows."""
    learnt = old.catalog_hashes or [old.catalog_hash]
    if not drop.catalog_root or len(old.catalog_paths) != len(learnt):
        return []
    return [*old.catalog_paths, str(drop.catalog_root)]


def rebuild_index(
    bundle: ModelBundle, old_index: EmbeddingIndex | None, drop: PreparedData, transform: ImageTransform
) -> tuple[EmbeddingIndex, dict[str, int]]:
    """The recommendation index re-embedded by the updated model: old products plus the drop's.

    Old products are re-embedded from their stored image path when that file is still readable
    (decoded by `transform`, bounded as in training), and from their title alone otherwise
    (modality dropout keeps title-only embeddings meaningful). Returns (index, counts).
    """
    _, drop_embeddings = predict_logits(bundle.model, drop, np.arange(len(drop.rows)))
    drop_rows = drop.rows_with_image_paths()
    counts = {"index_drop_products": len(drop_rows), "index_old_with_image": 0, "index_old_title_only": 0}
    if old_index is None or not len(old_index):
        return make_index(drop_embeddings, drop_rows), counts
    old = old_index.items[~old_index.items["product_id"].isin(drop_rows["product_id"].astype(str))]
    images, has_image = transform.load_or_blank(old["image"])  # a gone file: embedded from its title
    ids, mask = tokenize_titles(bundle.tokenizer, old["title"].tolist(), bundle.max_title_tokens)
    _, old_embeddings = predict_arrays(bundle.model, images, ids, mask, use_image=has_image)
    counts["index_old_with_image"] = int(has_image.sum())
    counts["index_old_title_only"] = int((~has_image).sum())
    embeddings = np.concatenate([old_embeddings, drop_embeddings])
    rows = pd.concat([old, drop_rows.astype(str)], ignore_index=True)
    return make_index(embeddings, rows), counts
