"""train: fit MultimodalShoeNet; params and per-epoch metrics go to MLflow."""

from typing import Annotated

import mlflow
from zenml import get_step_context, step

from kickvision.config import ContinualConfig, DataConfig, ModelConfig, TrainConfig
from kickvision.data.prepare import PreparedData
from kickvision.model.bundle import ModelBundle
from kickvision.model.encoders import build_tokenizer
from kickvision.model.photo_encoders import PhotoEncoders
from kickvision.serve.release import equip_for_release
from kickvision.tracking import flatten_params
from kickvision.train.engine import pick_device, trains_in_bf16
from kickvision.train.fit import fit
from kickvision.train.settings import fit_settings
from materializers import ModelBundleMaterializer


@step(experiment_tracker=True, enable_cache=False, output_materializers=ModelBundleMaterializer)
def train_model(
    data: PreparedData,
    model: ModelConfig,
    train: TrainConfig,
    data_config: DataConfig,
    continual: ContinualConfig,
    seed: int,
    photo_encoders: PhotoEncoders | None = None,
) -> Annotated[ModelBundle, "trained_model"]:
    """Train on the train split, keeping the epoch with the best validation `train.monitor`.

    Args:
        data: the prepared catalog.
        photo_encoders: pretrained image encoders to start from (pretrain_photos; empty: from scratch).
        model: architecture section of the run config.
        train: optimisation section of the run config.
        data_config: data section (title length and text columns travel with the model).
        continual: how much Fisher/replay/holdout the model carries for its next update.
        seed: training seed.
    """
    mlflow.log_params(
        flatten_params(
            {
                "model": model.model_dump(mode="json"),
                "train": train.model_dump(mode="json"),
                "data": data_config.model_dump(mode="json"),
                "continual": continual.model_dump(mode="json"),
                "seed": seed,
            }
        )
    )
    mlflow.log_params({f"split_{k}_rows": v for k, v in data.split_counts().items()})
    mlflow.set_tag("kickvision.zenml_run_id", str(get_step_context().pipeline_run.id))
    bf16 = trains_in_bf16(pick_device(train.device), fit_settings(train))  # train.cpu_amp asks; the CPU decides
    mlflow.set_tag("kickvision.training_precision", "bf16 autocast" if bf16 else "float32")
    result = fit(
        data,
        model,
        train,
        build_tokenizer(model.text_encoder),
        data_config.max_title_tokens,
        seed=seed,
        on_epoch_end=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
        text_columns=data_config.text_columns,
        photo_encoders=photo_encoders,
    )
    # Index, temperature and Fisher/replay/holdout ship with the model (the prune step redoes them
    # for a pruned model).
    mlflow.log_metrics(equip_for_release(result.bundle, data, continual, seed))
    training = result.bundle.spec.training
    mlflow.log_params({f"pretrained_{k}": v for k, v in training.pretrained.items()})
    mlflow.log_metrics({"best_epoch": training.best_epoch, "model_parameters": training.parameters})
    mlflow.log_params({f"branch_head_weight.{k}": v for k, v in training.branch_head_weights.items()})
    pretraining = result.bundle.spec.lineage.photo_pretraining
    mlflow.set_tags({"photo_pretraining": pretraining.method if pretraining else "none"})
    if pretraining is not None:  # the encoders' provenance, also when the pretraining step was a cache hit
        mlflow.log_params(
            {"photo_pretraining.catalog_hash": pretraining.catalog_hash, "photo_pretraining.epochs": pretraining.epochs}
        )
        mlflow.log_metrics(pretraining.metrics)
    return result.bundle
