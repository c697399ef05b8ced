"""evaluate_update: forgetting on the old categories, accuracy on the new ones, before vs after."""

import mlflow
from zenml import step

from kickvision import continual
from kickvision.bundle import ModelBundle
from kickvision.data import PreparedData


@step(experiment_tracker=True, enable_cache=False)
def evaluate_update(champion: ModelBundle, bundle: ModelBundle, data: PreparedData) -> dict[str, float]:
    """Score champion and updated model on the champion's holdout and the drop's test split.

    Args:
        champion: the model before the update (its holdout is the old test data).
        bundle: the updated model.
        data: the prepared drop.
    """
    metrics = continual.evaluate_update(champion, bundle, data)
    mlflow.log_metrics(metrics)
    print(", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics
