"""The core library must stay usable without ZenML (notebooks, the pyfunc, tests)."""

import subprocess
import sys


def test_core_library_imports_no_zenml():
    modules = [
        "bundle",
        "calibration",
        "catalog",
        "config",
        "data",
        "demo",
        "evaluation",
        "explain",
        "inference",
        "model",
        "model_card",
        "recommend",
        "registry",
        "training",
        "validation",
    ]
    code = "import sys\n" + "".join(f"import kickvision.{m}\n" for m in modules) + "print('zenml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
