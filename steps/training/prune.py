"""prune: structured pruning + short fine-tune; the pruned model is kept only within the accuracy tolerances."""

from typing import Annotated

import mlflow
from zenml import step
from zenml.logger import get_logger

from kickvision.config import ContinualConfig, PruneConfig, TrainConfig
from kickvision.data.prepare import PreparedData
from kickvision.model.bundle import ModelBundle
from kickvision.serve.release import equip_for_release
from kickvision.tracking import flatten_params
from kickvision.train.prune import prune_bundle
from materializers import ModelBundleMaterializer

logger = get_logger(__name__)


@step(experiment_tracker=True, enable_cache=False, output_materializers=ModelBundleMaterializer)
def prune_model(
    bundle: ModelBundle,
    data: PreparedData,
    prune: PruneConfig,
    train: TrainConfig,
    continual: ContinualConfig,
    seed: int,
    keep_structure: bool = False,
) -> Annotated[ModelBundle, "release_model"]:
    """Prune every encoder to `prune.ratio`, fine-tune, and keep the result only within `prune.tolerance`
    of validation top-1 (and `prune.macro_f1_tolerance` of validation macro-F1, where set).

    Args:
        bundle: the trained (or updated) model.
        data: its catalog; the train split fine-tunes, the validation split gates.
        prune: ratio, fine-tune epochs, tolerances.
        train: loss and device settings for the fine-tune.
        continual: what the pruned model must carry for its next update (recomputed for its shapes).
        seed: fine-tune seed.
        keep_structure: the update pipeline's setting: a model updated from a champion keeps the
            champion's structure, so its Fisher, replay and index stay aligned.
    """
    mlflow.log_params(flatten_params({"prune": prune.model_dump(mode="json")}))
    if not prune.enabled or keep_structure:
        reason = "prune.enabled is false" if not prune.enabled else "an update keeps its champion's structure"
        mlflow.set_tags({"prune_decision": "skipped", "prune_reason": reason})
        logger.info("prune: skipped (%s)", reason)
        return bundle
    result = prune_bundle(
        bundle,
        data,
        prune,
        train,
        seed=seed,
        on_epoch_end=lambda epoch, metrics: mlflow.log_metrics(
            {f"prune_finetune_{k}": v for k, v in metrics.items()}, step=epoch
        ),
    )
    mlflow.log_metrics(result.metrics)
    decision = "pruned" if result.kept_pruned else "kept_unpruned"
    mlflow.set_tags({"prune_decision": decision, "prune_reason": result.reason})
    logger.info("prune: %s", result.reason)
    if result.kept_pruned and result.bundle is not bundle:
        votes = result.bundle.spec.training.branch_head_weights  # the pruned model's own (train/fusion.py)
        mlflow.log_params({f"pruned_branch_head_weight.{k}": v for k, v in votes.items()})
        mlflow.log_metrics(
            {f"pruned_{k}": v for k, v in equip_for_release(result.bundle, data, continual, seed).items()}
        )
    return result.bundle
