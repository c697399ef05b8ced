"""The promotion gate with real models in a real MLflow registry: a worse model never becomes champion."""

import mlflow
import pytest
import torch

from kickvision.model.bundle import ModelBundle
from kickvision.model.net import build_model
from kickvision.serve.registry import example_frame, log_pyfunc, register_and_promote

pytestmark = pytest.mark.integration

MODEL = "kickvision-gate"  # its own registered model, so other tests' versions do not interfere


def _register(bundle: ModelBundle, data) -> object:
    test_rows = data.rows_with_image_paths(data.indices("test"))[["image", "title", "category"]]
    with mlflow.start_run():
        uri = log_pyfunc(bundle, example_frame(data)).model_uri
    return register_and_promote(uri, MODEL, test_rows, "top1")


def test_an_untrained_model_stays_challenger_behind_a_trained_champion(
    shared_trained, learnt_data, tiny_config, mlflow_client
):
    client = mlflow_client
    first = _register(shared_trained, learnt_data)
    assert first.promoted and first.reason == "first registered version"

    torch.manual_seed(1)
    untrained = ModelBundle(
        build_model(tiny_config.model, len(shared_trained.classes)),
        shared_trained.tokenizer,
        shared_trained.spec.model_copy(deep=True),
    )
    second = _register(untrained, learnt_data)
    assert not second.promoted and second.candidate_score < second.champion_score
    assert second.champion_version == first.version and f"< champion v{first.version}" in second.reason
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == first.version
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == second.version
    tags = client.get_model_version(MODEL, second.version).tags
    assert tags["promotion_decision"] == "challenger" and tags["promotion_reason"] == second.reason
