"""Integration: the real ZenML training pipeline with real MLflow (SQLite) in an isolated home."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from kickvision.cli import main as cli_main
from kickvision.serve.pyfunc_logging import photos_as_bytes
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline_config():
    """The tiny run with photo pretraining on."""
    from kickvision.config import deep_merge, load_config
    from tests.conftest import REPO, TINY_PRETRAIN, TINY_RUN

    return load_config(REPO / "configs" / "demo.yaml", overrides=deep_merge(TINY_RUN, TINY_PRETRAIN))


@pytest.fixture(scope="module")
def first_run(pipeline_config, demo_drop):
    from orchestration.runner import run_training

    return run_training(demo_drop, pipeline_config)


def test_training_pipeline_runs_end_to_end(first_run):
    assert first_run.status == "completed"
    assert set(first_run.step_status) == {
        "ingest_catalog",
        "validate_catalog",
        "preprocess_catalog",
        "pretrain_photos",
        "train_model",
        "prune_model",
        "evaluate_model",
        "audit_catalog",
        "register_model",
    }
    assert first_run.registration["promoted"] and first_run.registration["version"] == "1"
    # The evaluate step scored the prepared test split; the registry scored the served pyfunc on the
    # raw test files: the same model through the same image transform gives the same top-1.
    client = mlflow.MlflowClient(first_run.tracking_uri)
    served_top1 = float(client.get_model_version("kickvision", "1").tags["test_top1"])
    assert served_top1 == pytest.approx(first_run.test_metrics["test_top1"], abs=1e-6)  # tagged to 6 places
    assert "mlflow ui --backend-store-uri sqlite:///" in first_run.render()


def test_mlflow_has_metrics_params_artifacts_and_aliases(first_run):
    mlflow.set_tracking_uri(first_run.tracking_uri)
    client = mlflow.MlflowClient()
    run = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.mlflow.runName = '{first_run.run_name}'", output_format="list"
    )[0]
    assert {"test_top1", "test_macro_f1", "train_loss", "val_macro_f1", "valid_rows"} <= set(run.data.metrics)
    assert {"test_p_at_1", "test_p_at_5", "test_map", "test_colour_p_at_5"} <= set(run.data.metrics)
    assert {"test_ece", "test_ece_uncalibrated", "val_ece_calibrated", "temperature"} <= set(run.data.metrics)
    prune_metrics = {"prune_params_before", "prune_params_after", "prune_file_bytes_before", "prune_file_bytes_after"}
    assert prune_metrics | {"prune_val_top1_before", "prune_val_top1_after"} <= set(run.data.metrics)
    assert run.data.metrics["prune_params_after"] < run.data.metrics["prune_params_before"]
    assert run.data.metrics["prune_file_bytes_after"] < run.data.metrics["prune_file_bytes_before"]
    assert run.data.tags["prune_decision"] == "pruned"  # tolerance 1.0 in the tiny config
    assert {"cam_faithfulness_resnet", "cam_faithfulness_vit", "cam_faithfulness_random"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 1
    assert run.data.params["model.fusion"] == "concat"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/per_class.csv",
        "evaluation/recommendations.png",
    } <= artifacts
    # The catalog's labels, audited by judges that did not learn them, for reviewers to open.
    audit = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/audit/catalog_audit.csv"))
    assert len(audit) == run.data.metrics["valid_rows"] == run.data.metrics["audit_products"]
    assert set(audit["audited_by"]) == {"model (held out)", "title model (out-of-fold)"}
    assert "<table>" in mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/audit/catalog_audit.html")
    gallery = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/explain/gallery.html")
    assert gallery.count("<figure>") >= 1 and "data:image/png;base64," in gallery
    assert "http://" not in gallery and "https://" not in gallery  # self-contained
    docs = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/validation/data_docs.html")
    assert "Great Expectations" in docs and "product_id" in docs  # GX Data Docs of the catalog checks
    for tag in ("kickvision.pipeline", "kickvision.catalog_hash", "kickvision.git_commit", "kickvision.zenml_run_id"):
        assert run.data.tags.get(tag), tag
    cuda = torch.cuda.is_available()  # train.amp: bf16 on CUDA; train.cpu_amp is off in the tests' config
    assert run.data.tags["kickvision.training_precision"] == ("bf16 autocast" if cuda else "float32")
    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_card.md")
    assert f"| test_top1 | {run.data.metrics['test_top1']:.4f} |" in card
    assert f"| test_macro_f1 | {run.data.metrics['test_macro_f1']:.4f} |" in card
    pruned = any(k.startswith("pruned_branch_head_weight.") for k in run.data.params)  # the served model's own
    prefix = "pruned_branch_head_weight." if pruned else "branch_head_weight."
    votes = {k.removeprefix("pruned_"): v for k, v in run.data.params.items() if k.startswith(prefix)}
    assert set(votes) == {
        "branch_head_weight.0_resnet18",
        "branch_head_weight.1_vit_tiny_patch16_224",
        "branch_head_weight.text",
    }
    assert ("do not vote" in card) == all(float(v) == 0 for v in votes.values())
    version = client.get_model_version_by_alias("kickvision", "champion")
    assert version.description == card
    assert str(version.version) == "1" and version.tags["promotion_decision"] == "champion"
    assert str(client.get_model_version_by_alias("kickvision", "challenger").version) == "1"


def test_the_run_is_a_zenml_model_version_with_the_model_card(first_run):
    from zenml.client import Client
    from zenml.enums import ModelStages

    run = Client().get_pipeline_run(first_run.run_name)
    version = Client().get_model_version("kickvision", ModelStages.PRODUCTION)  # the champion's run
    assert run.model_version.id == version.id
    card = version.get_artifact("model_card").load()
    assert f"| test_top1 | {first_run.test_metrics['test_top1']:.4f} |" in card
    metadata = version.run_metadata
    assert metadata["promotion_decision"] == "champion" and metadata["mlflow_registered_version"] == "1"
    assert metadata["test_metrics"]["test_top1"] == pytest.approx(first_run.test_metrics["test_top1"])
    assert version.get_artifact("model_card").visualizations  # rendered as markdown in the dashboard
    assert run.id in version.pipeline_run_ids.values()
    assert len(version.data_artifact_ids) >= 5  # the run's step outputs are grouped under the version


def test_the_gallery_is_a_zenml_dashboard_visualisation_of_the_evaluation(first_run):
    from zenml.client import Client

    artifact = Client().get_pipeline_run(first_run.run_name).steps["evaluate_model"].output
    shown = {(Path(v.uri).name, str(v.type.value).lower()) for v in artifact.visualizations}
    assert {("confusion.png", "image"), ("gallery_visualization.html", "html")} <= shown
    assert artifact.load().gallery_html.count("<figure>") >= 1


def test_champion_loads_as_pyfunc_and_predicts(first_run, demo_drop):
    mlflow.set_tracking_uri(first_run.tracking_uri)
    rows = pd.read_csv(demo_drop / "catalog.csv").head(4)
    frame = pd.DataFrame({"image": [str(demo_drop / p) for p in rows["image"]], "title": rows["title"]})
    model = mlflow.pyfunc.load_model("models:/kickvision@champion")
    with pytest.raises(mlflow.exceptions.MlflowException, match="takes no file paths"):
        model.predict(frame)  # no KICKVISION_IMAGE_ROOT: the model opens no paths, in process or served
    frame = photos_as_bytes(frame)
    out = model.predict(frame)
    assert list(out.columns) == ["category", "probability", "probabilities", "similar_product_ids", "similar_scores"]
    assert len(out) == 4 and out["probability"].between(0, 1).all()
    catalog_ids = set(pd.read_csv(demo_drop / "catalog.csv", dtype=str)["product_id"])
    for ids, scores in zip(out["similar_product_ids"], out["similar_scores"], strict=True):
        assert len(ids) == 5 and set(ids) <= catalog_ids
        assert list(scores) == sorted(scores, reverse=True)
    # the product itself is in the index, so it is its own best match
    assert [ids[0] for ids in out["similar_product_ids"]] == rows["product_id"].astype(str).tolist()
    assert len(model.predict(frame, params={"k": 3})["similar_product_ids"][0]) == 3


def test_second_run_hits_cache_for_data_steps_and_gates_promotion(first_run, pipeline_config, demo_drop):
    from orchestration.runner import run_training

    second = run_training(demo_drop, pipeline_config)
    for step in ("ingest_catalog", "validate_catalog", "preprocess_catalog", "pretrain_photos"):
        assert second.step_status[step] == "cached", step  # the same photos are not pretrained on twice
    assert second.step_status["train_model"] == "completed"
    reg = second.registration
    assert reg["version"] == "2" and reg["champion_version"] == "1"
    client = mlflow.MlflowClient(first_run.tracking_uri)
    champion = str(client.get_model_version_by_alias("kickvision", "champion").version)
    assert champion == ("2" if reg["promoted"] else "1")
    assert client.get_model_version("kickvision", "2").tags["promotion_reason"] == reg["reason"]


def test_the_trained_model_names_its_pretrained_photo_encoders(first_run, demo_drop):
    from zenml.client import Client

    mlflow.set_tracking_uri(first_run.tracking_uri)
    run = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.mlflow.runName = '{first_run.run_name}'", output_format="list"
    )[0]
    assert run.data.tags["photo_pretraining"] == "title_alignment"
    step = Client().get_pipeline_run(first_run.run_name).steps["pretrain_photos"]
    record = step.outputs["photo_encoders"][0].load().record
    assert run.data.params["photo_pretraining.catalog_hash"] == record.catalog_hash
    for name, value in record.metrics.items():
        assert run.data.metrics[name] == pytest.approx(value)
    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_card.md")
    assert "pretrained on the catalog's own photos (title_alignment" in card


def test_cli_pretrain_shares_the_training_pipelines_cache(first_run, demo_drop, tmp_path, capsys):
    import yaml

    from kickvision.config import deep_merge
    from tests.conftest import REPO, TINY_PRETRAIN, TINY_RUN

    config = tmp_path / "tiny.yaml"
    with_pretraining = deep_merge(TINY_RUN, TINY_PRETRAIN)
    config.write_text(
        yaml.safe_dump(deep_merge(yaml.safe_load((REPO / "configs/demo.yaml").read_text()), with_pretraining))
    )
    assert cli_main(["pretrain", "--catalog", str(demo_drop), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "pretrain_photos cached" in out and "title_alignment" in out and "kickvision train --catalog" in out
    no_pretraining = deep_merge(TINY_RUN, {"pretrain": {"enabled": False}})
    config.write_text(
        yaml.safe_dump(deep_merge(yaml.safe_load((REPO / "configs/demo.yaml").read_text()), no_pretraining))
    )
    assert cli_main(["pretrain", "--catalog", str(demo_drop), "--config", str(config)]) == 2
    assert "pretrain.enabled: false" in capsys.readouterr().err


def test_cli_predict_answers_what_the_champion_answers(first_run, demo_drop, capsys):
    image = demo_drop / pd.read_csv(demo_drop / "catalog.csv").at[0, "image"]
    title = "Stride Women Black Shoes"
    assert cli_main(["predict", "--image", str(image), "--title", title]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    mlflow.set_tracking_uri(first_run.tracking_uri)
    served = mlflow.pyfunc.load_model("models:/kickvision@champion").predict(
        photos_as_bytes(pd.DataFrame({"image": [str(image.resolve())], "title": [title]}))
    )
    assert first.startswith(f"{served['category'][0]}  ({served['probability'][0]:.3f})")
    assert first.endswith("model: models:/kickvision@champion")


def test_cli_recommend_by_id_and_by_photo_and_title(first_run, demo_drop, capsys, tmp_path):
    rows = pd.read_csv(demo_drop / "catalog.csv", dtype=str)
    assert (
        cli_main(["recommend", "--product-id", rows.at[0, "product_id"], "-k", "4", "--sheet", str(tmp_path / "s.png")])
        == 0
    )
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.strip()[:2] in ("1.", "2.", "3.", "4.")]
    assert len(listed) == 4 and rows.at[0, "product_id"] not in "".join(listed)
    assert (tmp_path / "s.png").stat().st_size > 0
    image = demo_drop / rows.at[1, "image"]
    assert cli_main(["recommend", "--image", str(image), "--title", rows.at[1, "title"], "-k", "3"]) == 0
    assert rows.at[1, "product_id"] in capsys.readouterr().out
    assert cli_main(["recommend", "--product-id", "no-such-id"]) == 2
    assert "not in the catalog" in capsys.readouterr().err


def test_cli_explain_writes_a_figure(first_run, demo_drop, capsys, tmp_path):
    rows = pd.read_csv(demo_drop / "catalog.csv", dtype=str)
    out = tmp_path / "why.png"
    args = [
        "explain",
        "--image",
        str(demo_drop / rows.at[0, "image"]),
        "--title",
        rows.at[0, "title"],
        "--out",
        str(out),
    ]
    assert cli_main(args) == 0
    assert out.stat().st_size > 0 and "top-3" in capsys.readouterr().out
    assert cli_main([*args, "--target", "Not A Class"]) == 2


def test_cli_reports_an_unusable_drop_in_one_line(first_run, demo_drop, tmp_path, capsys):
    drop = shutil.copytree(demo_drop, tmp_path / "broken")
    pd.read_csv(drop / "catalog.csv").drop(columns=["title"]).to_csv(drop / "catalog.csv", index=False)
    config = tmp_path / "tiny.yaml"
    import yaml

    from kickvision.config import deep_merge
    from tests.conftest import REPO, TINY_RUN

    config.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((REPO / "configs/demo.yaml").read_text()), TINY_RUN)))
    assert cli_main(["train", "--catalog", str(drop), "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "error: catalog drop 'broken' is unusable" in captured.err
    assert "no 'title' column" in captured.err
    assert "Traceback" not in captured.err + captured.out
    client = mlflow.MlflowClient(first_run.tracking_uri)
    assert str(client.get_model_version_by_alias("kickvision", "champion").version) in ("1", "2")


def test_mlflow_models_serve_answers_over_http(first_run, demo_drop):
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    # mlflow starts uvicorn by name, so the venv's bin must be on PATH (as in an activated venv)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": first_run.tracking_uri,
        "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "KICKVISION_IMAGE_ROOT": str(demo_drop),  # requests may name photos under the catalog, nowhere else
    }
    server = subprocess.Popen(
        [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            "models:/kickvision@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(server.stdout.read().decode()[-3000:])
                time.sleep(1)
        rows = pd.read_csv(demo_drop / "catalog.csv").head(2)
        payload = {
            "dataframe_split": {
                "columns": ["image", "title"],
                "data": [[str(demo_drop / p), t] for p, t in zip(rows["image"], rows["title"], strict=True)],
            }
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        predictions = answer["predictions"]
        assert len(predictions) == 2 and {"category", "probability", "probabilities"} <= set(predictions[0])
        assert len(predictions[0]["similar_product_ids"]) == 5
        for bad_k in (-1, 0, "many"):  # the client's mistake: a 400 with the reason, and the server stays up
            bad = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=json.dumps({**payload, "params": {"k": bad_k}}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(bad, timeout=60)
            assert refused.value.code == 400, bad_k
            if bad_k != "many":  # ("many" is refused earlier, by the signature's params schema)
                assert "params.k must be" in refused.value.read().decode()
        outside = {"dataframe_split": {"columns": ["image", "title"], "data": [["/etc/hostname", "x"]]}}
        bad = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(outside).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=60)
        assert refused.value.code == 400 and "not under the server's image root" in refused.value.read().decode()
        assert len(json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]) == 2
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_train_refuses_to_promote_over_an_unloadable_champion_and_exits_2(first_run, demo_drop, tmp_path, capsys):
    import yaml

    from kickvision.config import deep_merge
    from tests.conftest import REPO, TINY_RUN, make_unloadable

    client = mlflow.MlflowClient(first_run.tracking_uri)
    champion = str(client.get_model_version_by_alias("kickvision", "champion").version)
    make_unloadable(client, "kickvision", champion)  # e.g. written before a config field existed, or a bad copy
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((REPO / "configs/demo.yaml").read_text()), TINY_RUN)))
    capsys.readouterr()
    assert cli_main(["train", "--catalog", str(demo_drop), "--config", str(config)]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]  # the rest is MLflow's log
    assert len(errors) == 1 and errors[0] == captured.err.strip().splitlines()[-1]
    assert errors[0].startswith(f"error: nothing was promoted: champion v{champion} cannot be loaded")
    assert "stays challenger" in captured.out and "Traceback" not in captured.out + captured.err
    assert str(client.get_model_version_by_alias("kickvision", "champion").version) == champion
    newest = max(client.search_model_versions("name='kickvision'"), key=lambda v: int(v.version))
    assert newest.tags["promotion_decision"] == "challenger" and "cannot be loaded" in newest.tags["promotion_reason"]


def test_the_train_console_shows_the_runs_progress_and_the_log_file_keeps_the_chatter(demo_drop, tmp_path):
    """A fresh state, as a new user's: no library chatter on the terminal, all of it in the log."""
    import yaml

    from kickvision.config import deep_merge
    from tests.conftest import REPO, TINY_RUN

    config = tmp_path / "tiny.yaml"
    run = deep_merge(TINY_RUN, {"prune": {"enabled": False}, "evaluate": {"faithfulness_products": 0}})
    config.write_text(yaml.safe_dump(deep_merge(yaml.safe_load((REPO / "configs/demo.yaml").read_text()), run)))
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "state" / "zenml")}
    done = subprocess.run(
        [sys.executable, "-m", "kickvision.cli", "train", "--catalog", str(demo_drop), "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    assert "epoch 1:" in console and "has finished" in console and "test top-1" in console  # the run's progress
    for chatter in ("Skipping registering function", "mlflow.store.db.utils", "autologging", "ZenML Pro"):
        assert chatter not in console, chatter
    log = tmp_path / "state" / "logs" / "kickvision.log"
    assert f"full log       {log}" in console
    text = log.read_text()
    assert "Skipping registering function" in text and "epoch 1:" in text  # the chatter is kept, not lost
