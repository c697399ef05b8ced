"""How much each branch's own head votes beside the fused head, chosen on validation.

A model with per-branch heads (`model.branch_loss_weight` > 0) has, besides the fused classifier, a
linear head per branch trained to classify from that branch alone. Outside training the model adds
them: logits = fused + w_photo * sum(photo heads) + w_title * title head (a missing modality's heads
add nothing). After training, `choose_branch_head_weights` measures on the validation rows the fused
logits and each side's head logits (three passes: all weights 0, photo side 1, title side 1; the
logits are linear in the weights), scores every pair of `GRID` weights by validation top-1 (ties:
lower cross-entropy, then smaller weights), and writes the best pair into the model. The pair (0, 0)
competes too, so the heads only vote when that helps on validation.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from kickvision.data.prepare import PreparedData
from kickvision.model.net import MultimodalShoeNet
from kickvision.model.predict import predict_logits

GRID = (0.0, 0.25, 0.5, 1.0)


def _side_weights(model: MultimodalShoeNet, photo: float, title: float) -> torch.Tensor:
    weights = [photo] * model.n_image_branches + ([title] if model.text_encoder is not None else [])
    return torch.tensor(weights, dtype=model.branch_head_weights.dtype, device=model.branch_head_weights.device)


def choose_branch_head_weights(model: MultimodalShoeNet, data: PreparedData, indices: np.ndarray) -> dict[str, float]:
    """Set `model.branch_head_weights` to the validation-best pair; returns branch -> weight ({} without heads)."""
    if model.branch_classifiers is None:
        return {}
    if not len(indices):
        model.branch_head_weights.zero_()
        return dict.fromkeys(model.branch_names, 0.0)
    labels = torch.from_numpy(data.labels()[indices])
    passes = {}
    for side, pair in {"fused": (0.0, 0.0), "photo": (1.0, 0.0), "title": (0.0, 1.0)}.items():
        model.branch_head_weights.copy_(_side_weights(model, *pair))
        passes[side] = torch.from_numpy(predict_logits(model, data, indices)[0])
    photo_votes, title_votes = passes["photo"] - passes["fused"], passes["title"] - passes["fused"]
    best = None
    for photo, title in itertools.product(GRID, GRID if model.text_encoder is not None else (0.0,)):
        logits = passes["fused"] + photo * photo_votes + title * title_votes
        top1 = float((logits.argmax(1) == labels).float().mean())
        loss = float(F.cross_entropy(logits, labels))
        key = (-top1, loss, photo + title)
        if best is None or key < best[0]:
            best = (key, photo, title)
    _, photo, title = best
    model.branch_head_weights.copy_(_side_weights(model, photo, title))
    return dict(zip(model.branch_names, model.branch_head_weights.tolist(), strict=True))
