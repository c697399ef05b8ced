"""preprocess: group-aware stratified split, label map, tokenisation, decoded-image cache."""

from zenml import step

from kickvision.catalog import Catalog
from kickvision.config import DataConfig, ModelConfig, ValidateConfig
from kickvision.data import PreparedData, prepare_catalog
from kickvision.model import build_tokenizer
from materializers import PreparedDataMaterializer


@step(output_materializers=PreparedDataMaterializer)
def preprocess_catalog(
    catalog: Catalog, data: DataConfig, model: ModelConfig, validation: ValidateConfig, seed: int
) -> PreparedData:
    """Encode the validated catalog for the model.

    Args:
        catalog: validated rows.
        data: split fractions and title length.
        model: image size and text encoder (its tokenizer).
        validation: the image pixel bound used while decoding.
        seed: split seed.
    """
    tokenizer = build_tokenizer(model.text_encoder)
    prepared = prepare_catalog(catalog, tokenizer, model.image_size, data, seed, validation.max_image_pixels)
    print(f"split: {prepared.split_counts()}, {len(prepared.classes)} classes")
    return prepared
