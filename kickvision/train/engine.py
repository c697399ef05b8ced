"""The one training engine: every loop that changes weights runs through `train_loop`.

Fitting a fresh model, a catalog-drop update, a pruning fine-tune (and the photo pretraining to
come) differ in data, not in code:

- `LoopSettings`, built from the run config's sections (`fit_settings`, `update_settings`,
  `finetune_settings`): epochs, batch size, learning rates, warm-up share, gradient clipping,
  sampling, which validation metric keeps the best epoch and how long to wait for it. No literal
  lives in a loop.
- loss terms `(batch, output) -> tensor`, summed (losses.py), and gradient hooks that act between
  backward and the optimizer step (the EWC penalty, ewc.py).

Per epoch: one pass of AdamW over parameter groups (generic pretrained encoders at `encoder_lr`,
only their top `pretrained_trainable_layers` layers if set: no gradient below, so no backward pass
through them; 0 freezes them whole, in eval mode; the rest at `lr`, after timm's
create_optimizer_v2) under a one-cycle schedule, gradients clipped to `grad_clip`, bf16 autocast on
CUDA; then validation. The epoch with the best `monitor` value is kept (on a tie the earlier one, or
the later with `later_wins_ties`); training stops after `patience` epochs without a strictly better
value. Callers seed (`seed_everything`) before building what the loop trains, since model
initialisation draws from the same generator as dropout.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from kickvision.config import ContinualConfig, PretrainConfig, PruneConfig, TrainConfig
from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import PreparedData
from kickvision.model.net import MultimodalShoeNet, ShoeNetOutput
from kickvision.model.predict import predict_logits
from kickvision.train.augment import PhotoAugment
from kickvision.train.freeze import frozen, frozen_parameters, hold_frozen_modes
from kickvision.train.loader import make_loader
from kickvision.train.losses import LossTerm

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
Validator = Callable[[MultimodalShoeNet], dict[str, float]]
Forward = Callable[[torch.nn.Module, dict[str, torch.Tensor]], Any]


def classify(model: MultimodalShoeNet, batch: dict[str, torch.Tensor]) -> ShoeNetOutput:
    """The default forward: the fused model on the batch's photos and titles."""
    return model(batch["image"], batch["input_ids"], batch["attention_mask"])


