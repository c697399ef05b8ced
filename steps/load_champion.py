"""load_champion: the registered model an update starts from."""

from typing import Annotated

from zenml import step

from kickvision.bundle import ModelBundle
from kickvision.registry import load_registered_bundle
from materializers import ModelBundleMaterializer


@step(output_materializers={"champion": ModelBundleMaterializer})
def load_champion(
    model_uri: str, version: str
) -> tuple[Annotated[ModelBundle, "champion"], Annotated[list[str], "champion_classes"]]:
    """Load the champion's bundle (weights, Fisher, replay, holdout, index) from the MLflow registry.

    Args:
        model_uri: a version-pinned URI (models:/<name>/<version>), so a cached load is the same model.
        version: that version number, recorded in the bundle's provenance.
    """
    bundle = load_registered_bundle(model_uri)
    bundle.info["registered_version"] = version
    print(f"champion {model_uri}: {len(bundle.classes)} classes, {len(bundle.index or [])} indexed products")
    return bundle, list(bundle.classes)
