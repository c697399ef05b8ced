"""evaluate: test-split metrics, per-class table and confusion matrix, to MLflow and as an artifact."""

import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
from zenml import step
from zenml.logger import get_logger

from kickvision.config import EvaluateConfig
from kickvision.data.prepare import PreparedData
from kickvision.evaluate.explain import explanation_gallery
from kickvision.evaluate.faithfulness import cam_faithfulness
from kickvision.evaluate.metrics import (
    EvaluationReport,
    evaluate_bundle,
    plot_confusion,
    reliability_diagram,
    retrieval_contact_sheet,
)
from kickvision.model.bundle import ModelBundle
from materializers import EvaluationReportMaterializer

logger = get_logger(__name__)


@step(experiment_tracker=True, enable_cache=False, output_materializers=EvaluationReportMaterializer)
def evaluate_model(
    bundle: ModelBundle, data: PreparedData, config: EvaluateConfig
) -> Annotated[EvaluationReport, "evaluation_report"]:
    """Score the model on the held-out test split; explain it (gallery) and test the explanations (ROAD).

    Args:
        bundle: the trained model.
        data: the prepared catalog (its test split).
        config: how many products the gallery and the faithfulness scores use.
    """
    report = evaluate_bundle(bundle, data, "test")
    mlflow.log_metrics(report.metrics)
    with tempfile.TemporaryDirectory() as tmp:
        report.per_class.to_csv(Path(tmp) / "per_class.csv", index=False)
        plot_confusion(report, Path(tmp) / "confusion_matrix.png")
        reliability_diagram(bundle, data, Path(tmp) / "reliability.png")
        if bundle.index is not None:
            retrieval_contact_sheet(bundle, data, Path(tmp) / "recommendations.png")
        mlflow.log_artifacts(tmp, artifact_path="evaluation")
    if bundle.model.image_encoders and config.gallery_per_class:
        report.gallery_html = explanation_gallery(bundle, data, per_class=config.gallery_per_class)
        mlflow.log_text(report.gallery_html, "explain/gallery.html")
    if bundle.model.image_encoders and config.faithfulness_products:
        faithfulness = cam_faithfulness(bundle, data, n=config.faithfulness_products)
        mlflow.log_metrics(faithfulness)
        report.metrics.update({k: v for k, v in faithfulness.items() if not k.endswith(("_std", "_products"))})
    logger.info("per class:\n%s", report.per_class.to_string(index=False, float_format="%.3f"))
    return report
