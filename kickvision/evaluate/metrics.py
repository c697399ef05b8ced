"""Test-split evaluation: top-1, macro-F1, per-class table, confusion matrix, retrieval precision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from kickvision.data.prepare import PreparedData
from kickvision.evaluate.calibration import expected_calibration_error, plot_reliability, softmax
from kickvision.evaluate.retrieval import contact_sheet, retrieval_scores
from kickvision.model.bundle import ModelBundle
from kickvision.model.index import make_index
from kickvision.model.predict import predict_logits
from kickvision.train.engine import classification_scores


@dataclass
class EvaluationReport:
    """Metrics of one model on one split; `metrics` keys are the MLflow metric names."""

    metrics: dict[str, float]
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    confusion: np.ndarray  # [C, C], rows = true class
    classes: list[str]
    split: str = "test"
    gallery_html: str | None = None  # the explanation gallery (explain.explanation_gallery), when made


def evaluate_bundle(bundle: ModelBundle, data: PreparedData, split: str = "test") -> EvaluationReport:
    """Score `bundle` on `split` of `data`, plus the same model with only one modality present."""
    indices = data.indices(split)
    labels = data.labels()[indices]
    logits, embeddings = predict_logits(bundle.model, data, indices)
    predictions = logits.argmax(1)
    scores = classification_scores(labels, predictions)
    metrics = {f"{split}_{k}": v for k, v in scores.items()}
    temperature = bundle.spec.temperature
    metrics[f"{split}_ece"] = expected_calibration_error(softmax(logits, temperature), labels)
    metrics[f"{split}_ece_uncalibrated"] = expected_calibration_error(softmax(logits), labels)
    branches = {"image_input_only": dict(use_text=False), "text_input_only": dict(use_image=False)}
    if bundle.model.image_encoders and bundle.model.text_encoder is not None:
        for name, hide in branches.items():
            masked, _ = predict_logits(bundle.model, data, indices, **hide)
            for k, v in classification_scores(labels, masked.argmax(1)).items():
                metrics[f"{split}_{k}_{name}"] = v
    # Retrieval: the split's products as queries against the training catalog as gallery.
    train_idx = data.indices("train")
    _, train_embeddings = predict_logits(bundle.model, data, train_idx)
    gallery = make_index(train_embeddings, data.rows.iloc[train_idx], dtype=torch.float32)
    for k, v in retrieval_scores(embeddings, data.rows.iloc[indices], gallery).items():
        metrics[f"{split}_{k}"] = v
    n = len(data.classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=range(n), zero_division=0
    )
    per_class = pd.DataFrame(
        {"class": data.classes, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )
    return EvaluationReport(
        metrics, per_class, confusion_matrix(labels, predictions, labels=range(n)), list(data.classes), split
    )


def plot_confusion(report: EvaluationReport, path: str | Path) -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = report.confusion
    norm = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = 2.5 + 0.7 * len(report.classes)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(report.classes)), report.classes, rotation=45, ha="right")
    ax.set_yticks(range(len(report.classes)), report.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(report.classes)):
        for j in range(len(report.classes)):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    top1 = report.metrics.get(f"{report.split}_top1", float("nan"))
    ax.set_title(f"{report.split} confusion (top-1 {top1:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def retrieval_contact_sheet(bundle: ModelBundle, data: PreparedData, path: str | Path, queries: int = 6, k: int = 5):
    """Contact sheet of a few test products and their nearest training-catalog products."""
    test_idx = data.indices("test")[:queries]
    train_idx = data.indices("train")
    _, query_emb = predict_logits(bundle.model, data, test_idx)
    _, train_emb = predict_logits(bundle.model, data, train_idx)
    gallery = make_index(train_emb, data.rows_with_image_paths(train_idx))
    rows = data.rows_with_image_paths(test_idx)
    query_cells = list(zip(rows["image"], rows["category"], strict=True))
    return contact_sheet(query_cells, gallery.results(query_emb, k), path)


def reliability_diagram(bundle: ModelBundle, data: PreparedData, path: str | Path, split: str = "test") -> Path:
    """The calibrated model's reliability diagram on `split`."""
    indices = data.indices(split)
    logits, _ = predict_logits(bundle.model, data, indices)
    probabilities = softmax(logits, bundle.spec.temperature)
    return plot_reliability(probabilities, data.labels()[indices], path)
