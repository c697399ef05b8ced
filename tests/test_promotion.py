"""The promotion gate with real models in a real MLflow registry: a worse model never becomes champion."""

import mlflow
import pytest
import torch

from kickvision.model.bundle import ModelBundle, save_bundle
from kickvision.model.net import build_model
from kickvision.serve.pyfunc_logging import PYFUNC_FILE, example_frame, log_pyfunc
from kickvision.serve.registry import move_champion, register_and_promote
from tests.conftest import as_format_1, free_port, make_unloadable

pytestmark = pytest.mark.integration

MODEL = "kickvision-gate"  # its own registered model, so other tests' versions do not interfere


def _register(bundle: ModelBundle, data, name: str = MODEL, move: bool = True, **options) -> object:
    test_rows = data.rows_with_image_paths(data.indices("test"))[["image", "title", "category"]]
    with mlflow.start_run():
        uri = log_pyfunc(bundle, example_frame(data)).model_uri
    decision = register_and_promote(uri, name, test_rows, "top1", **options)
    return move_champion(decision) if move else decision


def _untrained(shared_trained, tiny_config, seed: int = 1) -> ModelBundle:
    torch.manual_seed(seed)
    spec = shared_trained.spec.model_copy(deep=True)
    return ModelBundle(build_model(tiny_config.model, len(spec.classes)), shared_trained.tokenizer, spec)


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
    from kickvision.serve.pyfunc_logging import PACKAGE_DIR, pip_requirements

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


def test_an_unloadable_champion_is_not_replaced_unless_the_operator_says_so(
    shared_trained, learnt_data, tiny_config, mlflow_client
):
    name = "kickvision-unloadable"
    champion = _register(shared_trained, learnt_data, name)
    make_unloadable(mlflow_client, name, champion.version)

    refused = _register(_untrained(shared_trained, tiny_config), learnt_data, name)
    assert not refused.promoted and refused.fail_closed
    assert f"champion v{champion.version} cannot be loaded" in refused.reason
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == champion.version
    tags = mlflow_client.get_model_version(name, refused.version).tags
    assert tags["promotion_decision"] == "challenger" and tags["promotion_reason"] == refused.reason

    replaced = _register(shared_trained, learnt_data, name, replace_unloadable_champion=True)
    assert replaced.promoted and not replaced.fail_closed and "replaced as configured" in replaced.reason
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == replaced.version


def test_the_alias_moves_only_if_the_champion_is_still_the_one_compared_against(
    shared_trained, learnt_data, tiny_config, mlflow_client
):
    name = "kickvision-race"
    weak = _register(_untrained(shared_trained, tiny_config), learnt_data, name)
    decision = _register(shared_trained, learnt_data, name, move=False)  # beats the weak champion...
    assert decision.promoted and decision.champion_version == weak.version
    other = _register(shared_trained, learnt_data, name)  # ...but another trainer promotes first
    assert other.promoted
    final = move_champion(decision)
    assert not final.promoted and f"champion moved from v{weak.version} to v{other.version}" in final.reason
    assert final.champion_moved and not final.fail_closed  # the watcher applies the drop again, to the new one
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == other.version
    assert mlflow_client.get_model_version(name, decision.version).tags["promotion_decision"] == "challenger"


def test_a_version_refused_against_a_champion_that_moved_meanwhile_says_so(
    shared_trained, learnt_data, tiny_config, mlflow_client
):
    """Its gate compared it with a stale champion: the watcher must still apply its drop to the new one."""
    name = "kickvision-race-refused"
    first = _register(shared_trained, learnt_data, name)
    refused = _register(_untrained(shared_trained, tiny_config), learnt_data, name, move=False)
    assert not refused.promoted and not refused.fail_closed and refused.champion_version == first.version
    assert move_champion(refused) == refused  # the champion has not moved: the refusal stands as it is
    other = _register(shared_trained, learnt_data, name)  # another trainer promotes (level scores pass)
    assert other.promoted
    final = move_champion(refused)
    assert final.champion_moved and not final.promoted and not final.fail_closed
    assert final.reason.startswith(
        f"{refused.reason}; but the champion moved from v{first.version} to v{other.version}"
    )
    tags = mlflow_client.get_model_version(name, refused.version).tags
    assert tags["promotion_decision"] == "challenger" and tags["promotion_reason"] == final.reason
    assert tags["promotion_champion_moved"] == "true"
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == other.version

    again = _register(_untrained(shared_trained, tiny_config, seed=2), learnt_data, name, move=False)
    assert not again.promoted and again.champion_version == other.version
    mlflow_client.delete_registered_model_alias(name, "champion")  # an operator takes the champion down
    assert "but the champion moved from v" + f"{other.version} to no champion" in move_champion(again).reason


