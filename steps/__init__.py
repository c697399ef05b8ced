"""ZenML steps, grouped by stage: one per file, each a thin adapter over one kickvision function.

etl/ (ingest, validate, preprocess), training/ (pretrain_photos, train, ewc_update, prune), evaluation/ (evaluate,
evaluate_update, audit), registry/ (load_champion, register, register_update).
"""

from steps.etl.ingest import ingest_catalog
from steps.etl.preprocess import preprocess_catalog
from steps.etl.preprocess_drop import preprocess_drop
from steps.etl.validate import validate_catalog
from steps.evaluation.audit import audit_catalog
from steps.evaluation.evaluate import evaluate_model
from steps.evaluation.evaluate_update import evaluate_update
from steps.registry.load_champion import load_champion
from steps.registry.register import register_model
from steps.registry.register_update import register_update
from steps.training.ewc_update import ewc_update
from steps.training.pretrain import pretrain_photos
from steps.training.prune import prune_model
from steps.training.train import train_model

__all__ = [
    "audit_catalog",
    "evaluate_model",
    "evaluate_update",
    "ewc_update",
    "ingest_catalog",
    "load_champion",
    "preprocess_catalog",
    "preprocess_drop",
    "pretrain_photos",
    "prune_model",
    "register_model",
    "register_update",
    "train_model",
    "validate_catalog",
]
