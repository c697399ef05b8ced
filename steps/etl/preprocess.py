"""preprocess: group-aware stratified split, label map, tokenisation, decoded-image cache."""

from typing import Annotated

from zenml import step
from zenml.logger import get_logger

from kickvision.config import DataConfig, ModelConfig, ValidateConfig
from kickvision.data.catalog import Catalog
from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import PreparedData, prepare_catalog
from kickvision.model.encoders import build_tokenizer
from materializers import PreparedDataMaterializer

logger = get_logger(__name__)


@step(output_materializers=PreparedDataMaterializer)
def preprocess_catalog(
    catalog: Catalog, data: DataConfig, model: ModelConfig, validation: ValidateConfig, seed: int
) -> Annotated[PreparedData, "prepared_data"]:
    """Encode the validated catalog for the model.

    Args:
        catalog: validated rows.
        data: split fractions and title length.
        model: image transform and text encoder (its tokenizer).
        validation: the image pixel bound used while decoding.
        seed: split seed.
    """
    tokenizer = build_tokenizer(model.text_encoder)
    transform = resolve_image_transform(model, validation.max_image_pixels)
    prepared = prepare_catalog(catalog, tokenizer, transform, data, seed)
    logger.info("split: %s, %d classes", prepared.split_counts(), len(prepared.classes))
    return prepared
