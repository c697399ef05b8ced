"""ZenML steps: one per file, each a thin adapter over one kickvision function."""

from steps.evaluate import evaluate_model
from steps.evaluate_update import evaluate_update
from steps.ewc_update import ewc_update
from steps.ingest import ingest_catalog
from steps.load_champion import load_champion
from steps.preprocess import preprocess_catalog
from steps.preprocess_drop import preprocess_drop
from steps.prune import prune_model
from steps.register import register_model
from steps.register_update import register_update
from steps.train import train_model
from steps.validate import validate_catalog

__all__ = [
    "evaluate_model",
    "evaluate_update",
    "ewc_update",
    "ingest_catalog",
    "load_champion",
    "preprocess_catalog",
    "preprocess_drop",
    "prune_model",
    "register_model",
    "register_update",
    "train_model",
    "validate_catalog",
]
