"""The pretraining pipeline: ingest -> validate -> preprocess -> pretrain_photos.

The same steps with the same parameters as the training pipeline's first four, so a later training
run on the same catalog and config finds its photo encoders in the cache.
"""

from typing import Any

from zenml import pipeline
from zenml.enums import ExecutionMode

from kickvision.config import DataConfig, ModelConfig, PretrainConfig, TrainConfig, ValidateConfig
from steps import ingest_catalog, preprocess_catalog, pretrain_photos, validate_catalog


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def pretraining_pipeline(
    catalog_dir: str,
    content_hash: str,
    validation: ValidateConfig,
    data: DataConfig,
    model: ModelConfig,
    train: TrainConfig,
    pretrain: PretrainConfig,
    seed: int = 42,
) -> Any:
    catalog = ingest_catalog(catalog_dir=catalog_dir, content_hash=content_hash)
    valid_catalog, _quarantine = validate_catalog(catalog=catalog, config=validation)
    prepared = preprocess_catalog(catalog=valid_catalog, data=data, model=model, validation=validation, seed=seed)
    return pretrain_photos(data=prepared, model=model, pretrain_config=pretrain, train=train, seed=seed)
