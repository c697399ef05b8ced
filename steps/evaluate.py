"""evaluate: test-split metrics, per-class table and confusion matrix, to MLflow and as an artifact."""

import tempfile
from pathlib import Path

import mlflow
from zenml import step

from kickvision.bundle import ModelBundle
from kickvision.data import PreparedData
from kickvision.evaluation import (
    EvaluationReport,
    evaluate_bundle,
    plot_confusion,
    reliability_diagram,
    retrieval_contact_sheet,
)
from kickvision.explain import explanation_gallery
from materializers import EvaluationReportMaterializer


@step(experiment_tracker=True, enable_cache=False, output_materializers=EvaluationReportMaterializer)
def evaluate_model(bundle: ModelBundle, data: PreparedData) -> EvaluationReport:
    """Score the model on the held-out test split.

    Args:
        bundle: the trained model.
        data: the prepared catalog (its test split).
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
    if bundle.model.image_encoders:
        mlflow.log_text(explanation_gallery(bundle, data), "explain/gallery.html")
    print(report.per_class.to_string(index=False, float_format="%.3f"))
    return report
