"""Shared fixtures: isolated ZenML/MLflow state, tiny model configs, small demo catalogs."""

import copy
import os
import socket
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
    "branch_loss_weight": 0.5,  # as configs/fashion.yaml: every branch also classifies alone, and votes
}
TINY_RUN = {
    "name": "tiny",
    "validate": {"min_good_rows": 20, "min_good_fraction": 0.5},
    "data": {"max_title_tokens": 12},
    "model": TINY_MODEL,
    "train": {"epochs": 2, "batch_size": 16, "patience": 2},
    "prune": {"finetune_epochs": 1, "tolerance": 1.0},  # a tiny model's accuracy is noise: always keep
    "continual": {"fisher_samples": 32, "replay_per_class": 3, "replay_bytes": 0, "holdout_per_class": 10},
    "evaluate": {"faithfulness_products": 2},
}


# Photo pretraining, as small as it gets (the training-pipeline tests run with it).
TINY_PRETRAIN = {"pretrain": {"enabled": True, "epochs": 1, "batch_size": 16}}

# The shared trained model: the tiny architecture, trained long enough on a larger demo catalog to
# be far above chance (about 0.7 test top-1 against 1/7), so a worse model is really worse.
LEARNT_TRAIN = {"epochs": 30, "lr": 0.01, "patience": 30}
LEARNT_PER_CLASS = 40


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return _STATE


@pytest.fixture(scope="session")
def tiny_config():
    from kickvision.config import load_config

    return load_config(REPO / "configs" / "demo.yaml", overrides=TINY_RUN)


def prepare_drop(drop_dir: Path, config, tokenizer=None, known_classes: list[str] | None = None, seed: int = 0):
    """Validate and encode a drop folder as the pipeline does (validate -> preprocess)."""
    from kickvision.data.catalog import read_catalog
    from kickvision.data.images import resolve_image_transform
    from kickvision.data.prepare import prepare_catalog
    from kickvision.data.validation import quarantine_bad_rows
    from kickvision.model.encoders import build_tokenizer

    catalog = quarantine_bad_rows(read_catalog(drop_dir), config.validate_, known_classes).catalog
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(config.model.text_encoder)
    transform = resolve_image_transform(config.model)
    return prepare_catalog(catalog, tokenizer, transform, config.data, seed, known_classes=known_classes)


@pytest.fixture(scope="session")
def demo_data(tiny_config, demo_drop):
    """The small demo drop, validated and encoded for the tiny model."""
    return prepare_drop(demo_drop, tiny_config)


@pytest.fixture(scope="session")
def learnt_data(tiny_config, tmp_path_factory):
    """A larger demo catalog (7 categories x 40 products, 32 px), encoded for the tiny model."""
    from kickvision.data.demo import write_demo_catalog

    drop = write_demo_catalog(tmp_path_factory.mktemp("learnt") / "drop", n_per_class=LEARNT_PER_CLASS, image_size=32)
    return prepare_drop(drop, tiny_config)


@pytest.fixture(scope="session")
def shared_trained(tiny_config, learnt_data):
    """ONE trained tiny bundle for the whole test run, released as training releases it (index,
    temperature, Fisher, replay, holdout). Read-only: tests that change it take `trained_bundle`."""
    from kickvision.model.encoders import build_tokenizer
    from kickvision.serve.release import equip_for_release
    from kickvision.train.fit import fit

    train = tiny_config.train.model_copy(update=LEARNT_TRAIN)
    tokenizer = build_tokenizer(tiny_config.model.text_encoder)
    bundle = fit(
        learnt_data, tiny_config.model, train, tokenizer, tiny_config.data.max_title_tokens, progress=False
    ).bundle
    equip_for_release(bundle, learnt_data, tiny_config.continual, seed=0)
    return bundle


@pytest.fixture(scope="session")
def loafers_drop(shared_trained, tiny_config, tmp_path_factory):
    """A drop of a few known-category products and a new category (Loafers), encoded for the champion."""
    from kickvision.data.demo import write_demo_drop

    drop_dir = write_demo_drop(tmp_path_factory.mktemp("drop") / "d", n_per_class=3, new_per_class=12, image_size=32)
    return prepare_drop(drop_dir, tiny_config, shared_trained.tokenizer, known_classes=shared_trained.classes)


@pytest.fixture
def trained_bundle(shared_trained):
    """A private copy of the shared trained bundle."""
    return copy.deepcopy(shared_trained)


@pytest.fixture(scope="session")
def _tests_tracking_uri():
    """The isolated local stack's MLflow (SQLite registry), with an experiment whose artifacts stay in
    the test state folder (MLflow's default experiment would write them under the working directory)."""
    import mlflow

    from orchestration.stack import ensure_stack, use_tracking

    ensure_stack()
    uri = use_tracking()
    client = mlflow.MlflowClient(uri)
    if client.get_experiment_by_name(TESTS_EXPERIMENT) is None:
        client.create_experiment(TESTS_EXPERIMENT, artifact_location=(_STATE / "mlflow-artifacts").as_uri())
    return uri


TESTS_EXPERIMENT = "kickvision-tests"


@pytest.fixture
def mlflow_client(_tests_tracking_uri):
    """MLflow pointed at the tests' store and experiment for this test (other tests point the
    process-wide tracking URI elsewhere, e.g. at a pipeline run's store)."""
    import mlflow

    mlflow.set_tracking_uri(_tests_tracking_uri)
    mlflow.set_experiment(TESTS_EXPERIMENT)
    return mlflow.MlflowClient(_tests_tracking_uri)


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


def as_format_1(folder, pruning: dict | None = None) -> None:
    """Rewrite a saved bundle's JSON the way kickvision wrote bundles before the typed spec."""
    import json

    from kickvision.model.bundle import SPEC_FILE

    document = json.loads((folder / SPEC_FILE).read_text())
    spec = document.pop("spec")
    info = {
        "catalog_hash": spec["lineage"]["catalog_hash"],
        "best_epoch": spec["training"]["best_epoch"],
        "best_val_macro_f1": spec["training"]["best_score"],
        "parameters": spec["training"]["parameters"],
        "pretrained": spec["training"]["pretrained"],
        "text_columns": spec["text_columns"],
        "temperature": spec["temperature"],
    }
    if spec["pruned_shapes"]:
        info["pruned_shapes"] = spec["pruned_shapes"]
        info["pruning"] = pruning
    document.update(format_version=1, classes=spec["classes"], max_title_tokens=spec["max_title_tokens"], info=info)
    (folder / SPEC_FILE).write_text(json.dumps(document))
    state = json.loads((folder / "continual" / "continual.json").read_text())
    legacy = {"updates": state["updates"], "info": {"fisher_samples": 7, "replay_selection": "random"}}
    (folder / "continual" / "continual.json").write_text(json.dumps(legacy))


def free_port() -> int:
    """A loopback port nothing listens on (for a server to start on, or to stand for one that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_unloadable(client, model_name: str, version: str) -> None:
    """Break a registered version's weights in the artifact store, as a disk or a copy gone wrong would."""
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    location = client.get_model_version_download_uri(model_name, version)  # file:// in the tests' local store
    weights = Path(unquote(urlparse(location).path)) / "artifacts" / "bundle" / "model.safetensors"
    assert weights.is_file(), weights
    weights.write_bytes(b"these bytes are not safetensors")
