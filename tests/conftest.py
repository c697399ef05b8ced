"""Shared fixtures: isolated ZenML/MLflow state, tiny model configs, small demo catalogs."""

import os
import tempfile
from pathlib import Path

import pytest

# Isolate all ZenML and MLflow state before anything imports zenml.
_STATE = Path(tempfile.mkdtemp(prefix="kickvision-tests-"))
os.environ["ZENML_CONFIG_PATH"] = str(_STATE / "zenml")
os.environ.setdefault("MPLCONFIGDIR", str(_STATE / "matplotlib"))
os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"

import zenml  # noqa: E402,F401  (its console log handlers bind to the real stderr, not a test's captured one)

import kickvision  # noqa: E402,F401  (applies the offline defaults)

REPO = Path(__file__).resolve().parents[1]
# The real catalog is read in place, never copied: ../shared beside the checkout, or where
# KICKVISION_REAL_DATA points (for clones that live elsewhere).
REAL_DATA = Path(os.environ.get("KICKVISION_REAL_DATA", REPO.parent / "shared" / "data" / "fashion-footwear"))

# A MultimodalShoeNet small enough to train in seconds: every branch present, every size tiny.
TINY_MODEL = {
    "image_size": 32,
    "image_encoders": [
        {"name": "resnet18", "pretrained": False, "overrides": {"channels": [8, 16, 32, 64], "stem_width": 8}},
        {
            "name": "vit_tiny_patch16_224",
            "pretrained": False,
            "overrides": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
        },
    ],
    "text_encoder": {
        "name": "distilbert-base-uncased",
        "pretrained": False,
        "overrides": {"n_layers": 1, "dim": 32, "hidden_dim": 64, "n_heads": 2},
    },
    "projection_dim": 32,
    "fusion_hidden": 32,
    "embedding_dim": 16,
}
TINY_RUN = {
    "name": "tiny",
    "validate": {"min_good_rows": 20, "min_good_fraction": 0.5},
    "data": {"max_title_tokens": 12},
    "model": TINY_MODEL,
    "train": {"epochs": 2, "batch_size": 16, "patience": 2},
    "prune": {"finetune_epochs": 1, "tolerance": 1.0},  # a tiny model's accuracy is noise: always keep
    "continual": {"fisher_samples": 32, "replay_per_class": 3, "holdout_per_class": 10},
    "evaluate": {"faithfulness_products": 2},
}


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return _STATE


@pytest.fixture
def tiny_config():
    from kickvision.config import load_config

    return load_config(REPO / "configs" / "demo.yaml", overrides=TINY_RUN)


@pytest.fixture(scope="session")
def demo_drop(tmp_path_factory) -> Path:
    """A small clean demo drop (7 categories x 10 products, 32 px)."""
    from kickvision.data.demo import write_demo_catalog

    return write_demo_catalog(tmp_path_factory.mktemp("demo") / "drop", n_per_class=10, image_size=32)


@pytest.fixture(scope="session")
def bad_drop(tmp_path_factory) -> Path:
    """The same, plus one row of every kind validation must quarantine."""
    from kickvision.data.demo import write_demo_catalog

    return write_demo_catalog(tmp_path_factory.mktemp("bad") / "drop", n_per_class=4, image_size=32, bad_rows=True)
