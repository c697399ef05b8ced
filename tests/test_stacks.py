"""Stacks as code: every recipe registers; a real team MLflow server (basic auth) tracks and serves."""

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
import yaml

from kickvision.cli import main as cli_main
from kickvision.config import deep_merge
from kickvision.errors import ConfigError
from kickvision.serve.pyfunc_logging import photos_as_bytes
from tests.conftest import free_port

MODEL = "kickvision-team"
ADMIN, PASSWORD = "admin", "kickvision-team-test"
CLUSTER_OPTIONS = {
    "tracking_uri": "https://mlflow.example.com",
    "kubernetes_context": "kind-kickvision",
    "artifact_path": "s3://kickvision-test/artifacts",
    "registry_uri": "ghcr.io/kickvision-test",
    "kubeflow_hostname": "https://kubeflow.example.com/pipeline",
}


@pytest.fixture
def back_to_local():
    yield
    from orchestration.stack import use_stack, use_tracking

    use_stack("local")
    use_tracking()


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """`mlflow server` with basic auth, SQLite backend and a local artifact root, on loopback."""
    root = tmp_path_factory.mktemp("team-mlflow")
    (root / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {ADMIN}\nadmin_password = {PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = os.environ | {"MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test"}
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(1)
    else:
        server.kill()
        pytest.fail("mlflow server did not answer /health within 120 s")
    yield uri
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def team_config(tmp_path_factory):
    from tests.conftest import REPO, TINY_RUN

    run = deep_merge(TINY_RUN, {"name": "tiny-team", "registry": {"model_name": MODEL}})
    path = tmp_path_factory.mktemp("config") / "tiny-team.yaml"
    path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((REPO / "configs/demo.yaml").read_text()), run)))
    return path


def _use_team(uri: str) -> None:
    args = ["stack", "use", "team", "--tracking-uri", uri, "--username", ADMIN, "--password", PASSWORD]
    assert cli_main(args) == 0


def test_every_recipe_registers_and_cluster_run_configs_parse(back_to_local, capsys):
    from zenml.client import Client
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    from orchestration.stack import active_run_config, list_recipes, load_recipe, use_stack

    assert set(list_recipes()) >= {"local", "team", "kubernetes", "kubeflow"}
    for recipe in ("kubernetes", "kubeflow"):
        spec = load_recipe(recipe)
        options = {k: v for k, v in CLUSTER_OPTIONS.items() if k in spec.options}
        stack = use_stack(recipe, options, {"tracking_token": "not-a-real-token"})
        assert stack.name == spec.name == Client().active_stack_model.name
        flavors = {kind: c[0].flavor_name for kind, c in stack.components.items()}
        assert flavors["orchestrator"] == recipe and flavors["artifact_store"] == "s3"
        tracker = stack.components["experiment_tracker"][0]
        assert tracker.configuration["tracking_uri"] == CLUSTER_OPTIONS["tracking_uri"]
        assert "not-a-real-token" not in str(tracker.configuration)  # a secret reference, not the value
        run_config = PipelineRunConfiguration.model_validate(yaml.safe_load(Path(active_run_config()).read_text()))
        assert run_config.steps["train_model"].settings["resources"].gpu_count == 1
        assert set(run_config.steps) == {"pretrain_photos", "train_model", "ewc_update", "prune_model"}
    assert cli_main(["stack", "list"]) == 0
    listing = capsys.readouterr().out
    for name in ("kickvision-local", "kickvision-kubernetes", "kickvision-kubeflow", "kickvision-team"):
        assert name in listing
    assert "* kubeflow" in listing  # the active one is marked


def test_a_recipe_option_missing_or_unknown_is_one_clear_error(back_to_local, capsys):
    from orchestration.stack import use_stack

    with pytest.raises(ConfigError, match="needs tracking_uri"):
        use_stack("team", {})
    assert cli_main(["stack", "use", "kubernetes", "--set", "colour=red"]) == 2
    assert "has no option colour" in capsys.readouterr().err


@pytest.mark.integration
def test_team_stack_tracks_registers_and_serves_on_the_server(back_to_local, team_server, team_config, demo_drop):
    _use_team(team_server)
    assert cli_main(["train", "--catalog", str(demo_drop), "--config", str(team_config)]) == 0

    # What the team sees: a client with only the server's URL and credentials.
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN, PASSWORD
    client = mlflow.MlflowClient(team_server)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    run = client.get_run(champion.run_id)
    for tag in ("kickvision.catalog_hash", "kickvision.git_commit", "kickvision.zenml_run_id", "kickvision.config"):
        assert run.data.tags.get(tag), tag
    assert run.data.tags["kickvision.promotion_decision"] == "champion"
    assert "test_top1" in run.data.metrics

    mlflow.set_tracking_uri(team_server)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    catalog = pd.read_csv(demo_drop / "catalog.csv").head(2)
    rows = pd.DataFrame({"image": [str(demo_drop / p) for p in catalog["image"]], "title": catalog["title"]})
    predicted = model.predict(photos_as_bytes(rows))
    assert len(predicted) == 2
    assert set(predicted["category"]) <= set(pd.read_csv(demo_drop / "catalog.csv")["category"])


@pytest.mark.integration
def test_a_down_server_fails_at_the_start_in_one_line_and_registers_nothing(
    back_to_local, team_server, team_config, demo_drop, capsys
):
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN, PASSWORD
    client = mlflow.MlflowClient(team_server)
    before = len(client.search_model_versions(f"name='{MODEL}'"))
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))

    dead = f"http://127.0.0.1:{free_port()}"  # the team stack, but its server is down
    _use_team(dead)
    assert cli_main(["train", "--catalog", str(demo_drop), "--config", str(team_config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and dead in err and "not reachable" in err

    assert len(client.search_model_versions(f"name='{MODEL}'")) == before
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before


def test_schedule_on_the_local_orchestrator_says_to_use_cron_instead(back_to_local, capsys):
    from orchestration.stack import use_stack

    use_stack("local")
    assert cli_main(["schedule"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "runs no schedules" in err and "kickvision watch --drops" in err


@pytest.mark.integration
def test_a_registry_that_refuses_the_credentials_or_is_down_is_never_taken_for_an_empty_one(team_server, monkeypatch):
    from kickvision.errors import RegistryError
    from kickvision.serve.registry import champion_version

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert champion_version(mlflow.MlflowClient(team_server), "never-registered") is None  # an answer: none
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(RegistryError, match="cannot read which version is 'champion' of model 'never-registered'"):
        champion_version(mlflow.MlflowClient(team_server), "never-registered")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError, match=f"registry at {dead}"):
        champion_version(mlflow.MlflowClient(dead), "never-registered")
