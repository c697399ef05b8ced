"""Catalog <-> rows.parquet + catalog.json in the artifact store."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

from kickvision.data.catalog import Catalog


class CatalogMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (Catalog,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def save(self, data: Catalog) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "rows.parquet"), "wb") as fh:
            data.rows.to_parquet(fh, index=False)
        meta = {
            "root": str(data.root),
            "content_hash": data.content_hash,
            "exclusions": data.exclusions,
            "corrections": data.corrections,
        }
        with self.artifact_store.open(os.path.join(self.uri, "catalog.json"), "w") as fh:
            json.dump(meta, fh)

    def load(self, data_type: type[Any]) -> Catalog:
        with self.artifact_store.open(os.path.join(self.uri, "catalog.json"), "r") as fh:
            meta = json.load(fh)
        with self.artifact_store.open(os.path.join(self.uri, "rows.parquet"), "rb") as fh:
            rows = pd.read_parquet(fh)
        return Catalog(
            root=Path(meta["root"]),
            rows=rows,
            content_hash=meta["content_hash"],
            exclusions=meta.get("exclusions", {}),
            corrections=meta.get("corrections", {}),
        )

    def extract_metadata(self, data: Catalog) -> dict[str, Any]:
        counts = data.rows["category"].value_counts().to_dict() if "category" in data.rows else {}
        return {
            "rows": len(data.rows),
            "content_hash": data.content_hash,
            "drop": data.name,
            "categories": {str(k): int(v) for k, v in counts.items()},
            **{f"corrections_{k}": int(v) for k, v in data.corrections.items()},
        }

    def save_visualizations(self, data: Catalog) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, "preview.html")
        with self.artifact_store.open(path, "w") as fh:
            fh.write(data.rows.head(50).to_html(index=False))
        return {path: VisualizationType.HTML}
