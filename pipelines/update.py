"""The update pipeline: a catalog drop on top of the champion, without forgetting.

load_champion + ingest -> validate -> preprocess_drop -> ewc_update -> prune -> evaluate -> evaluate_update
-> register_update. The prune step keeps the champion's structure (pruned or not) so its Fisher, replay
and index stay aligned; pruning happens in the training pipeline.
"""

from typing import Any

from zenml import pipeline
from zenml.enums import ExecutionMode

from kickvision.config import (
    ContinualConfig,
    DataConfig,
    EvaluateConfig,
    PruneConfig,
    RegisterConfig,
    TrainConfig,
    ValidateConfig,
)
from steps import (
    evaluate_model,
    evaluate_update,
    ewc_update,
    ingest_catalog,
    load_champion,
    preprocess_drop,
    prune_model,
    register_update,
    validate_catalog,
)


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def update_pipeline(
    drop_dir: str,
    content_hash: str,
    champion_uri: str,
    champion_version: str,
    validation: ValidateConfig,
    data: DataConfig,
    continual: ContinualConfig,
    train: TrainConfig,
    registry: RegisterConfig,
    prune: PruneConfig,
    evaluation: EvaluateConfig,
    seed: int = 42,
) -> Any:
    champion, classes = load_champion(model_uri=champion_uri, version=champion_version)
    catalog = ingest_catalog(catalog_dir=drop_dir, content_hash=content_hash)
    valid_catalog, _quarantine = validate_catalog(catalog=catalog, config=validation, known_categories=classes)
    prepared = preprocess_drop(catalog=valid_catalog, champion=champion, data=data, validation=validation, seed=seed)
    bundle = ewc_update(
        champion=champion, data=prepared, continual=continual, train=train, validation=validation, seed=seed
    )
    bundle = prune_model(
        bundle=bundle, data=prepared, prune=prune, train=train, continual=continual, seed=seed, keep_structure=True
    )
    report = evaluate_model(bundle=bundle, data=prepared, config=evaluation)
    update_metrics = evaluate_update(champion=champion, bundle=bundle, data=prepared)
    return register_update(
        bundle=bundle,
        report=report,
        update_metrics=update_metrics,
        data=prepared,
        registry=registry,
        continual=continual,
    )
