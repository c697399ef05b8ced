"""audit: the catalog's labels judged by models that did not learn them; logged to MLflow for reviewers."""

import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import step
from zenml.logger import get_logger

from kickvision.config import EvaluateConfig
from kickvision.data.prepare import PreparedData
from kickvision.evaluate.audit import audit_html, audit_summary
from kickvision.evaluate.catalog_audit import catalog_audit
from kickvision.model.bundle import ModelBundle

logger = get_logger(__name__)


@step(experiment_tracker=True)
def audit_catalog(
    bundle: ModelBundle, data: PreparedData, config: EvaluateConfig, seed: int = 42
) -> Annotated[pd.DataFrame, "catalog_audit"]:
    """Rank every product of the prepared catalog by how much its label is doubted, out-of-sample.

    Args:
        bundle: the trained model (judges the validation and test products it never learnt).
        data: the prepared catalog.
        config: `audit` (on/off) and `audit_folds` (the out-of-fold text judge of the training rows).
        seed: the fold assignment.
    """
    if not config.audit:
        return pd.DataFrame()
    table = catalog_audit(bundle, data, folds=config.audit_folds, seed=seed)
    mlflow.log_metrics(
        {
            "audit_products": len(table),
            "audit_label_issues": int(table["label_issue"].sum()),
            "audit_near_duplicates": int((table["duplicate_of"] != "").sum()),
            "audit_near_duplicates_other_label": int((table["duplicate_label"] == "different").sum()),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "catalog_audit.csv", index=False)
        (Path(tmp) / "catalog_audit.html").write_text(audit_html(table), encoding="utf-8")
        mlflow.log_artifacts(tmp, artifact_path="audit")
    logger.info(audit_summary(table))
    return table
