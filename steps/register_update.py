"""register_update: register the updated model; champion only if it forgot little and is no worse overall."""

from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from zenml import step

from kickvision.bundle import ModelBundle
from kickvision.config import ContinualConfig, RegisterConfig
from kickvision.data import PreparedData
from kickvision.evaluation import EvaluationReport
from kickvision.model_card import render_model_card
from kickvision.registry import example_frame, log_pyfunc, register_update_version
from pipelines.model_version import record_in_model_version


@step(experiment_tracker=True, enable_cache=False)
def register_update(
    bundle: ModelBundle,
    report: EvaluationReport,
    update_metrics: dict[str, float],
    data: PreparedData,
    registry: RegisterConfig,
    continual: ContinualConfig,
) -> dict[str, Any]:
    """Register the update as a new version (challenger) and apply the update promotion gate.

    Args:
        bundle: the updated model.
        report: its metrics on the drop's test split.
        update_metrics: before/after metrics from evaluate_update (the gate's inputs).
        data: the prepared drop (input example).
        registry: model name.
        continual: the forgetting tolerance.
    """
    info = log_pyfunc(bundle, example_frame(data, text_columns=bundle.text_columns), k=registry.recommendations)
    decision = register_update_version(
        info.model_uri,
        registry.model_name,
        parent_version=bundle.info.get("updated_from"),
        metrics=update_metrics,
        tolerance=continual.forgetting_tolerance,
        tags={"catalog_hash": data.catalog_hash, "pipeline": "update"},
    )
    card = render_model_card(
        bundle,
        report,
        data,
        registry.model_name,
        decision.version,
        "champion" if decision.promoted else "challenger",
        update_metrics=update_metrics,
    )
    mlflow.log_text(card, "model_card.md")
    MlflowClient().update_model_version(registry.model_name, decision.version, description=card)
    mlflow.set_tags(
        {
            "promotion_decision": "champion" if decision.promoted else "challenger",
            "kickvision.promotion_decision": "champion" if decision.promoted else "challenger",
            "promotion_reason": decision.reason,
            "registered_version": decision.version,
        }
    )
    record_in_model_version(card, decision.to_dict(), report.metrics)
    return {**decision.to_dict(), "test_metrics": report.metrics, "update_metrics": update_metrics}
