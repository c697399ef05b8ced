"""When to trust a probability: expected calibration error, temperature scaling, reliability diagram,
and the review threshold.

The review threshold is the calibrated confidence below which a prediction is sent to a person:
sort the validation products by confidence, most confident first, and accept the longest prefix
whose accuracy is still at least `REVIEW_ACCURACY`; the threshold is the confidence of the last
product accepted (1.0 when even the most confident products miss the target: review everything).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kickvision.data.prepare import PreparedData
from kickvision.model.bundle import ModelBundle
from kickvision.model.predict import predict_logits

REVIEW_ACCURACY = 0.98  # predictions at or above the threshold were right this often on validation


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: |accuracy - confidence| per equal-width confidence bin, weighted by the bin's share."""
    if len(labels) == 0:
        return 0.0
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.from_numpy(logits / temperature).softmax(1).numpy()


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the negative log-likelihood of softmax(logits / T) (Guo et al. 2017)."""
    x = torch.from_numpy(logits).float()
    y = torch.from_numpy(labels).long()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.exp().item())
    return float(np.clip(temperature, 0.05, 20)) if np.isfinite(temperature) else 1.0


def calibrate_temperature(bundle: ModelBundle, data: PreparedData) -> dict[str, float]:
    """Fit T on the validation split; ship it in the bundle's spec only if it lowers validation ECE."""
    val = data.indices("val")
    logits, _ = predict_logits(bundle.model, data, val)
    labels = data.labels()[val]
    before = expected_calibration_error(softmax(logits), labels)
    temperature = fit_temperature(logits, labels) if len(val) else 1.0
    after = expected_calibration_error(softmax(logits, temperature), labels)
    kept = temperature if after < before else 1.0
    bundle.spec.temperature = kept
    probabilities = softmax(logits, kept)
    threshold = review_threshold(probabilities, labels)
    bundle.spec.review_threshold = threshold
    bundle.spec.val_top1 = float((probabilities.argmax(1) == labels).mean()) if len(val) else None
    return {
        "val_ece_uncalibrated": before,
        "val_ece_calibrated": min(after, before),
        "temperature": kept,
        "review_threshold": threshold,
        "val_review_fraction": float((probabilities.max(1) < threshold).mean()) if len(val) else 1.0,
    }


def review_threshold(probabilities: np.ndarray, labels: np.ndarray, accuracy: float = REVIEW_ACCURACY) -> float:
    """The lowest confidence whose more-confident products (itself included) are right >= `accuracy` of the time."""
    if len(labels) == 0:
        return 1.0
    confidence = probabilities.max(1)
    order = np.argsort(-confidence, kind="stable")
    right = (probabilities.argmax(1) == labels)[order]
    running = np.cumsum(right) / np.arange(1, len(right) + 1)
    good = np.flatnonzero(running >= accuracy)
    return float(confidence[order][good[-1]]) if len(good) else 1.0


def plot_reliability(probabilities: np.ndarray, labels: np.ndarray, path: str | Path, n_bins: int = 15) -> Path:
    """Accuracy vs confidence per bin, with the diagonal of perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    centres, accuracy, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence >= lo) & ((confidence < hi) | (hi == 1))
        if in_bin.any():
            centres.append(confidence[in_bin].mean())
            accuracy.append(correct[in_bin].mean())
            counts.append(in_bin.sum())
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.scatter(centres, accuracy, s=np.array(counts) * 200 / max(max(counts, default=1), 1), alpha=0.7)
    ax.plot(centres, accuracy, lw=1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {expected_calibration_error(probabilities, labels, n_bins):.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
