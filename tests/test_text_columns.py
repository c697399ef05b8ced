"""A model that reads attribute columns next to the title, served through MLflow and the CLI."""

import mlflow
import pandas as pd
import pytest
import torch

from kickvision.cli import main as cli_main
from kickvision.model.bundle import BundleSpec, ModelBundle
from kickvision.model.encoders import build_tokenizer
from kickvision.model.net import build_model
from kickvision.serve.pyfunc_logging import log_pyfunc

pytestmark = pytest.mark.integration


def test_cli_predict_passes_attributes_to_a_model_that_reads_them(tiny_config, mlflow_client, capsys):
    tokenizer = build_tokenizer(tiny_config.model.text_encoder)
    classes = ["Flats", "Heels", "Sports Shoes"]
    torch.manual_seed(0)
    spec = BundleSpec(classes=classes, max_title_tokens=12, text_columns=["usage"])
    bundle = ModelBundle(build_model(tiny_config.model, 3), tokenizer, spec)
    example = pd.DataFrame({"title": ["Puma Men Running Shoe"], "usage": ["Sports"]})
    with mlflow.start_run():
        uri = log_pyfunc(bundle, example).model_uri
    served = mlflow.pyfunc.load_model(uri)
    assert "usage" in served.metadata.get_input_schema().input_names()
    expected = served.predict(pd.DataFrame({"title": ["Puma Men Running Shoe"] * 2, "usage": ["Sports", ""]}))
    # The attribute reaches the model: its probabilities change with it.
    assert expected["probabilities"][0] != expected["probabilities"][1]
    # A client that does not know the attribute leaves the column out: the same as leaving it empty.
    without = served.predict(pd.DataFrame({"title": ["Puma Men Running Shoe"]}))
    assert without["probabilities"][0] == pytest.approx(expected["probabilities"][1], abs=1e-6)

    def cli_answer(*extra: str) -> tuple[str, float]:
        capsys.readouterr()
        assert cli_main(["predict", "--title", "Puma Men Running Shoe", *extra, "--model-uri", uri]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        category, _, rest = first.partition("  (")
        return category, float(rest.split(")")[0])

    # The CLI answers what the served model answers, with the attribute and without it (left empty).
    for row, extra in ((0, ("--attribute", "usage=Sports")), (1, ())):
        category, probability = cli_answer(*extra)
        assert category == expected["category"][row]
        assert probability == pytest.approx(expected["probability"][row], abs=5e-4)
