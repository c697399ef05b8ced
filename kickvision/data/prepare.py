"""From validated catalog rows to model inputs: leakage-safe split, label map, tokens, pixels.

Rows sharing a normalised title or an identical image form one group (union-find), and the
train/val/test split is stratified by category without ever splitting a group, so near-duplicate
listings never straddle train and test. Pixels are decoded once, through the model's
`ImageTransform`, and cached as uint8 with the tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from kickvision.config import DataConfig
from kickvision.data.catalog import Catalog, resolve_inside
from kickvision.data.images import ImageTransform
from kickvision.data.text import product_texts, tokenize_titles
from kickvision.errors import CatalogError, ConfigError

SPLITS = ("train", "val", "test")


def normalise_title(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(title).lower()).strip()


def product_groups(rows: pd.DataFrame) -> np.ndarray:
    """Group id per row: rows sharing a normalised title or an identical image are one group.

    Union-find over both keys, so a chain (A same title as B, B same image as C) is one group and
    near-duplicate products never straddle train and test.
    """
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key in (rows["title"].map(normalise_title), rows.get("image_sha1")):
        if key is None:
            continue
        first: dict[str, int] = {}
        for i, value in enumerate(key):
            if value is None or value == "":
                continue
            if value in first:
                parent[find(i)] = find(first[value])
            else:
                first[value] = i
    return np.array([find(i) for i in range(len(rows))])


def group_split(rows: pd.DataFrame, cfg: DataConfig, seed: int) -> np.ndarray:
    """'train' / 'val' / 'test' per row, stratified by category, never splitting a group."""
    groups = product_groups(rows)
    labels = rows["category"].to_numpy()
    needed = max(2, round(1 / cfg.test_fraction)) + max(2, round((1 - cfg.test_fraction) / cfg.val_fraction))
    if len(np.unique(groups)) < needed:
        raise CatalogError(
            f"the catalog has only {len(np.unique(groups))} distinct products (rows sharing a title or an image "
            f"count as one); at least {needed} are needed for train/val/test splits"
        )
    split = np.full(len(rows), "train", dtype=object)

    def carve(indices: np.ndarray, fraction: float, name: str, salt: int) -> None:
        n_splits = max(2, round(1 / fraction))
        # Fewer groups than folds in a class only weakens stratification; it never leaks.
        kfold = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed + salt)
        if np.unique(labels[indices], return_counts=True)[1].max() < n_splits:
            # sklearn refuses to stratify when every class is smaller than the fold count (a small
            # drop): hold out a group-safe random share instead.
            kfold = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed + salt)
        _, held = next(kfold.split(indices, labels[indices], groups[indices]))
        split[indices[held]] = name

    carve(np.arange(len(rows)), cfg.test_fraction, "test", 0)
    rest = np.flatnonzero(split == "train")
    carve(rest, cfg.val_fraction / (1 - cfg.test_fraction), "val", 1)
    return split


@dataclass
class PreparedData:
    """A split, encoded catalog: what training and evaluation consume.

    Decoded images are cached here (uint8) so epochs never touch the drop folder again.
    """

    rows: pd.DataFrame  # product_id, image, title, category, label, split, group (+ attributes)
    classes: list[str]
    images: np.ndarray  # uint8 [N, S, S, 3]
    input_ids: np.ndarray  # int64 [N, L]
    attention_mask: np.ndarray  # int64 [N, L]
    catalog_root: str
    catalog_hash: str
    corrections: dict[str, int] = field(default_factory=dict)  # reviewer decisions applied (data/corrections.py)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.rows["split"].to_numpy() == split)

    def labels(self) -> np.ndarray:
        # A copy: pandas' copy-on-write hands out read-only views, which torch.from_numpy warns about.
        return self.rows["label"].to_numpy(dtype=np.int64, copy=True)

    def rows_with_image_paths(self, indices: np.ndarray | None = None) -> pd.DataFrame:
        """Rows (all, or `indices`) with `image` as an absolute path inside the catalog drop."""
        rows = self.rows if indices is None else self.rows.iloc[indices]
        root = Path(self.catalog_root)
        return rows.assign(image=[str(root / p) for p in rows["image"]])

    def split_counts(self) -> dict[str, int]:
        return {s: int((self.rows["split"] == s).sum()) for s in SPLITS}


def prepare_catalog(
    catalog: Catalog,
    tokenizer,
    transform: ImageTransform,
    cfg: DataConfig,
    seed: int,
    known_classes: list[str] | None = None,
) -> PreparedData:
    """Split, label, tokenise and decode (through `transform`) a validated catalog.

    `known_classes` (a catalog drop for an existing model) keeps that label map: the known
    categories first, in order, then the drop's new ones, sorted.
    """
    rows = catalog.rows.reset_index(drop=True).copy()
    known = list(known_classes or [])
    classes = known + sorted(set(rows["category"].unique()) - set(known))
    rows["label"] = rows["category"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
    rows["group"] = product_groups(rows)
    rows["split"] = group_split(rows, cfg, seed)
    images = (
        np.stack([transform.load(resolve_inside(catalog.root, p)) for p in rows["image"]])
        if len(rows)
        else np.zeros((0, *transform.hw, 3), np.uint8)
    )
    missing = [c for c in cfg.text_columns if c not in rows]
    if missing:
        raise ConfigError(
            f"data.text_columns: the catalog has no column {', '.join(map(repr, missing))} "
            f"(it has: {', '.join(map(str, catalog.rows.columns))})"
        )
    input_ids, attention_mask = tokenize_titles(tokenizer, product_texts(rows, cfg.text_columns), cfg.max_title_tokens)
    return PreparedData(
        rows, classes, images, input_ids, attention_mask, str(catalog.root), catalog.content_hash, catalog.corrections
    )
