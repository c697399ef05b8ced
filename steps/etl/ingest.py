"""ingest: read a catalog drop folder into a versioned Catalog artifact."""

from typing import Annotated

from zenml import step

from kickvision.data.catalog import Catalog, hash_drop, read_catalog
from kickvision.errors import CatalogError
from materializers import CatalogMaterializer


@step(output_materializers=CatalogMaterializer)
def ingest_catalog(catalog_dir: str, content_hash: str) -> Annotated[Catalog, "catalog"]:
    """Read the drop at `catalog_dir`.

    Args:
        catalog_dir: the drop folder (catalog.csv + images).
        content_hash: hash_drop(catalog_dir) computed at launch; as a parameter it makes an
            unchanged drop a cache hit and a changed one a miss. Empty for scheduled runs, which
            read whatever the folder holds when they fire (and run with caching off).
    """
    current = hash_drop(catalog_dir)
    if content_hash and current != content_hash:
        raise CatalogError(f"catalog drop {catalog_dir} changed while the run was starting; run again")
    return read_catalog(catalog_dir, content_hash=current)
