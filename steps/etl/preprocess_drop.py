"""preprocess_drop: encode a catalog drop the way the champion was trained (its tokenizer, transform, labels)."""

from typing import Annotated

from zenml import step
from zenml.logger import get_logger

from kickvision.config import DataConfig, ValidateConfig
from kickvision.data.catalog import Catalog
from kickvision.data.prepare import PreparedData
from kickvision.model.bundle import ModelBundle
from kickvision.train.update import encode_drop
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
    prepared = encode_drop(catalog, champion, data, validation.max_image_pixels, seed)
    new = [c for c in prepared.classes if c not in champion.classes]
    logger.info("drop split: %s; new categories: %s", prepared.split_counts(), new or "none")
    return prepared
