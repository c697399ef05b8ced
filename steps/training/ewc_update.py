"""ewc_update: the champion learns the drop (EWC + replay); the index is rebuilt for recommendations."""

from typing import Annotated

import mlflow
from zenml import get_step_context, step

from kickvision.config import ContinualConfig, TrainConfig, ValidateConfig
from kickvision.data.prepare import PreparedData
from kickvision.evaluate.calibration import calibrate_temperature
from kickvision.model.bundle import ModelBundle
from kickvision.tracking import flatten_params
from kickvision.train.update import rebuild_index, update_bundle
from materializers import ModelBundleMaterializer


@step(experiment_tracker=True, enable_cache=False, output_materializers=ModelBundleMaterializer)
def ewc_update(
    champion: ModelBundle,
    data: PreparedData,
    continual: ContinualConfig,
    train: TrainConfig,
    validation: ValidateConfig,
    seed: int,
) -> Annotated[ModelBundle, "updated_model"]:
    """Grow the classifier for new categories and train on drop + replay (EWC, DER++, LwF, weight aligning
    as the `continual` section says).

    Args:
        champion: the model being updated, with its Fisher, replay exemplars and holdout.
        data: the drop, prepared against the champion's label map.
        continual: the update recipe (λ, distillation, bias correction), epochs, replay and Fisher settings.
        train: loss settings shared with training (label smoothing, contrastive weight, device).
        validation: the image pixel bound used when old products' photos are re-read for the index.
        seed: update seed.
    """
    mlflow.log_params(flatten_params({"continual": continual.model_dump(mode="json"), "seed": seed}))
    mlflow.log_params({f"split_{k}_rows": v for k, v in data.split_counts().items()})
    mlflow.set_tags(
        {
            "pipeline": "update",
            "parent_version": champion.spec.lineage.registered_version or "",
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
    transform = bundle.image_transform(validation.max_image_pixels)
    bundle.index, counts = rebuild_index(bundle, champion.index, data, transform)
    mlflow.log_metrics(calibrate_temperature(bundle, data))
    mlflow.log_metrics(
        {
            **counts,
            **result.metrics,
            "index_products": len(bundle.index),
            "replay_exemplars": len(bundle.continual.replay),
            "replay_stored_bytes": bundle.continual.replay.stored_bytes(),
            "holdout_products": len(bundle.continual.holdout),
            "validation_memory_products": len(bundle.continual.validation or ()),
            "new_classes": len(bundle.spec.lineage.new_classes),
        }
    )
    return bundle
