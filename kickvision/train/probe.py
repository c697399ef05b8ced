"""New categories' classifier rows fitted on the champion's features before an update trains (LP-FT).

A catalog drop that brings new categories grows every class head (the fused classifier and each
branch head) by random rows. Fine-tuning a whole network under a random head distorts the features
the old categories rely on: the first steps' large gradients come from a head that knows nothing
(Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-
Distribution", whose remedy is LP-FT: linear probing, then fine-tuning). So, with
`continual.new_class_init: probe`, the update first

1. computes once, in eval mode with photos as stored, the input of every class head on the
   training products (the drop's and the replay exemplars);
2. fits the new rows (weights and biases) of each head by full-batch L-BFGS on cross-entropy over
   *all* categories, the old rows fixed (so a new category is fitted against the old ones it must
   be told apart from), each category weighted by 1 / its count (as `continual.balanced_sampling`
   samples them; a new category with no training products keeps its random row),
   starting from the new categories' centred feature means (weight imprinting, Qi et al. 2018);
3. holds each new row's norm at the old rows' mean norm while fitting (only its direction and the
   bias are free): the norm weight aligning gives new rows after training (train/update.py). Fitted
   freely, the rows of the real catalog's champion grew to 6-7x the old rows' norm (features that
   separate), and weight aligning then scaled them down by 0.16 after training, undoing the update's
   learning of the new categories (Heels and Flats 0.29 on test, against 0.875 without the probe;
   held at the norm, 0.888: `benchmarks/continual.py`, scenario A, update seed 42). The price: where
   the old rows are short for the features (a tiny, briefly trained champion), a row at their norm
   cannot outweigh them, and the probe only lowers the new categories' loss; training does the rest.

The old rows are untouched, so the old logits stay the champion's (to float rounding: the grown
head's matmul rounds apart) until training starts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kickvision.data.prepare import PreparedData
from kickvision.model.net import MultimodalShoeNet
from kickvision.model.predict import predict_logits

PROBE_ITERATIONS = 100


def class_heads(model: MultimodalShoeNet) -> list[tuple[str, torch.nn.Linear]]:
    """Every head with one row per category: the fused classifier, then the branch heads."""
    heads = [("classifier", model.classifier)]
    return heads + [(f"branch_classifier_{i}", h) for i, h in enumerate(model.branch_classifiers or [])]


def head_inputs(model: MultimodalShoeNet, data: PreparedData, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """The input of every class head on the rows `indices` (eval mode, photos as stored)."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name, _ in class_heads(model)}
    handles = [
        head.register_forward_pre_hook(lambda _m, args, name=name: captured[name].append(args[0].detach().float()))
        for name, head in class_heads(model)
    ]
    try:
        predict_logits(model, data, indices)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts).cpu() for name, parts in captured.items()}


def fit_new_rows(
    features: torch.Tensor, labels: torch.Tensor, head: torch.nn.Linear, n_old: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, biases) of the rows after `n_old`: balanced cross-entropy over the old categories and the
    new ones with training products, the old rows fixed, each new row's norm held at the old rows' mean
    norm, by L-BFGS from the new categories' centred feature means (weight imprinting). A new category
    without training products (the split sent all of it to validation and test) keeps the row it has:
    left in the fit, its logit would only be pushed down, with nothing to say where it belongs."""
    weight = head.weight[n_old:].detach().float().cpu().clone()
    bias = head.bias[n_old:].detach().float().cpu().clone()
    old_w, old_b = head.weight[:n_old].detach().float().cpu(), head.bias[:n_old].detach().float().cpu()
    counts = torch.bincount(labels, minlength=head.out_features).float()
    present = (counts[n_old:] > 0).nonzero().flatten()
    if len(present) == 0:
        return weight, bias
    fitted = torch.cat([torch.arange(n_old), n_old + present])
    targets = torch.searchsorted(fitted, labels)  # label -> its column among the fitted categories
    norm = old_w.norm(dim=1).mean()
    old_logits = features @ old_w.T + old_b
    class_weight = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))[fitted]
    class_weight = class_weight * (counts[fitted] > 0).sum() / class_weight.sum()
    centre = features.mean(0)
    means = torch.stack([features[labels == n_old + c].mean(0) for c in present.tolist()])
    direction = (means - centre + 1e-6).requires_grad_(True)
    fitted_bias = old_b.mean().repeat(len(present)).requires_grad_(True)
    optimizer = torch.optim.LBFGS([direction, fitted_bias], max_iter=PROBE_ITERATIONS, line_search_fn="strong_wolfe")

    def rows() -> torch.Tensor:
        return norm * direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.cat([old_logits, features @ rows().T + fitted_bias], 1)
        loss = F.cross_entropy(logits, targets, weight=class_weight)
        loss.backward()
        return loss

    optimizer.step(closure)
    weight[present], bias[present] = rows().detach(), fitted_bias.detach()
    return weight, bias


@torch.no_grad()
def probe_new_class_rows(
    model: MultimodalShoeNet, data: PreparedData, indices: np.ndarray, n_old: int
) -> dict[str, float]:
    """Fit every class head's rows after the first `n_old` on the rows `indices` of `data` (see the module
    docstring). Returns, per head, the fitted rows' top-1 on those products of new categories."""
    labels = torch.as_tensor(data.labels()[indices])
    new = labels >= n_old
    if not bool(new.any()):
        return {}
    inputs = head_inputs(model, data, indices)
    metrics = {}
    with torch.enable_grad():
        fitted = {name: fit_new_rows(inputs[name], labels, head, n_old) for name, head in class_heads(model)}
    for name, head in class_heads(model):
        weight, bias = fitted[name]
        head.weight[n_old:] = weight.to(head.weight)
        head.bias[n_old:] = bias.to(head.bias)
        logits = inputs[name][new] @ head.weight.detach().float().cpu().T + head.bias.detach().float().cpu()
        metrics[f"probe_new_top1_{name}"] = float((logits.argmax(1) == labels[new]).float().mean())
    return metrics
