"""evaluate_update: forgetting on the old categories, accuracy on the new ones, before vs after."""

from typing import Annotated

import mlflow
from zenml import step
from zenml.logger import get_logger

from kickvision.data.prepare import PreparedData
from kickvision.evaluate.update import evaluate_update as score_update
from kickvision.model.bundle import ModelBundle

logger = get_logger(__name__)


@step(experiment_tracker=True, enable_cache=False)
def evaluate_update(
    champion: ModelBundle, bundle: ModelBundle, data: PreparedData
) -> Annotated[dict[str, float], "update_metrics"]:
    """Score champion and updated model on the champion's holdout and the drop's test split.

    Args:
        champion: the model before the update (its holdout is the old test data).
        bundle: the updated model.
        data: the prepared drop.
    """
    metrics = score_update(champion, bundle, data)
    mlflow.log_metrics(metrics)
    logger.info(", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics
