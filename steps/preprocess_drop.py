"""preprocess_drop: encode a catalog drop the way the champion was trained (its tokenizer, size, labels)."""

from zenml import step

from kickvision.bundle import ModelBundle
from kickvision.catalog import Catalog
from kickvision.config import DataConfig, ValidateConfig
from kickvision.data import PreparedData, prepare_catalog
from materializers import PreparedDataMaterializer


@step(output_materializers=PreparedDataMaterializer)
def preprocess_drop(
    catalog: Catalog, champion: ModelBundle, data: DataConfig, validation: ValidateConfig, seed: int
) -> PreparedData:
    """Split and encode the drop against the champion's label map (old categories first, then new ones).

    Args:
        catalog: the drop's validated rows.
        champion: the model being updated (tokenizer, image size, title length, text columns, classes).
        data: split fractions.
        validation: the image pixel bound used while decoding.
        seed: split seed.
    """
    cfg = data.model_copy(update={"max_title_tokens": champion.max_title_tokens, "text_columns": champion.text_columns})
    prepared = prepare_catalog(
        catalog,
        champion.tokenizer,
        champion.model_config.image_size,
        cfg,
        seed,
        validation.max_image_pixels,
        known_classes=champion.classes,
    )
    new = [c for c in prepared.classes if c not in champion.classes]
    print(f"drop split: {prepared.split_counts()}; new categories: {new or 'none'}")
    return prepared
