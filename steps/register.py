"""register: log the pyfunc, register a version (challenger), promote to champion only if better."""

from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from zenml import step

from kickvision.bundle import ModelBundle
from kickvision.config import RegisterConfig
from kickvision.data import PreparedData
from kickvision.evaluation import EvaluationReport
from kickvision.model_card import render_model_card
from kickvision.registry import example_frame, log_pyfunc, register_and_promote
from pipelines.model_version import record_in_model_version


@step(experiment_tracker=True, enable_cache=False)
def register_model(
    bundle: ModelBundle, report: EvaluationReport, data: PreparedData, registry: RegisterConfig
) -> dict[str, Any]:
    """Register the model and decide whether it becomes champion.

    Args:
        bundle: the trained model.
        report: its test metrics (logged alongside the decision).
        data: the prepared catalog; its test rows are the comparison data.
        registry: model name and promotion metric.
    """
    columns = ["image", "title", *bundle.text_columns, "category"]
    test_rows = data.rows_with_image_paths(data.indices("test"))[columns]
    info = log_pyfunc(bundle, example_frame(data, text_columns=bundle.text_columns), k=registry.recommendations)
    decision = register_and_promote(
        info.model_uri,
        registry.model_name,
        test_rows,
        registry.promotion_metric,
        tags={"catalog_hash": data.catalog_hash, "pipeline": "training"},
    )
    card = render_model_card(
        bundle, report, data, registry.model_name, decision.version, "champion" if decision.promoted else "challenger"
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
    return {**decision.to_dict(), "test_metrics": report.metrics, "model_uri": info.model_uri}
