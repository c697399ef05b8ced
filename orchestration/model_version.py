"""The ZenML Model Control Plane side of a run.

Every training or update run creates a version of the ZenML model named like the MLflow registered
model, so the dashboard groups a run's artifacts (data, bundle, evaluation report) under it. The
register steps publish the model card (on the MLflow run and version, and rendered as markdown in
the ZenML dashboard), the registry decision and the test metrics, and mark the version
`production` when it became the MLflow champion. MLflow
stays the source of truth for serving: its `champion` alias is what `predict` loads.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from zenml import Model, get_step_context, log_metadata, save_artifact
from zenml.enums import ModelStages
from zenml.types import MarkdownString

from kickvision.config import RunConfig
from kickvision.evaluate.model_card import LIMITATIONS
from kickvision.serve.registry import PromotionDecision

USE_CASES = (
    "Categorising footwear products of an e-commerce catalog from a photo and a title, and finding "
    "similar products; a merchandiser reviews low-confidence predictions (see the model card's calibration)."
)


def zenml_model(config: RunConfig, pipeline: str) -> Model:
    """A new version of the ZenML model for this run (MLflow's registry, not ZenML's, holds the weights)."""
    return Model(
        name=config.registry.model_name,
        description="Multimodal shoe classifier and recommender (photo + title).",
        use_cases=USE_CASES,
        limitations="\n".join(LIMITATIONS),
        tags=["kickvision", f"config:{config.name}", f"pipeline:{pipeline}"],
        save_models_to_registry=False,
    )


def record_in_model_version(card: str, registration: dict[str, Any], metrics: dict[str, float]) -> None:
    """From a register step: link the model card, log the decision and metrics, stage the champion."""
    try:
        model = get_step_context().model
    except Exception:  # the pipeline was run without a ZenML model (called directly, not via the runner)
        return
    save_artifact(MarkdownString(card), name="model_card")  # linked to the step's model version
    promoted = bool(registration.get("promoted"))
    log_metadata(
        {
            "mlflow_registered_version": str(registration.get("version")),
            "promotion_decision": "champion" if promoted else "challenger",
            "promotion_reason": str(registration.get("reason", "")),
            "test_metrics": {k: float(v) for k, v in metrics.items()},
        },
        infer_model=True,
    )
    if promoted:
        model.set_stage(ModelStages.PRODUCTION, force=True)


def publish_decision(card: str, decision: PromotionDecision, metrics: dict[str, float]) -> None:
    """From a register step: the model card and the registry decision on the MLflow run and version,
    then in the ZenML model version."""
    fate = "champion" if decision.promoted else "challenger"
    mlflow.log_text(card, "model_card.md")
    MlflowClient().update_model_version(decision.model_name, decision.version, description=card)
    mlflow.set_tags(
        {
            "promotion_decision": fate,
            "kickvision.promotion_decision": fate,
            "promotion_reason": decision.reason,
            "registered_version": decision.version,
        }
    )
    record_in_model_version(card, decision.to_dict(), metrics)
