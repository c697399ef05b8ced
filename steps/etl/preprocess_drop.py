"""preprocess_drop: encode a catalog drop the way the champion was trained (its tokenizer, transform, labels)."""

from typing import Annotated

from zenml import step
from zenml.logger import get_logger

from kickvision.config import DataConfig, ValidateConfig
from kickvision.data.catalog import Catalog
from kickvision.data.prepare import PreparedData, prepare_catalog
from kickvision.model.bundle import ModelBundle
from materializers import PreparedDataMaterializer

logger = get_logger(__name__)


@step(output_materializers=PreparedDataMaterializer)
def preprocess_drop(
    catalog: Catalog, champion: ModelBundle, data: DataConfig, validation: ValidateConfig, seed: int
) -> Annotated[PreparedData, "prepared_drop"]:
    """Split and encode the drop against the champion's label map (old categories first, then new ones).

    Args:
        catalog: the drop's validated rows.
        champion: the model being updated (tokenizer, image transform, title length, text columns, classes).
        data: split fractions.
        validation: the image pixel bound used while decoding.
        seed: split seed.
    """
    cfg = data.model_copy(update={"max_title_tokens": champion.max_title_tokens, "text_columns": champion.text_columns})
    transform = champion.image_transform(validation.max_image_pixels)
    prepared = prepare_catalog(catalog, champion.tokenizer, transform, cfg, seed, known_classes=champion.classes)
    new = [c for c in prepared.classes if c not in champion.classes]
    logger.info("drop split: %s; new categories: %s", prepared.split_counts(), new or "none")
    return prepared
