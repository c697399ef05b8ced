"""How a catalog-drop update did: forgetting on the old categories, accuracy on the new ones, before vs after."""

from __future__ import annotations

import numpy as np

from kickvision.data.prepare import PreparedData
from kickvision.model.bundle import ModelBundle
from kickvision.model.memory import ExemplarSet
from kickvision.model.predict import predict_arrays


def evaluate_update(before: ModelBundle, after: ModelBundle, drop: PreparedData) -> dict[str, float]:
    """Old-category, new and overall top-1 of the champion (before) and the updated model (after).

    old: the champion's holdout (its catalogs' test products, never trained on);
    new: the drop's test products of categories the champion did not know, or, when the drop brings
    no new category, all its test products; combined: holdout ∪ drop test.
    """
    holdout = before.continual.holdout
    drop_test = ExemplarSet.from_prepared(drop, drop.indices("test"))

    def top1(bundle: ModelBundle, items: ExemplarSet) -> np.ndarray:
        if not len(items):
            return np.zeros(0, dtype=bool)
        logits, _ = predict_arrays(bundle.model, items.images, items.input_ids, items.attention_mask)
        return logits.argmax(1) == items.labels(after.classes)

    old_before, old_after = top1(before, holdout), top1(after, holdout)
    drop_before, drop_after = top1(before, drop_test), top1(after, drop_test)
    is_new = ~drop_test.rows["category"].isin(before.classes).to_numpy() if len(drop_test) else np.zeros(0, bool)
    new_mask = is_new if is_new.any() else np.ones(len(drop_test), dtype=bool)

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if len(x) else float("nan")

    metrics = {
        "update_old_top1_before": mean(old_before),
        "update_old_top1_after": mean(old_after),
        "update_new_top1": mean(drop_after[new_mask]),
        "update_drop_top1": mean(drop_after),
        "update_combined_top1_before": mean(np.concatenate([old_before, drop_before])),
        "update_combined_top1_after": mean(np.concatenate([old_after, drop_after])),
        "update_holdout_products": float(len(holdout)),
        "update_drop_test_products": float(len(drop_test)),
        "update_new_classes": float(len(after.classes) - len(before.classes)),
    }
    metrics["update_forgetting"] = metrics["update_old_top1_before"] - metrics["update_old_top1_after"]
    return metrics
