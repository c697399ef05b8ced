"""ZenML materializers for kickvision's artifacts: plain files (parquet, npz, safetensors, JSON), no pickle."""

from materializers.catalog_materializer import CatalogMaterializer
from materializers.evaluation_materializer import EvaluationReportMaterializer
from materializers.model_bundle_materializer import ModelBundleMaterializer
from materializers.photo_encoders_materializer import PhotoEncodersMaterializer
from materializers.prepared_data_materializer import PreparedDataMaterializer

__all__ = [
    "CatalogMaterializer",
    "EvaluationReportMaterializer",
    "ModelBundleMaterializer",
    "PhotoEncodersMaterializer",
    "PreparedDataMaterializer",
]
