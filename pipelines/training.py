"""The training pipeline: ingest -> validate -> preprocess -> train -> evaluate -> register."""

from typing import Any

from zenml import pipeline

from kickvision.config import DataConfig, ModelConfig, RegisterConfig, TrainConfig, ValidateConfig
from steps import (
    evaluate_model,
    ingest_catalog,
    preprocess_catalog,
    register_model,
    train_model,
    validate_catalog,
)


@pipeline(enable_cache=True)
def training_pipeline(
    catalog_dir: str,
    content_hash: str,
    validate: ValidateConfig,
    data: DataConfig,
    model: ModelConfig,
    train: TrainConfig,
    registry: RegisterConfig,
    seed: int = 42,
) -> Any:
    catalog = ingest_catalog(catalog_dir=catalog_dir, content_hash=content_hash)
    valid_catalog, _quarantine = validate_catalog(catalog=catalog, config=validate)
    prepared = preprocess_catalog(catalog=valid_catalog, data=data, model=model, validate=validate, seed=seed)
    bundle = train_model(data=prepared, model=model, train=train, data_config=data, seed=seed)
    report = evaluate_model(bundle=bundle, data=prepared)
    return register_model(bundle=bundle, report=report, data=prepared, registry=registry)
