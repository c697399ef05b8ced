"""kickvision: explainable multimodal shoe classification and recommendation.

The core library is plain PyTorch / pandas and imports no ZenML, so the same code runs from a
notebook, a test, the CLI, an MLflow pyfunc or a pipeline step.
"""

import os

# Offline by default: nothing may download at run time, and no telemetry leaves the machine.
# setdefault keeps an explicit user choice; these must be set before huggingface_hub is imported.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ZENML_ANALYTICS_OPT_IN": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # keeps pipeline logs readable
}.items():
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
