"""The ZenML Model Control Plane side of a run.

Every training or update run creates a version of the ZenML model named like the MLflow registered
model, so the dashboard groups a run's artifacts (data, bundle, evaluation report) under it. The
register steps publish the model card (on the MLflow run and version, and rendered as markdown in
the ZenML dashboard), the registry decision and the test metrics, and mark the version
`production` when it became the MLflow champion. MLflow
stays the source of truth for serving: its `champion` alias is what `predict` loads.
"""

from __future__ import annotations

from collections.abc import Callable

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from zenml import Model, get_step_context, log_metadata, save_artifact
from zenml.enums import ModelStages
from zenml.types import MarkdownString

from kickvision.config import RunConfig
from kickvision.evaluate.model_card import LIMITATIONS
from kickvision.serve.registry import PromotionDecision, first_line, move_champion, refuse_unless_failed_closed

USE_CASES = (
    "Categorising footwear products of an e-commerce catalog from a photo and a title, and finding "
    "similar products; a merchandiser reviews low-confidence predictions (see the model card's calibration)."
)


def zenml_model(config: RunConfig, pipeline: str) -> Model:
    """A new version of the ZenML model for this run (MLflow's registry, not ZenML's, holds the weights)."""
    return Model(
        name=config.registry.model_name,
        description="Multimodal shoe classifier and recommender (photo + title).",
        use_cases=USE_CASES,
        limitations="\n".join(LIMITATIONS),
        tags=["kickvision", f"config:{config.name}", f"pipeline:{pipeline}"],
        save_models_to_registry=False,
    )


def _record_in_model_version(card: str, decision: PromotionDecision, metrics: dict[str, float]) -> None:
    """Link the model card to the step's ZenML model version and log the decision and metrics."""
    if _step_model() is None:
        return
    save_artifact(MarkdownString(card), name="model_card")  # linked to the step's model version
    log_metadata(
        {
            "mlflow_registered_version": decision.version,
            "promotion_decision": "champion" if decision.promoted else "challenger",
            "promotion_reason": decision.reason,
            "test_metrics": {k: float(v) for k, v in metrics.items()},
        },
        infer_model=True,
    )


def _publish(card: str, decision: PromotionDecision, metrics: dict[str, float]) -> None:
    fate = "champion" if decision.promoted else "challenger"
    mlflow.log_text(card, "model_card.md")
    MlflowClient().update_model_version(decision.model_name, decision.version, description=card)
    mlflow.set_tags(
        {
            "promotion_decision": fate,
            "kickvision.promotion_decision": fate,
            "promotion_reason": decision.reason,
            "registered_version": decision.version,
        }
    )
    _record_in_model_version(card, decision, metrics)


def _publish_or_fail(card: str, decision: PromotionDecision, metrics: dict[str, float]) -> None:
    """`_publish`; MLflow refusing a record is one RegistryError line (nothing was promoted: the alias
    moves after the records), or a warning when the decision already failed closed (the registry is
    what it reports)."""
    try:
        _publish(card, decision, metrics)
    except MlflowException as exc:
        why = f"cannot record the decision on {decision.model_name} v{decision.version} in MLflow"
        why += f" ({exc.error_code}: {first_line(str(exc))})"
        refuse_unless_failed_closed(decision, why, "nothing was promoted")


def publish_decision(
    card_for: Callable[[PromotionDecision], str], decision: PromotionDecision, metrics: dict[str, float]
) -> PromotionDecision:
    """From a register step, in this order: every record of the version (model card on the MLflow run
    and as the version's description, run tags, the ZenML model version's card and metadata), then
    the `champion` alias (compare-and-set, `move_champion`), then the ZenML stage. A move refused at
    the last moment rewrites the records with the final decision. Returns that decision."""
    _publish_or_fail(card_for(decision), decision, metrics)
    final = move_champion(decision)
    if final != decision:
        _publish_or_fail(card_for(final), final, metrics)
    if final.promoted and (model := _step_model()) is not None:
        model.set_stage(ModelStages.PRODUCTION, force=True)
    return final


def _step_model():
    """The running step's ZenML model version, or None (a pipeline run without one, or no step)."""
    try:
        return get_step_context().model
    except Exception:
        return None