def test_a_registry_that_stops_answering_before_the_alias_moves_promotes_nothing_and_answers_nothing(
    shared_trained, learnt_data, tiny_config, mlflow_client, monkeypatch
):
    """Neither a passed nor a refused gate is taken as the answer when the champion cannot be read again
    (it may have moved: the watcher retries the drop), and no MLflow traceback escapes."""
    from kickvision.errors import RegistryError

    name = "kickvision-down"
    champion = _register(shared_trained, learnt_data, name)
    passed = _register(shared_trained, learnt_data, name, move=False)
    refused = _register(_untrained(shared_trained, tiny_config), learnt_data, name, move=False)
    assert passed.promoted and not refused.promoted
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = f"http://127.0.0.1:{free_port()}"
    for decision in (passed, refused):
        final = move_champion(decision, mlflow.MlflowClient(down, down))
        assert final.fail_closed and not final.promoted and down in final.reason
        assert "cannot read which version is 'champion'" in final.reason
    assert mlflow_client.get_model_version(name, passed.version).tags["promotion_decision"] == "pending"
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == champion.version

    # A registry that answers but refuses to record the decision (here: the version was deleted meanwhile).
    other = _register(shared_trained, learnt_data, name)
    mlflow_client.delete_model_version(name, refused.version)
    with pytest.raises(RegistryError, match=f"cannot record the decision on {name} v{refused.version} .*nothing was"):
        move_champion(refused)
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == other.version

    # The register step's own records (model card, run tags) when MLflow stops answering: one line, no promotion.
    from orchestration.model_version import publish_decision

    pending = _register(shared_trained, learnt_data, name, move=False)
    served = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(down)
    try:
        with pytest.raises(RegistryError, match=f"on {name} v{pending.version} in MLflow .*nothing was promoted"):
            publish_decision(lambda decision: "a model card", pending, {})
    finally:
        mlflow.set_tracking_uri(served)
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == other.version


def test_a_drop_whose_promotion_did_not_finish_is_not_counted_as_applied(shared_trained, learnt_data, mlflow_client):
    from kickvision.serve.registry import processed_by

    name = "kickvision-unfinished"
    champion = _register(shared_trained, learnt_data, name)
    update = _register(shared_trained, learnt_data, name, move=False)  # stands in for an update of the champion
    for key, value in {"catalog_hash": "drop-hash", "parent_version": champion.version}.items():
        mlflow_client.set_model_version_tag(name, update.version, key, value)
    assert mlflow_client.get_model_version(name, update.version).tags["promotion_decision"] == "pending"
    assert processed_by(name, "drop-hash", mlflow_client) is None  # the alias never moved: apply it again
    mlflow_client.set_model_version_tag(name, update.version, "promotion_decision", "challenger")
    mlflow_client.set_model_version_tag(name, update.version, "promotion_fail_closed", "true")
    assert processed_by(name, "drop-hash", mlflow_client) is None  # refused only because the registry failed
    mlflow_client.set_model_version_tag(name, update.version, "promotion_fail_closed", "false")
    assert str(processed_by(name, "drop-hash", mlflow_client).version) == update.version  # a real refusal stands


def test_a_catalog_counts_as_registered_once_a_version_learnt_from_it_has_its_gate_answer(
    shared_trained, learnt_data, mlflow_client
):
    """What lets a restarted watcher skip a joint retrain that finished before a crash, and redo one that did not."""
    from kickvision.serve.registry import registered_from

    name = "kickvision-registered"
    assert registered_from(name, "merged-hash", mlflow_client) is None  # no version yet
    champion = _register(shared_trained, learnt_data, name)
    joint = _register(shared_trained, learnt_data, name, move=False)  # stands in for a joint retrain
    mlflow_client.set_model_version_tag(name, joint.version, "catalog_hash", "merged-hash")
    assert registered_from(name, "merged-hash", mlflow_client) is None  # pending: the alias never moved
    mlflow_client.set_model_version_tag(name, joint.version, "promotion_decision", "challenger")
    mlflow_client.set_model_version_tag(name, joint.version, "promotion_fail_closed", "true")
    assert registered_from(name, "merged-hash", mlflow_client) is None  # refused only because the registry failed
    mlflow_client.set_model_version_tag(name, joint.version, "promotion_fail_closed", "false")
    assert str(registered_from(name, "merged-hash", mlflow_client).version) == joint.version
    mlflow_client.set_model_version_tag(name, joint.version, "promotion_champion_moved", "true")
    assert registered_from(name, "merged-hash", mlflow_client) is None  # compared against a replaced champion
    mlflow_client.set_model_version_tag(name, joint.version, "promotion_champion_moved", "false")
    assert str(registered_from(name, "merged-hash", mlflow_client).version) == joint.version
    assert registered_from(name, "other-hash", mlflow_client) is None
    assert champion.version != joint.version