class GradientHook(Protocol):
    """Acts on `.grad` between backward and the optimizer step (e.g. adds a penalty's gradient)."""

    def after_backward(self) -> None: ...

    def epoch_metrics(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class LoopSettings:
    """Everything a training loop needs besides the model, the data and the loss terms."""

    epochs: int
    batch_size: int
    lr: float
    encoder_lr: float | None = None  # pretrained encoders; None = lr
    pretrained_trainable_layers: int | None = None  # generic pretrained encoders train their top N only; None: all
    weight_decay: float = 0.05
    pct_start: float = 0.15
    grad_clip: float | None = 1.0
    balanced_sampling: bool = False
    augment: PhotoAugment | None = PhotoAugment()  # None: photos as they are
    monitor: str | None = "val_macro_f1"  # None: keep the last epoch
    patience: int | None = None  # None: never stop early
    score_start: bool = False  # validate before the first epoch; the starting weights compete too
    later_wins_ties: bool = False  # on an equal `monitor` value keep the later weights (they saw more data)
    device: str = "auto"
    amp: bool = True
    num_threads: int = 0


def fit_settings(train: TrainConfig) -> LoopSettings:
    """Training a fresh model: early stopping on `train.monitor`."""
    return LoopSettings(
        epochs=train.epochs,
        batch_size=train.batch_size,
        lr=train.lr,
        encoder_lr=train.encoder_lr,
        weight_decay=train.weight_decay,
        pct_start=train.pct_start,
        grad_clip=train.grad_clip,
        balanced_sampling=train.balanced_sampling,
        augment=photo_augment(train),
        monitor=train.monitor,
        patience=train.patience,
        device=train.device,
        amp=train.amp,
        num_threads=train.num_threads,
    )


def photo_augment(train: TrainConfig) -> PhotoAugment | None:
    """The train section's photo augmentation (None with `augment: false`)."""
    if not train.augment:
        return None
    return PhotoAugment(crop_scale=train.crop_scale, shift=train.shift, color_jitter=train.color_jitter)


def _secondary(train: TrainConfig, epochs: int, lr: float, **changes) -> LoopSettings:
    """A loop after or beside the main fit: its own epochs and learning rate (for every parameter unless
    `changes` names an encoder_lr), no early stop; device, precision, clipping, augmentation and weight
    decay as in `train`."""
    return replace(
        fit_settings(train), **({"epochs": epochs, "lr": lr, "encoder_lr": None, "patience": None} | changes)
    )


def update_settings(
    continual: ContinualConfig, train: TrainConfig, choose_epoch: bool = False, new_categories: bool = True
) -> LoopSettings:
    """A catalog-drop update. With `choose_epoch` (validation on old and new products together) the
    epoch with the best validation top-1 is kept (on a tie the later one), stopping after
    `continual.patience` epochs without a better one; when the drop brings no new category the
    starting weights compete too (with one they cannot predict it, so they never stand in for an
    update). Without, the last epoch (the drop's validation split alone cannot see forgetting; the
    update gate measures that on the champion's holdout)."""
    return _secondary(
        train,
        continual.epochs,
        continual.lr,
        encoder_lr=continual.encoder_lr,
        pretrained_trainable_layers=continual.pretrained_trainable_layers,
        batch_size=continual.batch_size,
        pct_start=continual.pct_start,
        balanced_sampling=continual.balanced_sampling,
        monitor="val_top1" if choose_epoch else None,
        patience=continual.patience if choose_epoch else None,
        score_start=choose_epoch and not new_categories,
        later_wins_ties=True,
    )


def finetune_settings(prune: PruneConfig, train: TrainConfig) -> LoopSettings:
    """A pruning fine-tune: the best validation top-1 among the pruned starting point and each epoch
    (on a tie the later one: the same top-1 after more fine-tuning)."""
    changes = {"pct_start": prune.pct_start, "monitor": "val_top1", "score_start": True, "later_wins_ties": True}
    return _secondary(train, prune.finetune_epochs, prune.lr, **changes)


def pretrain_settings(pretrain: PretrainConfig, train: TrainConfig) -> LoopSettings:
    """Photo pretraining: the epoch with the lowest validation alignment loss is kept."""
    return _secondary(
        train, pretrain.epochs, pretrain.lr, batch_size=pretrain.batch_size, balanced_sampling=False, monitor="val_loss"
    )


@dataclass
class LoopResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0  # 0: the starting weights (score_start)
    best_score: float | None = None
    start_metrics: dict[str, float] = field(default_factory=dict)  # validation before the first epoch


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def generic_pretrained_encoders(model: MultimodalShoeNet) -> list[torch.nn.Module]:
    """The encoders that started from weights pretrained on generic data (MiniLM). Photo encoders
    pretrained on the catalog's own photos (train/pretrain.py) are not among them: they start far
    from done (k-NN ~0.75), unlike weights pretrained on large generic data."""
    encoders = [*model.image_encoders, model.text_encoder]
    return [e for e in encoders if e is not None and e.pretrained_loaded and not getattr(e, "catalog_pretrained", 0)]


def create_optimizer(model: MultimodalShoeNet, settings: LoopSettings) -> torch.optim.Optimizer:
    """AdamW with two parameter groups: generic pretrained encoders at `encoder_lr`, everything else
    at `lr`; parameters that do not require a gradient (frozen) are left out."""
    pretrained_ids = {id(p) for e in generic_pretrained_encoders(model) for p in e.parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trained if id(p) in pretrained_ids], "lr": settings.encoder_lr or settings.lr},
        {"params": [p for p in trained if id(p) not in pretrained_ids], "lr": settings.lr},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=settings.weight_decay)


