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
        update = reg.get("update_metrics") or {}
        lines = [
            f"ZenML run      {self.run_name} ({self.status})",
            f"test top-1     {self.test_metrics.get('test_top1', float('nan')):.4f}",
            f"test macro-F1  {self.test_metrics.get('test_macro_f1', float('nan')):.4f}",
        ]
        if update:
            lines += [
                f"old top-1      {update['update_old_top1_before']:.4f} -> {update['update_old_top1_after']:.4f} "
                f"(forgetting {update['update_forgetting']:+.4f})",
                f"new top-1      {update['update_new_top1']:.4f}",
                f"combined top-1 {update['update_combined_top1_before']:.4f} -> "
                f"{update['update_combined_top1_after']:.4f}",
            ]
        lines += [
            f"registered     {reg.get('model_name')} v{reg.get('version')}: {fate} ({reg.get('reason')})",
            f"MLflow UI      mlflow ui --backend-store-uri {self.tracking_uri} --port 5000",
        ]
        return "\n".join(lines)


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
        continual=config.continual,
        prune=config.prune,
        evaluation=config.evaluate,
        seed=config.seed,
    )
    return summarise(run, tracking_uri(), "register_model")


def run_update(drop_dir: str | Path, config: RunConfig, run_name: str | None = None) -> RunSummary | str:
    """Run the update pipeline on the drop `drop_dir`, starting from the registry's champion.

    Returns the run's summary, or a one-paragraph message when there is nothing to do because
    this drop was already applied to the current champion.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from kickvision.registry import champion_uri, champion_version, processed_by
    from pipelines.stack import ensure_stack, tracking_uri
    from pipelines.update import update_pipeline

    ensure_stack("local")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    name = config.registry.model_name
    champion_uri(name)  # a clear RegistryError when there is no champion yet
    champ = champion_version(MlflowClient(), name)
    drop_dir = str(Path(drop_dir).resolve())
    content_hash = hash_drop(drop_dir)
    done = processed_by(name, content_hash)
    if done is not None:
        return (
            f"nothing to do: this drop (content hash {content_hash[:12]}) was already applied to champion "
            f"v{champ.version}: {name} v{done.version} ({done.tags.get('promotion_decision')}: "
            f"{done.tags.get('promotion_reason')}). The champion is unchanged."
        )
    run_name = run_name or f"update-{Path(drop_dir).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = update_pipeline.with_options(run_name=run_name)(
        drop_dir=drop_dir,
        content_hash=content_hash,
        champion_uri=f"models:/{name}/{champ.version}",
        champion_version=str(champ.version),
        validation=config.validate_,
        data=config.data,
        continual=config.continual,
        train=config.train,
        registry=config.registry,
        prune=config.prune,
        evaluation=config.evaluate,
        seed=config.seed,
    )
    return summarise(run, uri, "register_update")


def summarise(run, uri: str, register_step: str) -> RunSummary:
    from zenml.client import Client

    run = Client().get_pipeline_run(run.id)
    steps = {name: str(s.status.value) for name, s in run.steps.items()}
    registration = run.steps[register_step].output.load()
    return RunSummary(run.name, str(run.status.value), steps, registration.get("test_metrics", {}), registration, uri)
