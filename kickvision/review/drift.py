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


def _nearest(
    queries: np.ndarray,
    items: np.ndarray,
    skip_self: bool = False,
    query_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Cosine similarity of each query to its nearest item (not itself; not an item with its product id)."""
    best = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), 1024):
        sims = queries[start : start + 1024] @ items.T
        if skip_self:
            sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        if query_ids is not None and item_ids is not None:
            sims[query_ids[start : start + 1024, None] == item_ids[None, :]] = -np.inf
        best[start : start + len(sims)] = sims.max(1) if sims.shape[1] else -1.0
    return best


def reference_similarities(index: EmbeddingIndex) -> np.ndarray:
    """Nearest-neighbour similarity of each held-out catalog product to the rest of the catalog."""
    vectors = index.embeddings.float().numpy()
    split = index.items["split"].to_numpy() if "split" in index.items else None
    held = np.flatnonzero(split == "test") if split is not None else np.array([], int)
    if len(held) and len(held) < len(vectors):
        rest = np.setdiff1d(np.arange(len(vectors)), held)
        return _nearest(vectors[held], vectors[rest])
    return _nearest(vectors, vectors, skip_self=True)  # no split recorded: leave-one-out over the catalog


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
    similarity = _nearest(
        np.asarray(embeddings, np.float32),
        index.embeddings.float().numpy(),
        query_ids=np.asarray(product_ids, dtype=str),
        item_ids=index.items["product_id"].astype(str).to_numpy(),
    )
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
