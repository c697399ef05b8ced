"""The MLflow pyfunc, logged as "models from code": MLflow stores this file, never a pickled class.

`mlflow.pyfunc.load_model("models:/kickvision@champion").predict(df)` takes a DataFrame with an
`image` column (base64 image bytes; a file path only under the folder named by the environment
variable KICKVISION_IMAGE_ROOT) and a `title` column (either may be empty) and
returns `category`, `probability`, `probabilities` (class -> probability) and, best first, the `k`
most similar catalog products: `similar_product_ids` and `similar_scores` (params={"k": 10}).
"""

import os
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class KickvisionModel(PythonModel):
    def load_context(self, context):
        from kickvision.model.bundle import load_bundle
        from kickvision.serve.predictor import ShoePredictor

        root = os.environ.get("KICKVISION_IMAGE_ROOT")  # unset: image bytes only, no file paths
        self.predictor = ShoePredictor(
            load_bundle(context.artifacts["bundle"]), image_paths=Path(root) if root else None
        )

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        k = requested_k(params)
        try:
            return self.predictor.predict_frame(pd.DataFrame(model_input), k=k)
        except ValueError as exc:  # a bad cell (undecodable image, refused path): the client's error
            # (the server's own faults, an OSError of its disk included, stay 5xx)
            raise MlflowException(f"bad input: {exc}", INVALID_PARAMETER_VALUE) from None


MAX_K = 1000


def requested_k(params: dict | None) -> int:
    """`params.k`, a whole number in 1..MAX_K; anything else is the client's error (HTTP 400 when served)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    value = (params or {}).get("k", 5)
    try:
        k = int(value)
    except (TypeError, ValueError):
        k = None
    if k is None or isinstance(value, float) and not float(value).is_integer() or not 1 <= k <= MAX_K:
        raise MlflowException(
            f"params.k must be a whole number from 1 to {MAX_K}, got {value!r}", INVALID_PARAMETER_VALUE
        )
    return k


mlflow.models.set_model(KickvisionModel())
