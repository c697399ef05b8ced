"""Launch a pipeline run on the active stack and summarise it for a person."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kickvision.catalog import hash_drop
from kickvision.config import RunConfig


@dataclass
class RunSummary:
    run_name: str
    status: str
    step_status: dict[str, str]
    test_metrics: dict[str, float]
    registration: dict[str, Any]
    tracking_uri: str

    def render(self) -> str:
        reg = self.registration
        fate = "became champion" if reg.get("promoted") else "stays challenger"
        return "\n".join(
            [
                f"ZenML run      {self.run_name} ({self.status})",
                f"test top-1     {self.test_metrics.get('test_top1', float('nan')):.4f}",
                f"test macro-F1  {self.test_metrics.get('test_macro_f1', float('nan')):.4f}",
                f"registered     {reg.get('model_name')} v{reg.get('version')}: {fate} ({reg.get('reason')})",
                f"MLflow UI      mlflow ui --backend-store-uri {self.tracking_uri} --port 5000",
            ]
        )


def run_training(catalog_dir: str | Path, config: RunConfig, run_name: str | None = None) -> RunSummary:
    """Run the training pipeline on `catalog_dir` with `config` on the local kickvision stack."""
    from pipelines.stack import ensure_stack, tracking_uri
    from pipelines.training import training_pipeline

    ensure_stack("local")
    catalog_dir = str(Path(catalog_dir).resolve())
    content_hash = hash_drop(catalog_dir)
    run_name = run_name or f"train-{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = training_pipeline.with_options(run_name=run_name)(
        catalog_dir=catalog_dir,
        content_hash=content_hash,
        validation=config.validate_,
        data=config.data,
        model=config.model,
        train=config.train,
        registry=config.registry,
        seed=config.seed,
    )
    return summarise(run, tracking_uri())


def summarise(run, uri: str) -> RunSummary:
    from zenml.client import Client

    run = Client().get_pipeline_run(run.id)
    steps = {name: str(s.status.value) for name, s in run.steps.items()}
    registration = run.steps["register_model"].output.load()
    return RunSummary(run.name, str(run.status.value), steps, registration.get("test_metrics", {}), registration, uri)
