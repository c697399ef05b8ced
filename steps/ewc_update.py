"""ewc_update: the champion learns the drop (EWC + replay); the index is rebuilt for recommendations."""

import mlflow
from zenml import get_step_context, step

from kickvision.bundle import ModelBundle
from kickvision.calibration import calibrate_temperature
from kickvision.config import ContinualConfig, TrainConfig
from kickvision.continual import rebuild_index, update_bundle
from kickvision.data import PreparedData
from kickvision.tracking import flatten_params
from materializers import ModelBundleMaterializer


@step(experiment_tracker=True, enable_cache=False, output_materializers=ModelBundleMaterializer)
def ewc_update(
    champion: ModelBundle, data: PreparedData, continual: ContinualConfig, train: TrainConfig, seed: int
) -> ModelBundle:
    """Grow the classifier for new categories and train on drop + replay under the EWC penalty.

    Args:
        champion: the model being updated, with its Fisher, replay exemplars and holdout.
        data: the drop, prepared against the champion's label map.
        continual: λ, epochs, replay and Fisher settings.
        train: loss settings shared with training (label smoothing, contrastive weight, device).
        seed: update seed.
    """
    mlflow.log_params(flatten_params({"continual": continual.model_dump(mode="json"), "seed": seed}))
    mlflow.log_params({f"split_{k}_rows": v for k, v in data.split_counts().items()})
    mlflow.set_tags(
        {
            "pipeline": "update",
            "parent_version": champion.info.get("registered_version", ""),
            "kickvision.zenml_run_id": str(get_step_context().pipeline_run.id),
        }
    )
    result = update_bundle(
        champion,
        data,
        continual,
        train,
        seed=seed,
        on_epoch_end=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
    )
    bundle = result.bundle
    bundle.index, counts = rebuild_index(bundle, champion.index, data)
    mlflow.log_metrics(calibrate_temperature(bundle, data))
    mlflow.log_metrics(
        {
            **counts,
            "index_products": len(bundle.index),
            "replay_exemplars": len(bundle.continual.replay),
            "holdout_products": len(bundle.continual.holdout),
            "new_classes": len(bundle.info["new_classes"]),
        }
    )
    return bundle
