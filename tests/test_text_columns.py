"""A model that reads attribute columns next to the title, served through MLflow and the CLI."""

import mlflow
import pytest

from kickvision.cli import main as cli_main
from kickvision.model.bundle import ModelBundle
from kickvision.model.encoders import build_tokenizer
from kickvision.model.net import build_model
from kickvision.serve.registry import log_pyfunc

pytestmark = pytest.mark.integration


def test_cli_predict_passes_attributes_to_a_model_that_reads_them(tiny_config, capsys):
    import pandas as pd

    from orchestration.stack import ensure_stack, use_tracking

    ensure_stack()
    use_tracking()
    tokenizer = build_tokenizer(tiny_config.model.text_encoder)
    classes = ["Flats", "Heels", "Sports Shoes"]
    bundle = ModelBundle(build_model(tiny_config.model, 3), tokenizer, classes, 12, {"text_columns": ["usage"]})
    example = pd.DataFrame({"title": ["Puma Men Running Shoe"], "usage": ["Sports"]})
    with mlflow.start_run():
        uri = log_pyfunc(bundle, example).model_uri
    served = mlflow.pyfunc.load_model(uri)
    assert "usage" in served.metadata.get_input_schema().input_names()

    capsys.readouterr()
    assert (
        cli_main(["predict", "--title", "Puma Men Running Shoe", "--attribute", "usage=Sports", "--model-uri", uri])
        == 0
    )
    with_usage = capsys.readouterr().out
    assert cli_main(["predict", "--title", "Puma Men Running Shoe", "--model-uri", uri]) == 0  # usage left empty
    without = capsys.readouterr().out
    assert with_usage.split()[0] in classes and without.split()[0] in classes
    # The attribute reaches the model: its probabilities change with it.
    probs = served.predict(pd.DataFrame({"title": ["Puma Men Running Shoe"] * 2, "usage": ["Sports", ""]}))
    assert probs["probabilities"][0] != probs["probabilities"][1]
