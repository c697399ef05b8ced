"""ZenML steps: one per file, each a thin adapter over one kickvision function."""

from steps.evaluate import evaluate_model
from steps.ingest import ingest_catalog
from steps.preprocess import preprocess_catalog
from steps.register import register_model
from steps.train import train_model
from steps.validate import validate_catalog

__all__ = [
    "evaluate_model",
    "ingest_catalog",
    "preprocess_catalog",
    "register_model",
    "train_model",
    "validate_catalog",
]
