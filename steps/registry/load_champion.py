"""load_champion: the registered model an update starts from."""

from typing import Annotated

from zenml import step
from zenml.logger import get_logger

from kickvision.model.bundle import ModelBundle
from kickvision.serve.registry import load_registered_bundle
from materializers import ModelBundleMaterializer

logger = get_logger(__name__)


@step(output_materializers={"champion": ModelBundleMaterializer})
def load_champion(
    model_uri: str, version: str
) -> tuple[Annotated[ModelBundle, "champion"], Annotated[list[str], "champion_classes"]]:
    """Load the champion's bundle (weights, Fisher, replay, holdout, index) from the MLflow registry.

    Args:
        model_uri: a version-pinned URI (models:/<name>/<version>), so a cached load is the same model.
        version: that version number, recorded in the bundle's lineage.
    """
    bundle = load_registered_bundle(model_uri)
    bundle.spec.lineage.registered_version = version
    logger.info("champion %s: %d classes, %d indexed products", model_uri, len(bundle.classes), len(bundle.index or []))
    return bundle, list(bundle.classes)
