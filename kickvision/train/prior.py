"""Post-hoc logit adjustment: a model trained class-balanced, told the catalog's class prior afterwards.

Class-balanced sampling trains the classifier as if every category were equally common: its logits
estimate log p(x | y) up to a constant. Products arrive with the catalog's own prior π, and the Bayes
decision under that prior is argmax_y logit_y + log π_y (the prior-shift correction of Saerens et al.
2002; the post-hoc logit adjustment of Menon et al. 2021, run the other way round). So it only makes
sense after class-balanced training (the config refuses it after natural sampling). Partly balanced
sampling (`continual.balanced_sampling` a power x in (0, 1): a product drawn with weight 1 / n_y^x)
trains under a prior ∝ π^(1-x), which τ = x turns back into π. An update estimates π from the
drop's training products, which over-represent a drop's new categories against the whole catalog the
model serves; how far to trust that estimate is a scale τ:

1. `class_prior`: π from training labels, add-one smoothed, so a category the labels lack is made
   rarer, never impossible;
2. `choose_logit_adjustment`: the model's logits on the validation products once, then for each
   candidate τ (and τ = 0, the model as it was, always) the top-1 of argmax(logits + τ·log π); the
   best τ wins (on a tie the smaller: the lesser change), and τ·log π is added to the fused classifier's
   biases. The fused logits are that classifier's plus the branch heads' votes, so the shift reaches
   every prediction, and the saved model keeps its structure: serving, explaining and the next
   update see an ordinary classifier (whose biases then hold the shift: the next update trains from
   them and distils the champion's logits with it).
"""

from __future__ import annotations

import numpy as np
import torch

from kickvision.data.prepare import PreparedData
from kickvision.model.net import MultimodalShoeNet
from kickvision.model.predict import predict_logits


def class_prior(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(count + 1) / (n + n_classes) per class index: the add-one smoothed frequencies of `labels`."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)[:n_classes]
    return (counts + 1.0) / (counts.sum() + n_classes)


def choose_logit_adjustment(
    model: MultimodalShoeNet, prior: np.ndarray, taus: list[float], data: PreparedData, indices: np.ndarray
) -> tuple[float, float]:
    """Add τ·log `prior` to `model`'s classifier biases (in place), τ the candidate of `taus` with the
    best top-1 on rows `indices` of `data`; 0 (no change) always competes, and a tie goes to the
    smaller τ. Returns τ and that top-1."""
    logits, _ = predict_logits(model, data, indices)
    labels = data.labels()[indices]
    log_prior = np.log(prior)
    best_tau, best = 0.0, None
    for tau in sorted({0.0, *taus}):
        top1 = float(((logits + tau * log_prior).argmax(1) == labels).mean())
        if best is None or top1 > best:
            best_tau, best = tau, top1
    if best_tau:
        shift_classifier_bias(model, prior, best_tau)
    return best_tau, float(best)


@torch.no_grad()
def shift_classifier_bias(model: MultimodalShoeNet, prior: np.ndarray, tau: float) -> None:
    """Add τ·log `prior` to `model`'s fused classifier biases in place (a negative τ takes a shift out)."""
    bias = model.classifier.bias
    bias += torch.as_tensor(tau * np.log(prior), dtype=bias.dtype, device=bias.device)
