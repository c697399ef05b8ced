"""PreparedData <-> arrays.npz (loaded with allow_pickle=False) + rows.parquet + meta.json."""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer

from kickvision.data.prepare import PreparedData

ARRAYS = ("images", "input_ids", "attention_mask")


class PreparedDataMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (PreparedData,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def save(self, data: PreparedData) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "arrays.npz"), "wb") as fh:
            np.savez(fh, **{name: getattr(data, name) for name in ARRAYS})
        with self.artifact_store.open(os.path.join(self.uri, "rows.parquet"), "wb") as fh:
            data.rows.to_parquet(fh, index=False)
        meta = {
            "classes": data.classes,
            "catalog_root": data.catalog_root,
            "catalog_hash": data.catalog_hash,
            "corrections": data.corrections,
        }
        with self.artifact_store.open(os.path.join(self.uri, "meta.json"), "w") as fh:
            json.dump(meta, fh)

    def load(self, data_type: type[Any]) -> PreparedData:
        with self.artifact_store.open(os.path.join(self.uri, "meta.json"), "r") as fh:
            meta = json.load(fh)
        with self.artifact_store.open(os.path.join(self.uri, "rows.parquet"), "rb") as fh:
            rows = pd.read_parquet(fh)
        with self.artifact_store.open(os.path.join(self.uri, "arrays.npz"), "rb") as fh:
            with np.load(fh, allow_pickle=False) as arrays:
                loaded = {name: arrays[name] for name in ARRAYS}
        return PreparedData(
            rows=rows,
            classes=meta["classes"],
            catalog_root=meta["catalog_root"],
            catalog_hash=meta["catalog_hash"],
            corrections=meta.get("corrections", {}),
            **loaded,
        )

    def extract_metadata(self, data: PreparedData) -> dict[str, Any]:
        return {
            "rows": len(data.rows),
            "classes": len(data.classes),
            **{f"{k}_rows": v for k, v in data.split_counts().items()},
            "image_size": "x".join(map(str, data.images.shape[1:3])) if data.images.ndim == 4 else "",  # HxW
        }
