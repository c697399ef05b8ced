"""Small helpers for what goes to the experiment tracker."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def flatten_params(nested: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"fusion": "concat"}} -> {"model.fusion": "concat"}; values as short strings."""
    flat: dict[str, str] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten_params(item, f"{name}.{i}."))
        else:
            flat[name] = str(value)[:500]
    return flat


def git_commit(directory: str | Path | None = None) -> str:
    """The commit of the checkout holding `directory` (default: this package), or "unknown"."""
    import subprocess

    where = Path(directory) if directory else Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = done.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True)
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def run_tags(pipeline: str, config_name: str, catalog_hash: str, drop: str) -> dict[str, str]:
    """Tags every MLflow run of a pipeline carries, so the UI's compare view can line runs up."""
    return {
        "kickvision.pipeline": pipeline,
        "kickvision.config": config_name,
        "kickvision.catalog_hash": catalog_hash,
        "kickvision.drop": drop,
        "kickvision.git_commit": git_commit(),
    }