def create_scheduler(optimizer: torch.optim.Optimizer, settings: LoopSettings, steps_per_epoch: int):
    """One-cycle: warm up for `pct_start` of all steps to each group's lr, then anneal."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=max(1, settings.epochs * steps_per_epoch),
        pct_start=settings.pct_start,
    )


def classification_scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {
        "top1": float(accuracy_score(labels, predictions)) if len(labels) else 0.0,
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)) if len(labels) else 0.0,
    }


def split_validator(data: PreparedData, indices: np.ndarray) -> Validator:
    """Validation on rows `indices` of `data`: val_top1, val_macro_f1 and val_loss (cross-entropy)."""
    labels = data.labels()[indices]

    def validate(model: MultimodalShoeNet) -> dict[str, float]:
        if not len(indices):
            return {"val_top1": 0.0, "val_macro_f1": 0.0, "val_loss": float("nan")}
        logits, _ = predict_logits(model, data, indices)
        scores = classification_scores(labels, logits.argmax(1))
        loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
        return {"val_top1": scores["top1"], "val_macro_f1": scores["macro_f1"], "val_loss": loss}

    return validate


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _compare(score: float, best: float | None, monitor: str) -> tuple[bool, bool]:
    """(as good as the best so far, strictly better) for `monitor` (losses are minimised; NaN never wins)."""
    if np.isnan(score):
        return False, False
    if best is None:
        return True, True
    if monitor.endswith("loss"):
        return score <= best, score < best
    return score >= best, score > best


def train_loop(
    model: MultimodalShoeNet,
    data: PreparedData,
    train_indices: np.ndarray,
    settings: LoopSettings,
    loss_terms: Sequence[LossTerm],
    validate: Validator,
    hooks: Sequence[GradientHook] = (),
    seed: int = 42,
    desc: str = "epoch",
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    forward: Forward = classify,
) -> LoopResult:
    """Train `model` in place on `train_indices` of `data`; it ends on the kept epoch, on the CPU, in eval mode.

    `forward(model, batch)` gives what the loss terms read (default: the fused model's output);
    `model` needs `cfg` (its ModelConfig: the image transform), `image_encoders` and `text_encoder`
    (parameter groups)."""
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    device = pick_device(settings.device)
    model.to(device)
    transform = resolve_image_transform(model.cfg)
    loader = make_loader(data, train_indices, settings.batch_size, seed, settings.balanced_sampling)
    encoders = generic_pretrained_encoders(model)
    with frozen(frozen_parameters(encoders, settings.pretrained_trainable_layers)):  # trainable again afterwards
        optimizer = create_optimizer(model, settings)
        scheduler = create_scheduler(optimizer, settings, len(loader))

        result, best_state, stale = LoopResult(), None, 0
        if settings.score_start and settings.monitor is not None:
            result.start_metrics = validate(model)
            result.best_score = result.start_metrics[settings.monitor]
            best_state = copy.deepcopy(model.state_dict())
        for epoch in range(1, settings.epochs + 1):
            metrics = _one_epoch(
                forward,
                model,
                loader,
                optimizer,
                scheduler,
                loss_terms,
                hooks,
                transform,
                settings,
                device,
                progress,
                f"{desc} {epoch}/{settings.epochs}",
            )
            for hook in hooks:
                metrics.update(hook.epoch_metrics())
            metrics.update(validate(model))
            result.history.append({"epoch": epoch, **metrics})
            log.info("%s %d: %s", desc, epoch, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if on_epoch_end:
                on_epoch_end(epoch, metrics)
            if settings.monitor is None:
                result.best_epoch = epoch
                continue
            as_good, improved = _compare(metrics[settings.monitor], result.best_score, settings.monitor)
            if improved or (as_good and settings.later_wins_ties):
                result.best_score, result.best_epoch = metrics[settings.monitor], epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            stale = 0 if improved else stale + 1
            if settings.patience is not None and stale >= settings.patience:
                log.info(
                    "early stop after epoch %d (best %d, %s %.4f)",
                    epoch,
                    result.best_epoch,
                    settings.monitor,
                    result.best_score,
                )
                break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.to("cpu").eval()
    return result


def _one_epoch(
    forward, model, loader, optimizer, scheduler, loss_terms, hooks, transform, settings, device, progress, desc
):
    model.train()
    hold_frozen_modes(generic_pretrained_encoders(model), settings.pretrained_trainable_layers)
    started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=None if progress else True)
    for batch in bar:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        images = transform.to_unit(batch["image"])
        batch["pixels"] = images  # [0, 1], before augmentation: for forwards that draw views of their own
        batch["image"] = transform.standardise(settings.augment(images) if settings.augment else images)
        with _autocast(device, settings.amp):
            out = forward(model, batch)
            loss = loss_terms[0](batch, out)
            for term in loss_terms[1:]:
                loss = loss + term(batch, out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for hook in hooks:
            hook.after_backward()
        if settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
        n = batch["label"].shape[0]
        seen += n
        loss_sum += loss.item() * n
        if forward is classify:
            correct += (out.logits.argmax(1) == batch["label"]).sum().item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    elapsed = time.perf_counter() - started
    metrics = {"train_loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1)}
    if forward is not classify:  # no class logits to count hits on
        del metrics["train_top1"]
    return {**metrics, "train_samples_per_s": seen / max(elapsed, 1e-9), "epoch_seconds": elapsed}
