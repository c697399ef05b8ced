"""The promotion gate with real models in a real MLflow registry: a worse model never becomes champion."""

import mlflow
import pytest
import torch

from kickvision.model.bundle import ModelBundle, save_bundle
from kickvision.model.net import build_model
from kickvision.serve.registry import PYFUNC_FILE, example_frame, log_pyfunc, register_and_promote
from tests.conftest import as_format_1

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


# The pyfunc file every model registered before the restructure carries (its own copy, in MLflow):
# today's, with the import paths of that time.
OLD_PYFUNC = (
    PYFUNC_FILE.read_text()
    .replace("kickvision.model.bundle import", "kickvision.bundle import")
    .replace("kickvision.serve.predictor import", "kickvision.inference import")
)


def test_a_champion_registered_before_the_restructure_still_loads_and_is_compared(
    shared_trained, learnt_data, tiny_config, mlflow_client, tmp_path
):
    from kickvision.serve.registry import PACKAGE_DIR, pip_requirements

    assert "from kickvision.bundle import load_bundle" in OLD_PYFUNC  # as the old models have it
    name = "kickvision-old-champion"
    bundle_dir = save_bundle(shared_trained, tmp_path / "bundle")
    as_format_1(bundle_dir)
    (tmp_path / "pyfunc_model.py").write_text(OLD_PYFUNC)
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(tmp_path / "pyfunc_model.py"),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=pip_requirements(),
        ).model_uri
    version = mlflow.register_model(uri, name).version
    mlflow_client.set_registered_model_alias(name, "champion", version)

    torch.manual_seed(1)
    spec = shared_trained.spec.model_copy(deep=True)
    untrained = ModelBundle(build_model(tiny_config.model, len(spec.classes)), shared_trained.tokenizer, spec)
    test_rows = learnt_data.rows_with_image_paths(learnt_data.indices("test"))[["image", "title", "category"]]
    with mlflow.start_run():
        candidate = log_pyfunc(untrained, example_frame(learnt_data)).model_uri
    decision = register_and_promote(candidate, name, test_rows, "top1")
    assert decision.champion_score is not None  # the old champion was loaded and scored, not skipped
    assert not decision.promoted and decision.champion_score > decision.candidate_score
