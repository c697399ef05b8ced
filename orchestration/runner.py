"""Launch a pipeline run on the active stack and summarise it for a person."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kickvision.config import RunConfig, ScheduleConfig
from kickvision.data.catalog import hash_drop
from kickvision.errors import ConfigError, KickvisionError
from kickvision.tracking import run_tags


class ScheduleUnsupported(KickvisionError):
    """The active orchestrator cannot run schedules."""


@dataclass
class RunSummary:
    run_name: str
    status: str
    step_status: dict[str, str]
    test_metrics: dict[str, float]
    registration: dict[str, Any]
    tracking_uri: str
    config: str = "demo"  # the --config the run was given, for the next command it suggests

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
        lines.append(f"registered     {reg.get('model_name')} v{reg.get('version')}: {fate} ({reg.get('reason')})")
        if reg.get("joint_retrain"):
            lines.append(f"next step      {self.joint_retrain_hint()}")
        lines.append(f"MLflow UI      {self.ui_hint()}")
        return "\n".join(lines)

    def joint_retrain_hint(self) -> str:
        """What to run when an update was refused: a fresh training on everything the model learnt."""
        joint = self.registration["joint_retrain"]
        catalogs = joint.get("catalogs") or []
        if not catalogs:
            return "a full retrain on the base catalog and every drop since (the champion does not name its folders)"
        command = f"kickvision train --catalog {shlex.quote(catalogs[0])}"
        command += (
            "".join(f" --also-drop {shlex.quote(c)}" for c in catalogs[1:]) + f" --config {shlex.quote(self.config)}"
        )
        estimate = joint.get("estimate_s")
        span = (f"{estimate:.0f} s" if estimate < 90 else f"{estimate / 60:.0f} min") if estimate else ""
        took = f" (about {span} on the machine that trained the champion)" if estimate else ""
        auto = "; `kickvision watch` does this itself with continual.refused_update: joint_retrain"
        return f"a joint retrain on everything it learnt plus this drop: {command}{took}{auto}"

    def ui_hint(self) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri
        return f"kickvision ui  (or: mlflow ui --backend-store-uri {self.tracking_uri} --port 5000)"


def run_options(run_name: str, tags: dict[str, str], model=None) -> dict[str, Any]:
    """ZenML run options: the run name, MLflow run tags, the ZenML model version the run creates,
    and the active stack's run config (if any)."""
    from zenml.integrations.mlflow.flavors.mlflow_experiment_tracker_flavor import MLFlowExperimentTrackerSettings

    from orchestration.stack import active_run_config

    options: dict[str, Any] = {
        "run_name": run_name,
        "settings": {"experiment_tracker": MLFlowExperimentTrackerSettings(tags=tags)},
    }
    if model is not None:
        options["model"] = model
    if config_path := active_run_config():
        options["config_path"] = config_path
    return options


def training_parameters(catalog_dir: str, content_hash: str, config: RunConfig) -> dict[str, Any]:
    """The training pipeline's parameters: the drop and every section of the run config."""
    return {
        "catalog_dir": catalog_dir,
        "content_hash": content_hash,
        "validation": config.validate_,
        "data": config.data,
        "model": config.model,
        "train": config.train,
        "registry": config.registry,
        "continual": config.continual,
        "prune": config.prune,
        "evaluation": config.evaluate,
        "pretrain": config.pretrain,
        "seed": config.seed,
    }


def run_training(
    catalog_dir: str | Path, config: RunConfig, run_name: str | None = None, joint_retrain_of: list[str] | None = None
) -> RunSummary:
    """Run the training pipeline on `catalog_dir` with `config` on the active kickvision stack;
    `joint_retrain_of`: the content hashes of the drops merged into it after refused updates."""
    from orchestration.model_version import zenml_model
    from orchestration.stack import ensure_stack, use_tracking
    from pipelines.training import training_pipeline

    ensure_stack()
    uri = use_tracking()  # a remote server that is down fails here, before anything runs
    catalog_dir = str(Path(catalog_dir).resolve())
    content_hash = hash_drop(catalog_dir)
    run_name = run_name or f"train-{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = run_tags("training", config.name, content_hash, Path(catalog_dir).name)
    run = training_pipeline.with_options(**run_options(run_name, tags, zenml_model(config, "training")))(
        **training_parameters(catalog_dir, content_hash, config), joint_retrain_of=joint_retrain_of or None
    )
    return summarise(run, uri, "register_model", config.name)


