"""ZenML stacks from the recipes in infra/stacks/: register (idempotent), activate, check.

A recipe names its components, their flavors and configuration; `${option}` placeholders are
filled from `kickvision stack use NAME --tracking-uri ... --set key=value`. MLflow credentials go
into a ZenML secret that the tracker references, never into its configuration.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kickvision.errors import ConfigError, KickvisionError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STACKS_DIR = PROJECT_ROOT / "infra" / "stacks"
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


class TrackingServerError(KickvisionError):
    """The active stack's MLflow server cannot be reached."""


@dataclass(frozen=True)
class StackRecipe:
    recipe: str  # file stem: local, team, kubernetes, kubeflow
    name: str  # the ZenML stack name
    description: str
    options: dict[str, dict[str, Any]]
    components: dict[str, dict[str, Any]]
    run_config: str | None

    def filled(self, values: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Components with every `${option}` replaced; a missing required option is a ConfigError."""
        values = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(values) - set(self.options))
        if unknown:
            known = self.option_names()
            raise ConfigError(f"stack '{self.recipe}' has no option {', '.join(unknown)} (it has: {known})")
        resolved = {k: str(spec["default"]) for k, spec in self.options.items() if "default" in spec} | values
        missing = [k for k, spec in self.options.items() if spec.get("required") and k not in resolved]
        if missing:
            hints = "; ".join(f"--set {k}=...: {self.options[k].get('help', '')}" for k in missing)
            raise ConfigError(f"stack '{self.recipe}' needs {', '.join(missing)} ({hints})")

        def fill(value: Any) -> Any:
            if isinstance(value, str):
                return _PLACEHOLDER.sub(lambda m: resolved[m.group(1)], value)
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            return value

        return fill(self.components)

    def option_names(self) -> str:
        return ", ".join(self.options) or "none"


def load_recipe(recipe: str) -> StackRecipe:
    path = STACKS_DIR / f"{recipe}.yaml"
    if not path.is_file():
        raise ConfigError(f"no stack recipe '{recipe}' (known: {', '.join(list_recipes())})")
    spec = yaml.safe_load(path.read_text())
    return StackRecipe(
        recipe=recipe,
        name=spec["name"],
        description=spec.get("description", ""),
        options=spec.get("options") or {},
        components=spec["components"],
        run_config=spec.get("run_config"),
    )


def list_recipes() -> list[str]:
    return sorted(p.stem for p in STACKS_DIR.glob("*.yaml"))


def recipe_of_stack(stack_name: str) -> StackRecipe | None:
    for recipe in list_recipes():
        loaded = load_recipe(recipe)
        if loaded.name == stack_name:
            return loaded
    return None


def _mlflow_credentials(secret_name: str, credentials: dict[str, str | None]) -> dict[str, str]:
    """Store MLflow credentials (given, or from MLFLOW_TRACKING_*) in a ZenML secret; return references."""
    from zenml.client import Client

    given = {k: v for k, v in credentials.items() if v}
    if not given:
        env = {
            "tracking_username": os.environ.get("MLFLOW_TRACKING_USERNAME"),
            "tracking_password": os.environ.get("MLFLOW_TRACKING_PASSWORD"),
            "tracking_token": os.environ.get("MLFLOW_TRACKING_TOKEN"),
        }
        given = {k: v for k, v in env.items() if v}
    pairs = {"tracking_username", "tracking_password"}
    if not (set(given) == pairs or set(given) == {"tracking_token"}):
        raise ConfigError(
            "a remote MLflow server needs credentials for ZenML's tracker: --username and --password, or "
            "--token (or MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN); "
            "a server without authentication ignores them"
        )
    client = Client()
    try:
        client.get_secret(secret_name)
        client.update_secret(secret_name, add_or_update_values=given)
    except KeyError:
        client.create_secret(secret_name, values=given)
    return {key: f"{{{{{secret_name}.{key}}}}}" for key in given}


def use_stack(recipe: str, options: dict[str, str] | None = None, credentials: dict[str, str | None] | None = None):
    """Register the recipe's components and stack (or update their configuration), activate it.

    Returns the stack's model: instantiating cluster components needs their integrations
    (`zenml integration install kubernetes s3`), which only the machine that launches runs needs.
    """
    from zenml.client import Client
    from zenml.enums import StackComponentType
    from zenml.integrations.mlflow.flavors.mlflow_experiment_tracker_flavor import is_remote_mlflow_tracking_uri

    spec = load_recipe(recipe)
    components = spec.filled(options or {})
    client = Client()
    names, changed = {}, False
    for kind, component in components.items():
        component_type = StackComponentType(kind)
        configuration = dict(component.get("configuration") or {})
        if kind == "experiment_tracker" and is_remote_mlflow_tracking_uri(configuration.get("tracking_uri", "")):
            configuration |= _mlflow_credentials(f"{spec.name}-mlflow", credentials or {})
        try:
            existing = client.get_stack_component(component_type, component["name"])
        except KeyError:
            client.create_stack_component(
                name=component["name"],
                flavor=component["flavor"],
                component_type=component_type,
                configuration=configuration,
            )
        else:
            if existing.flavor_name != component["flavor"]:
                raise ConfigError(
                    f"a {kind} named '{component['name']}' exists with flavor {existing.flavor_name}, "
                    f"not {component['flavor']}: rename or remove it (zenml {kind.replace('_', '-')} delete)"
                )
            if configuration and configuration != {k: existing.configuration.get(k) for k in configuration}:
                client.update_stack_component(component["name"], component_type, configuration=configuration)
                changed = True
        names[component_type] = component["name"]
    try:
        client.get_stack(spec.name)
    except KeyError:
        client.create_stack(name=spec.name, components=names)
    else:
        if changed:  # ZenML caches stack instances by the stack's update time: bump it
            client.update_stack(spec.name, component_updates={k: [v] for k, v in names.items()})
    if client.active_stack_model.name != spec.name:
        client.activate_stack(spec.name)
    return client.active_stack_model


def ensure_stack(recipe: str = "local"):
    """Register and activate `recipe` once; afterwards keep whichever kickvision stack is active."""
    from zenml.client import Client

    if recipe == "local" and recipe_of_stack(Client().active_stack_model.name) is not None:
        return Client().active_stack_model
    return use_stack(recipe)


def active_run_config() -> str | None:
    """The ZenML run configuration (infra/zenml/*.yaml) of the active stack's recipe, if it has one."""
    from zenml.client import Client

    spec = recipe_of_stack(Client().active_stack_model.name)
    return str(PROJECT_ROOT / spec.run_config) if spec and spec.run_config else None


def tracking_uri() -> str:
    """The MLflow tracking URI of the active stack's experiment tracker."""
    return _mlflow_tracker().get_tracking_uri()


def use_tracking() -> str:
    """Point this process's MLflow client at the active stack (URI and credentials); check a server is up."""
    tracker = _mlflow_tracker()
    tracker.configure_mlflow()
    uri = tracker.get_tracking_uri()
    check_tracking_server(uri)
    return uri


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a remote MLflow server does not answer its health check."""
    import requests

    if not uri.startswith(("http://", "https://")):
        return
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as exc:
        reason = type(exc).__name__ if not isinstance(exc, requests.HTTPError) else f"HTTP {exc.response.status_code}"
        raise TrackingServerError(
            f"the MLflow tracking server {uri} is not reachable ({reason}); start it, or switch stacks "
            "(kickvision stack use local). Nothing was run or registered."
        ) from None


def _mlflow_tracker():
    from zenml.client import Client

    tracker = Client().active_stack.experiment_tracker
    if tracker is None or tracker.flavor != "mlflow":
        raise ConfigError("the active ZenML stack has no MLflow experiment tracker (kickvision stack use local)")
    return tracker


def describe_stacks() -> list[dict[str, str]]:
    """Every recipe: its stack name, whether registered, whether active, and its description."""
    from zenml.client import Client

    client = Client()
    active = client.active_stack_model.name
    rows = []
    for recipe in list_recipes():
        spec = load_recipe(recipe)
        try:
            client.get_stack(spec.name)
            registered = True
        except KeyError:
            registered = False
        rows.append(
            {
                "recipe": recipe,
                "stack": spec.name,
                "registered": "yes" if registered else "no",
                "active": "*" if spec.name == active else "",
                "options": spec.option_names(),
                "description": spec.description,
            }
        )
    return rows
