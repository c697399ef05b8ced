"""ModelBundle <-> the bundle folder (safetensors + JSON spec + tokenizer files)."""

from __future__ import annotations

import tempfile
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.utils import io_utils

from kickvision.model.bundle import ModelBundle, load_bundle, save_bundle
from kickvision.model.net import count_parameters


class ModelBundleMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (ModelBundle,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: ModelBundle) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            save_bundle(data, tmp)
            io_utils.copy_dir(tmp, self.uri, overwrite=True)

    def load(self, data_type: type[Any]) -> ModelBundle:
        with tempfile.TemporaryDirectory() as local:  # the loaded bundle lives in memory
            io_utils.copy_dir(self.uri, local, overwrite=True)
            return load_bundle(local)

    def extract_metadata(self, data: ModelBundle) -> dict[str, Any]:
        return {
            "parameters": count_parameters(data.model),
            "classes": len(data.classes),
            "image_size": "x".join(map(str, data.model_config.image_hw)),  # HxW
        }
