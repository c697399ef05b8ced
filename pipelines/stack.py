"""Register and activate a ZenML stack from a recipe in infra/stacks/ (idempotent)."""

from __future__ import annotations

from pathlib import Path

import yaml

STACKS_DIR = Path(__file__).resolve().parents[1] / "infra" / "stacks"


def ensure_stack(recipe: str = "local"):
    """Register the recipe's components and stack if missing, activate it, return the Stack."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    spec = yaml.safe_load((STACKS_DIR / f"{recipe}.yaml").read_text())
    client = Client()
    try:
        client.get_stack(spec["name"])
    except KeyError:
        components = {}
        for kind, component in spec["components"].items():
            component_type = StackComponentType(kind)
            try:
                client.get_stack_component(component_type, component["name"])
            except KeyError:
                client.create_stack_component(
                    name=component["name"],
                    flavor=component["flavor"],
                    component_type=component_type,
                    configuration=component.get("configuration") or {},
                )
            components[component_type] = component["name"]
        client.create_stack(name=spec["name"], components=components)
    if client.active_stack_model.name != spec["name"]:
        client.activate_stack(spec["name"])
    return client.active_stack


def tracking_uri() -> str:
    """The MLflow tracking URI of the active stack's experiment tracker."""
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    if tracker is None or tracker.flavor != "mlflow":
        raise RuntimeError("the active ZenML stack has no MLflow experiment tracker")
    return tracker.get_tracking_uri()
