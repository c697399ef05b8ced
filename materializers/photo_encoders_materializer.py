"""PhotoEncoders <-> photo_encoders.safetensors + photo_encoders.json (no pickle)."""

from __future__ import annotations

import tempfile
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.utils import io_utils

from kickvision.model.photo_encoders import PhotoEncoders


class PhotoEncodersMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (PhotoEncoders,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: PhotoEncoders) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            data.save(tmp)
            io_utils.copy_dir(tmp, self.uri, overwrite=True)

    def load(self, data_type: type[Any]) -> PhotoEncoders:
        with tempfile.TemporaryDirectory() as local:
            io_utils.copy_dir(self.uri, local, overwrite=True)
            return PhotoEncoders.load(local)

    def extract_metadata(self, data: PhotoEncoders) -> dict[str, Any]:
        if data.record is None:
            return {"method": "none"}
        return {"method": data.record.method, "catalog_hash": data.record.catalog_hash, **data.record.metrics}
