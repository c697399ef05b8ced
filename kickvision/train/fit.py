"""Fitting a fresh MultimodalShoeNet on a prepared catalog: one user of the training engine."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from kickvision.config import ModelConfig, TrainConfig
from kickvision.data.prepare import PreparedData
from kickvision.errors import ConfigError
from kickvision.model.bundle import BundleSpec, Lineage, ModelBundle, TrainingRecord
from kickvision.model.net import build_model, count_parameters
from kickvision.model.photo_encoders import PhotoEncoders
from kickvision.train.engine import EpochCallback, pick_device, seed_everything, split_validator, train_loop
from kickvision.train.fusion import choose_branch_head_weights
from kickvision.train.losses import ClassificationLoss
from kickvision.train.settings import fit_settings


@dataclass
class FitResult:
    bundle: ModelBundle
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def fit(
    data: PreparedData,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    tokenizer,
    max_title_tokens: int,
    seed: int = 42,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    text_columns: Sequence[str] = (),
    photo_encoders: PhotoEncoders | None = None,
) -> FitResult:
    """Train a fresh model on the train split; keeps the epoch with the best validation `cfg.monitor`,
    then lets the branch heads (if any) vote with weights chosen on validation (train/fusion.py).

    With `photo_encoders` (train/pretrain.py) the image encoders start from those weights.
    """
    settings = fit_settings(cfg)
    if settings.mix is not None and model_cfg.text_encoder is not None:
        raise ConfigError(
            "train.mixup_alpha and train.cutmix_alpha mix photos, which only an image-only model can learn from: "
            "this model reads titles too (model.text_encoder), and a title cannot be mixed with its photo "
            "(for the photo encoders alone: pretrain.mixup_alpha with pretrain.method: labels)"
        )
    started = time.perf_counter()
    seed_everything(seed)
    model = build_model(model_cfg, len(data.classes))
    if photo_encoders is not None:
        photo_encoders.apply_to(model)
    result = train_loop(
        model,
        data,
        data.indices("train"),
        settings,
        [ClassificationLoss.from_config(cfg, model_cfg)],
        split_validator(data, data.indices("val")),
        seed=seed,
        on_epoch_end=on_epoch_end,
        progress=progress,
    )
    head_weights: dict[str, float] = {}
    if model.branch_classifiers is not None:  # chosen on the training device (it reads the validation photos)
        head_weights = choose_branch_head_weights(model.to(pick_device(cfg.device)), data, data.indices("val"))
        model.to("cpu")
    spec = BundleSpec(
        classes=list(data.classes),
        max_title_tokens=max_title_tokens,
        text_columns=list(text_columns),
        training=TrainingRecord(
            best_epoch=result.best_epoch,
            monitor=settings.monitor,
            best_score=result.best_score,
            parameters=count_parameters(model),
            pretrained=model.pretrained_report(),
            branch_head_weights=head_weights,
            seconds=time.perf_counter() - started,
            catalog_rows=len(data.rows),
        ),
        lineage=Lineage(
            catalog_hash=data.catalog_hash,
            catalog_hashes=[data.catalog_hash],
            catalog_paths=[str(data.catalog_root)] if data.catalog_root else [],
            photo_pretraining=photo_encoders.record if photo_encoders and len(photo_encoders) else None,
        ),
    )
    return FitResult(ModelBundle(model, tokenizer, spec), result.history, result.best_epoch)