def run_pretraining(catalog_dir: str | Path, config: RunConfig, run_name: str | None = None) -> str:
    """Pretrain the config's photo encoders on `catalog_dir` (cached for `run_training`); a summary."""
    from zenml.client import Client

    from orchestration.stack import ensure_stack, use_tracking
    from pipelines.pretraining import pretraining_pipeline

    if not config.pretrain.enabled:
        raise ConfigError(
            f"config '{config.name}' has pretrain.enabled: false, so training would not use pretrained photo "
            "encoders; set it to true (the pretrain section says how)"
        )
    ensure_stack()
    uri = use_tracking()
    catalog_dir = str(Path(catalog_dir).resolve())
    content_hash = hash_drop(catalog_dir)
    run_name = run_name or f"pretrain-{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = run_tags("pretraining", config.name, content_hash, Path(catalog_dir).name)
    parameters = training_parameters(catalog_dir, content_hash, config)
    keep = ("catalog_dir", "content_hash", "validation", "data", "model", "train", "pretrain", "seed")
    run = pretraining_pipeline.with_options(**run_options(run_name, tags))(**{k: parameters[k] for k in keep})
    run = Client().get_pipeline_run(run.id)
    step = run.steps["pretrain_photos"]
    record = step.outputs["photo_encoders"][0].load().record
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(record.metrics.items())) if record else "none"
    return "\n".join(
        [
            f"ZenML run      {run.name} ({run.status.value}; pretrain_photos {step.status.value})",
            f"photo encoders {record.method if record else 'none'} on catalog {content_hash[:12]}: {metrics}",
            f"next           kickvision train --catalog {catalog_dir} --config {config.name} (reuses them)",
            f"MLflow         {uri}",
        ]
    )


def schedule_training(schedule: ScheduleConfig, config: RunConfig) -> str:
    """Attach a cron Schedule for the training pipeline to the active stack's orchestrator."""
    from zenml.client import Client
    from zenml.config.schedule import Schedule

    from orchestration.model_version import zenml_model
    from orchestration.stack import ensure_stack, use_tracking
    from pipelines.training import training_pipeline

    ensure_stack()
    orchestrator = Client().active_stack.orchestrator
    if not orchestrator.config.is_schedulable:
        raise ScheduleUnsupported(
            f"the active stack's orchestrator ({orchestrator.flavor}) runs no schedules; use a Kubernetes or "
            f"Kubeflow stack (kickvision stack use ...), or put the drop watcher in crontab: {schedule.watch_cron_line}"
        )
    use_tracking()
    tags = run_tags("training", config.name, "scheduled", Path(schedule.catalog).name)
    options = run_options(f"{schedule.name}-{{date}}-{{time}}", tags, zenml_model(config, "training"))
    cron = Schedule(name=schedule.name, cron_expression=schedule.cron_expression)
    # No content hash: each scheduled run reads what the folder holds when it fires.
    parameters = training_parameters(schedule.catalog, "", config)
    training_pipeline.with_options(schedule=cron, enable_cache=False, **options)(**parameters)
    return f"scheduled {schedule.name}: training pipeline on {schedule.catalog} at '{schedule.cron_expression}'"


def run_update(drop_dir: str | Path, config: RunConfig, run_name: str | None = None) -> RunSummary | str:
    """Run the update pipeline on the drop `drop_dir`, starting from the registry's champion.

    Returns the run's summary, or a one-paragraph message when there is nothing to do because
    this drop was already applied to the current champion.
    """
    from mlflow.tracking import MlflowClient

    from kickvision.serve.registry import champion_uri, champion_version, processed_by
    from orchestration.model_version import zenml_model
    from orchestration.stack import ensure_stack, use_tracking
    from pipelines.update import update_pipeline

    ensure_stack()
    uri = use_tracking()
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
    tags = run_tags("update", config.name, content_hash, Path(drop_dir).name)
    run = update_pipeline.with_options(**run_options(run_name, tags, zenml_model(config, "update")))(
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
    return summarise(run, uri, "register_update", config.name)


def summarise(run, uri: str, register_step: str, config: str = "demo") -> RunSummary:
    from zenml.client import Client

    run = Client().get_pipeline_run(run.id)
    steps = {name: str(s.status.value) for name, s in run.steps.items()}
    registration = run.steps[register_step].outputs["registration"][0].load()
    metrics = registration.get("test_metrics", {})
    return RunSummary(run.name, str(run.status.value), steps, metrics, registration, uri, config)
