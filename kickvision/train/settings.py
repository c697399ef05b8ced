"""How each training loop is set: `LoopSettings`, built from the run config's sections.

Fitting a fresh model (`fit_settings`), a catalog-drop update (`update_settings`), a pruning
fine-tune (`finetune_settings`) and photo pretraining (`pretrain_settings`) all run the one engine
(engine.py); they differ in these settings and in their data and loss terms. No literal lives in a
loop: every number here comes from a config section.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kickvision.config import ContinualConfig, PretrainConfig, PruneConfig, TrainConfig
from kickvision.train.augment import PhotoAugment, PhotoMix


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
    balanced_sampling: float = 0.0  # draw weight 1/count^x of the product's category: 1 class-balanced, 0 a shuffle
    keep_norm_statistics: bool = False  # batch norms in eval mode while training: running statistics as they were
    augment: PhotoAugment | None = PhotoAugment()  # None: photos as they are
    mix: PhotoMix | None = None  # mixup / CutMix of the augmented photos; loss terms read batch["target"]
    ema_decay: float | None = None  # validate and keep a moving average of the weights
    monitor: str | None = "val_macro_f1"  # None: keep the last epoch
    patience: int | None = None  # None: never stop early
    score_start: bool = False  # validate before the first epoch; the starting weights compete too
    later_wins_ties: bool = False  # on an equal `monitor` value keep the later weights (they saw more data)
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    cpu_amp: bool = False  # bf16 autocast on a CPU with native bf16
    channels_last: bool = True  # on CUDA only
    num_threads: int = 0
    data_on_device: bool = False  # batches cut from tensors on the training device (loader.DeviceBatches)
    compile: bool = False  # torch.compile the training forward


def fit_settings(train: TrainConfig) -> LoopSettings:
    """Training a fresh model: early stopping on `train.monitor`."""
    return LoopSettings(
        epochs=train.epochs,
        batch_size=train.batch_size,
        lr=train.lr,
        encoder_lr=train.encoder_lr,
        pretrained_trainable_layers=train.pretrained_trainable_layers,
        weight_decay=train.weight_decay,
        pct_start=train.pct_start,
        grad_clip=train.grad_clip,
        balanced_sampling=train.balanced_sampling,
        augment=photo_augment(train),
        mix=photo_mix(train.mixup_alpha, train.cutmix_alpha, train.label_smoothing),
        ema_decay=train.ema_decay,
        monitor=train.monitor,
        patience=train.patience,
        device=train.device,
        amp=train.amp,
        cpu_amp=train.cpu_amp,
        channels_last=train.channels_last,
        num_threads=train.num_threads,
        data_on_device=train.data_on_device,
        compile=train.compile,
    )


def photo_augment(train: TrainConfig) -> PhotoAugment | None:
    """The train section's photo augmentation (None with `augment: false`)."""
    if not train.augment:
        return None
    return PhotoAugment(crop_scale=train.crop_scale, shift=train.shift, color_jitter=train.color_jitter)


def photo_mix(mixup_alpha: float, cutmix_alpha: float, label_smoothing: float = 0.0) -> PhotoMix | None:
    """Mixup / CutMix of the photos (None when both are off)."""
    if not (mixup_alpha or cutmix_alpha):
        return None
    return PhotoMix(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=label_smoothing)


def _secondary(train: TrainConfig, epochs: int, lr: float, **changes) -> LoopSettings:
    """A loop after or beside the main fit: its own epochs and learning rate (for every parameter unless
    `changes` names an encoder_lr), no early stop, no mixing or weight average; device, precision,
    clipping, augmentation and weight decay as in `train`."""
    own = {"epochs": epochs, "lr": lr, "encoder_lr": None, "patience": None, "mix": None, "ema_decay": None}
    return replace(fit_settings(train), **(own | changes))


def update_settings(
    continual: ContinualConfig, train: TrainConfig, choose_epoch: bool = False, new_categories: bool = True
) -> LoopSettings:
    """A catalog-drop update. With `choose_epoch` (validation on old and new products together) the
    epoch with the best validation top-1 is kept (on a tie the later one), stopping after
    `continual.patience` epochs without a better one; when the drop brings no new category the
    starting weights compete too (with one they cannot predict it, so they never stand in for an
    update). Without, the last epoch (the drop's validation split alone cannot see forgetting; the
    update gate measures that on the champion's holdout). A drop that brings a new category trains at
    both learning rates times `continual.new_categories_lr_scale`: it has features to learn, where a
    drop of known categories only refines them."""
    scale = continual.new_categories_lr_scale if new_categories else 1.0
    return _secondary(
        train,
        continual.epochs,
        continual.lr * scale,
        encoder_lr=None if continual.encoder_lr is None else continual.encoder_lr * scale,
        pretrained_trainable_layers=continual.pretrained_trainable_layers,
        batch_size=continual.batch_size,
        pct_start=continual.pct_start,
        balanced_sampling=continual.balanced_sampling,
        keep_norm_statistics=continual.batch_norm_statistics == "keep",
        monitor="val_top1" if choose_epoch else None,
        patience=continual.patience if choose_epoch else None,
        score_start=choose_epoch and not new_categories,
        later_wins_ties=True,
    )


def finetune_settings(prune: PruneConfig, train: TrainConfig) -> LoopSettings:
    """A pruning fine-tune: the best validation top-1 among the pruned starting point and each epoch
    (on a tie the later one: the same top-1 after more fine-tuning)."""
    changes = {"pct_start": prune.pct_start, "monitor": "val_top1", "score_start": True, "later_wins_ties": True}
    return _secondary(train, prune.finetune_epochs, prune.lr, encoder_lr=prune.encoder_lr, **changes)


def pretrain_settings(pretrain: PretrainConfig, train: TrainConfig) -> LoopSettings:
    """Photo pretraining: the epoch with the lowest validation loss of its objectives is kept."""
    return _secondary(
        train,
        pretrain.epochs,
        pretrain.lr,
        batch_size=pretrain.batch_size,
        balanced_sampling=False,
        pretrained_trainable_layers=None,  # photo encoders with ImageNet weights all train: train's knob is the fit's
        monitor="val_loss",
        mix=photo_mix(pretrain.mixup_alpha, pretrain.cutmix_alpha),
        ema_decay=pretrain.ema_decay,
    )
