"""EvaluationReport <-> report.json + per_class.csv + confusion.npy (+ gallery.html), with dashboard visualisations."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from kickvision.evaluate.metrics import EvaluationReport, plot_confusion


class EvaluationReportMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (EvaluationReport,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA_ANALYSIS

    def save(self, data: EvaluationReport) -> None:
        meta = {"metrics": data.metrics, "classes": data.classes, "split": data.split}
        with self.artifact_store.open(os.path.join(self.uri, "report.json"), "w") as fh:
            json.dump(meta, fh, indent=2)
        with self.artifact_store.open(os.path.join(self.uri, "per_class.csv"), "w") as fh:
            data.per_class.to_csv(fh, index=False)
        with self.artifact_store.open(os.path.join(self.uri, "confusion.npy"), "wb") as fh:
            np.save(fh, data.confusion, allow_pickle=False)
        if data.gallery_html:
            with self.artifact_store.open(os.path.join(self.uri, "gallery.html"), "w") as fh:
                fh.write(data.gallery_html)

    def load(self, data_type: type[Any]) -> EvaluationReport:
        with self.artifact_store.open(os.path.join(self.uri, "report.json"), "r") as fh:
            meta = json.load(fh)
        with self.artifact_store.open(os.path.join(self.uri, "per_class.csv"), "r") as fh:
            per_class = pd.read_csv(fh)
        with self.artifact_store.open(os.path.join(self.uri, "confusion.npy"), "rb") as fh:
            confusion = np.load(fh, allow_pickle=False)
        gallery = None
        if fileio.exists(os.path.join(self.uri, "gallery.html")):
            with self.artifact_store.open(os.path.join(self.uri, "gallery.html"), "r") as fh:
                gallery = fh.read()
        return EvaluationReport(meta["metrics"], per_class, confusion, meta["classes"], meta["split"], gallery)

    def extract_metadata(self, data: EvaluationReport) -> dict[str, Any]:
        return dict(data.metrics)

    def save_visualizations(self, data: EvaluationReport) -> dict[str, VisualizationType]:
        png = os.path.join(self.uri, "confusion.png")
        with tempfile.TemporaryDirectory() as tmp:
            fileio.copy(str(plot_confusion(data, os.path.join(tmp, "c.png"))), png, overwrite=True)
        html = os.path.join(self.uri, "per_class.html")
        with self.artifact_store.open(html, "w") as fh:
            fh.write(data.per_class.to_html(index=False, float_format="%.3f"))
        visualizations = {png: VisualizationType.IMAGE, html: VisualizationType.HTML}
        if data.gallery_html:  # the explanation gallery, self-contained, in the ZenML dashboard too
            gallery = os.path.join(self.uri, "gallery_visualization.html")
            with self.artifact_store.open(gallery, "w") as fh:
                fh.write(data.gallery_html)
            visualizations[gallery] = VisualizationType.HTML
        return visualizations
