"""pretrain_photos: the image encoders learn from the catalog's own photos before the train step (cached)."""

import tempfile
from typing import Annotated

import mlflow
from zenml import step
from zenml.logger import get_logger

from kickvision.config import ModelConfig, PretrainConfig, TrainConfig
from kickvision.data.prepare import PreparedData
from kickvision.model.photo_encoders import PhotoEncoders
from kickvision.tracking import flatten_params
from kickvision.train.pretrain import pretrain_photos as pretrain
from materializers import PhotoEncodersMaterializer

logger = get_logger(__name__)


@step(experiment_tracker=True, enable_cache=True, output_materializers=PhotoEncodersMaterializer)
def pretrain_photos(
    data: PreparedData, model: ModelConfig, pretrain_config: PretrainConfig, train: TrainConfig, seed: int
) -> Annotated[PhotoEncoders, "photo_encoders"]:
    """Pretrain the image encoders on the train split's photos and titles (`pretrain.enabled`).

    Cached: a second run on the same prepared catalog with the same settings reuses the encoders.

    Args:
        data: the prepared catalog.
        model: the image encoders to pretrain (and the image transform).
        pretrain_config: the `pretrain` section of the run config.
        train: device and precision settings shared with training.
        seed: pretraining seed.
    """
    if not pretrain_config.enabled:
        logger.info("pretrain: skipped (pretrain.enabled is false); the image encoders start from scratch")
        return PhotoEncoders()
    mlflow.log_params(flatten_params({"pretrain": pretrain_config.model_dump(mode="json")}))
    encoders, metrics = pretrain(
        data,
        model,
        pretrain_config,
        train,
        seed=seed,
        on_epoch_end=lambda epoch, m: mlflow.log_metrics({f"pretrain_epoch_{k}": v for k, v in m.items()}, step=epoch),
    )
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(encoders.save(tmp)), artifact_path="photo_encoders")
    logger.info("pretrain: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return encoders
