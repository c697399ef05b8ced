"""Drift of a catalog drop from the catalog a model learnt, and whether an update can absorb it.

Two signals, each against what the model showed on its own held-out products:

- *Far products*: for each product of the model's test split (in its recommendation index), the
  cosine similarity of its fused embedding to its nearest other catalog product says what "new but
  familiar" looks like. A drop product is far when its similarity to its nearest other catalog
  product (one with another product id) falls below that reference's `FAR_QUANTILE` quantile;
  without drift, about that fraction of a drop is far by chance. Products of new categories are
  expected to be far and are counted apart.
- *Agreement*: how often the model's prediction matches the drop's label on known categories,
  against its validation top-1. A fused embedding is trained to separate categories, so photos or
  titles unlike anything seen may still land near a catalog product; the model then disagrees with
  the labels far more often than on validation.

Advice: when known-category products are far more often than `RETRAIN_DRIFT`, or agreement falls
more than `AGREEMENT_DROP` below validation top-1, the drop has moved away from what the model
learnt (new photography, a new kind of product, or labels that mean something else): review the
disagreements, then a full retrain. Otherwise an update (EWC + replay) absorbs it, new categories
included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kickvision.model.index import EmbeddingIndex

FAR_QUANTILE = 0.05
RETRAIN_DRIFT = 0.25
AGREEMENT_DROP = 0.15


@dataclass
class DriftReport:
    products: int
    known_products: int
    new_categories: dict[str, int]  # category the model does not know -> products
    far_threshold: float  # cosine similarity to the nearest catalog product
    expected_far: float  # FAR_QUANTILE: the far fraction of a drop like the catalog
    drift: float  # far fraction among known-category products
    agreement: float | None  # prediction == label, known-category products
    expected_agreement: float | None  # the model's validation top-1
    advice: str

    def to_dict(self) -> dict:
        return asdict(self)


def nearest_other(index: EmbeddingIndex, queries: np.ndarray, product_ids: list[str]) -> np.ndarray:
    """Cosine similarity of each query to its nearest catalog product with another product id."""
    if len(queries) == 0:
        return np.zeros(0, np.float32)
    _, scores = index.search(queries, k=1, exclude_ids=[str(p) for p in product_ids])
    return np.nan_to_num(scores[:, 0], neginf=-1.0)


def reference_similarities(index: EmbeddingIndex) -> np.ndarray:
    """Each held-out (test) catalog product's similarity to its nearest other catalog product; every
    product's when the index records no split."""
    items = index.items
    held = np.flatnonzero(items["split"].to_numpy() == "test") if "split" in items else np.arange(len(items))
    if len(held) == 0:
        held = np.arange(len(items))
    return nearest_other(index, index.embeddings[held].float().numpy(), items["product_id"].iloc[held].tolist())


def drift_report(
    embeddings: np.ndarray,
    product_ids: list[str],
    categories: list[str],
    predicted: list[str],
    index: EmbeddingIndex,
    classes: list[str],
    val_top1: float | None = None,
    command: str = "",
) -> DriftReport:
    """Drift of a drop's products (unit-norm fused embeddings, labels, predictions) from `index`."""
    reference = reference_similarities(index)
    threshold = float(np.quantile(reference, FAR_QUANTILE)) if len(reference) else 0.0
    # A product the catalog already holds (same id, e.g. a re-listed one) is not its own evidence.
    similarity = nearest_other(index, np.asarray(embeddings, np.float32), product_ids)
    labels = np.asarray(categories, dtype=object)
    known = np.array([c in classes for c in categories], bool)
    new: dict[str, int] = {}
    for c in labels[~known]:
        new[str(c)] = new.get(str(c), 0) + 1
    drift = float((similarity[known] < threshold).mean()) if known.any() else 0.0
    agreement = float((np.asarray(predicted, dtype=object)[known] == labels[known]).mean()) if known.any() else None
    reasons = []
    if known.any() and drift > RETRAIN_DRIFT:
        reasons.append(
            f"{drift:.0%} of its known-category products lie far from the training catalog "
            f"(about {FAR_QUANTILE:.0%} would by chance)"
        )
    if agreement is not None and val_top1 is not None and agreement < val_top1 - AGREEMENT_DROP:
        reasons.append(f"the model agrees with {agreement:.0%} of its labels against {val_top1:.0%} on validation")
    if reasons:
        advice = (
            "full retrain: " + "; ".join(reasons) + ". Review the disagreements first (wrong labels?), "
            "then train on the catalog and the drop together"
        )
    else:
        news = f", and learn {len(new)} new categor{'y' if len(new) == 1 else 'ies'}" if new else ""
        advice = f"update: the drop resembles the training catalog{news}" + (f" ({command})" if command else "")
    return DriftReport(
        len(categories), int(known.sum()), new, threshold, FAR_QUANTILE, drift, agreement, val_top1, advice
    )
