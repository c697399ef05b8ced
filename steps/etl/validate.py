"""validate: Great Expectations row checks; bad rows are quarantined with a reason."""

import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from zenml import step
from zenml.logger import get_logger

from kickvision.config import ValidateConfig
from kickvision.data.catalog import Catalog
from kickvision.data.validation import quarantine_bad_rows, usable_or_raise
from materializers import CatalogMaterializer

logger = get_logger(__name__)


@step(experiment_tracker=True, output_materializers={"valid_catalog": CatalogMaterializer})
def validate_catalog(
    catalog: Catalog, config: ValidateConfig, known_categories: list[str] | None = None
) -> tuple[Annotated[Catalog, "valid_catalog"], Annotated[pd.DataFrame, "quarantine"]]:
    """Quarantine bad rows; fail with one clear message only if too few good rows remain.

    Args:
        catalog: the ingested drop.
        config: the `validate` section of the run config.
        known_categories: for an update, the champion's categories (a few new rows of one are fine).
    """
    result = quarantine_bad_rows(catalog, config, known_categories)
    mlflow.log_metrics(
        {
            "catalog_rows": result.total_rows,
            "valid_rows": result.good_rows,
            "quarantined_rows": len(result.quarantine),
            **{f"corrections_{k}": v for k, v in catalog.corrections.items()},  # reviewer decisions applied
        }
    )
    mlflow.set_tags({"catalog_hash": catalog.content_hash, "catalog_drop": catalog.name})
    with tempfile.TemporaryDirectory() as tmp:  # logged before failing, so a bad drop is explained
        path = Path(tmp) / "quarantine.csv"
        result.quarantine.to_csv(path, index=False)
        mlflow.log_artifact(str(path), artifact_path="validation")
    mlflow.log_text(result.data_docs_html, "validation/data_docs.html")
    logger.info(result.summary())
    usable_or_raise(result, config)
    return result.catalog, result.quarantine
