"""register_update: register the updated model; champion only if it forgot little and is no worse overall."""

from typing import Annotated, Any

from zenml import step

from kickvision.config import ContinualConfig, RegisterConfig
from kickvision.data.merge import catalog_rows
from kickvision.data.prepare import PreparedData
from kickvision.evaluate.metrics import EvaluationReport
from kickvision.evaluate.model_card import render_model_card
from kickvision.model.bundle import ModelBundle
from kickvision.serve.pyfunc_logging import example_frame, log_pyfunc
from kickvision.serve.registry import PromotionDecision, register_update_version
from orchestration.model_version import publish_decision


@step(experiment_tracker=True, enable_cache=False)
def register_update(
    bundle: ModelBundle,
    report: EvaluationReport,
    update_metrics: dict[str, float],
    data: PreparedData,
    registry: RegisterConfig,
    continual: ContinualConfig,
) -> Annotated[dict[str, Any], "registration"]:
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
        parent_version=bundle.spec.lineage.updated_from,
        metrics=update_metrics,
        tolerance=continual.forgetting_tolerance,
        tags={"catalog_hash": data.catalog_hash, "pipeline": "update"},
    )

    def card_for(d: PromotionDecision) -> str:
        fate = "champion" if d.promoted else "challenger"
        return render_model_card(bundle, report, data, registry.model_name, d.version, fate, update_metrics)

    decision = publish_decision(card_for, decision, report.metrics)
    registration = {**decision.to_dict(), "test_metrics": report.metrics, "update_metrics": update_metrics}
    if not (decision.promoted or decision.fail_closed or decision.champion_moved):  # refused by the gate:
        # the next step is a joint retrain on everything the model learnt, with this drop
        catalogs = bundle.spec.lineage.catalog_paths
        rows = catalog_rows(catalogs) if catalogs else None
        estimate = bundle.joint_retrain_estimate_s(rows) if rows else None
        registration["joint_retrain"] = {"catalogs": catalogs, "catalog_rows": rows, "estimate_s": estimate}
    return registration
