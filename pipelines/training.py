"""The training pipeline: ingest -> validate -> preprocess -> pretrain_photos -> train -> prune -> evaluate
-> register, and audit (the catalog's labels, beside evaluate)."""

from typing import Any

from zenml import pipeline
from zenml.enums import ExecutionMode

from kickvision.config import (
    ContinualConfig,
    DataConfig,
    EvaluateConfig,
    ModelConfig,
    PretrainConfig,
    PruneConfig,
    RegisterConfig,
    TrainConfig,
    ValidateConfig,
)
from steps import (
    audit_catalog,
    evaluate_model,
    ingest_catalog,
    preprocess_catalog,
    pretrain_photos,
    prune_model,
    register_model,
    train_model,
    validate_catalog,
)


# FAIL_FAST re-raises the failing step's own exception, so a data problem reaches the CLI as itself.
@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def training_pipeline(
    catalog_dir: str,
    content_hash: str,
    validation: ValidateConfig,
    data: DataConfig,
    model: ModelConfig,
    train: TrainConfig,
    registry: RegisterConfig,
    continual: ContinualConfig,
    prune: PruneConfig,
    evaluation: EvaluateConfig,
    pretrain: PretrainConfig,
    seed: int = 42,
    joint_retrain_of: list[str] | None = None,
) -> Any:
    catalog = ingest_catalog(catalog_dir=catalog_dir, content_hash=content_hash)
    valid_catalog, _quarantine = validate_catalog(catalog=catalog, config=validation)
    prepared = preprocess_catalog(catalog=valid_catalog, data=data, model=model, validation=validation, seed=seed)
    photo_encoders = pretrain_photos(data=prepared, model=model, pretrain_config=pretrain, train=train, seed=seed)
    bundle = train_model(
        data=prepared,
        model=model,
        train=train,
        data_config=data,
        continual=continual,
        seed=seed,
        photo_encoders=photo_encoders,
    )
    bundle = prune_model(bundle=bundle, data=prepared, prune=prune, train=train, continual=continual, seed=seed)
    report = evaluate_model(bundle=bundle, data=prepared, config=evaluation)
    audit_catalog(bundle=bundle, data=prepared, config=evaluation, seed=seed)  # a leaf: reviewers read it in MLflow
    return register_model(
        bundle=bundle, report=report, data=prepared, registry=registry, joint_retrain_of=joint_retrain_of
    )
