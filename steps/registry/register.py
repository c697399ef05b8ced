"""register: log the pyfunc, register a version (challenger), promote to champion only if better."""

from typing import Annotated, Any

from zenml import step

from kickvision.config import RegisterConfig
from kickvision.data.prepare import PreparedData
from kickvision.evaluate.metrics import EvaluationReport
from kickvision.evaluate.model_card import render_model_card
from kickvision.model.bundle import ModelBundle
from kickvision.serve.pyfunc_logging import example_frame, log_pyfunc
from kickvision.serve.registry import PromotionDecision, register_and_promote
from orchestration.model_version import publish_decision


@step(experiment_tracker=True, enable_cache=False)
def register_model(
    bundle: ModelBundle,
    report: EvaluationReport,
    data: PreparedData,
    registry: RegisterConfig,
    joint_retrain_of: list[str] | None = None,
) -> Annotated[dict[str, Any], "registration"]:
    """Register the model and decide whether it becomes champion.

    Args:
        bundle: the trained model.
        report: its test metrics (logged alongside the decision).
        data: the prepared catalog; its test rows are the comparison data.
        registry: model name and promotion metric.
        joint_retrain_of: content hashes of the drops this training is a joint retrain for (merged into
            the catalog); tagged, so a watcher restarted before it recorded the drop knows it is learnt.
    """
    columns = ["image", "title", *bundle.text_columns, "category"]
    test_rows = data.rows_with_image_paths(data.indices("test"))[columns]
    info = log_pyfunc(bundle, example_frame(data, text_columns=bundle.text_columns), k=registry.recommendations)
    decision = register_and_promote(
        info.model_uri,
        registry.model_name,
        test_rows,
        registry.promotion_metric,
        tags={"catalog_hash": data.catalog_hash, "pipeline": "training"}
        | ({"joint_retrain_of": ",".join(joint_retrain_of)} if joint_retrain_of else {}),
        replace_unloadable_champion=registry.replace_unloadable_champion,
    )

    def card_for(d: PromotionDecision) -> str:
        fate = "champion" if d.promoted else "challenger"
        return render_model_card(bundle, report, data, registry.model_name, d.version, fate)

    decision = publish_decision(card_for, decision, report.metrics)
    return {**decision.to_dict(), "test_metrics": report.metrics, "model_uri": info.model_uri}
