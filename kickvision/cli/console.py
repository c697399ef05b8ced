"""What a pipeline command prints: the run's own progress on the console, library chatter in a log file.

ZenML puts one console handler on the root logger, so every library's INFO lines reach the
terminal: Great Expectations registers its API (a hundred "Skipping registering function" lines),
MLflow announces database migrations and autologging it cannot disable. On the console we keep
kickvision's own loggers (steps, epochs, decisions), ZenML's step and run progress lines, and
anything at WARNING or above from other libraries except known harmless warnings; everything, chatter included,
goes to `<state>/logs/kickvision.log` (state: the folder holding ZENML_CONFIG_PATH). A data or
configuration problem keeps its message but loses its traceback on the console (the log keeps it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kickvision.errors import user_error_in_chain

OWN = ("kickvision", "steps", "orchestration", "pipelines", "materializers")
# ZenML's progress lines ("Step train_model has started/finished", "Pipeline run has finished"); its
# other INFO lines (stack listing, dashboard and Pro hints) go to the file.
ZENML_PROGRESS = ("zenml.orchestrators.step_launcher", "zenml.orchestrators.local")
HARMLESS = ("zenml.integrations.mlflow.experiment_trackers",)  # "failed to disable autologging for fastai"
_FILE_HANDLERS: dict[str, logging.Handler] = {}


class ConsoleFilter(logging.Filter):
    """Own progress and real warnings pass; library chatter and user-error tracebacks do not."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and user_error_in_chain(record.exc_info[1]) is not None:
            record.exc_info, record.exc_text = None, None
        name = record.name
        if name.startswith(HARMLESS) and record.levelno < logging.ERROR:
            return False
        if name.split(".")[0] in OWN or name.startswith(ZENML_PROGRESS) or name == "root":
            return True
        return record.levelno >= logging.WARNING


def log_file() -> Path:
    from kickvision.cli.common import state_dir

    return state_dir() / "logs" / "kickvision.log"


def setup_console() -> Path:
    """Filter the console handlers (root, ZenML's, MLflow's) and add the log file; returns its path."""
    import mlflow  # noqa: F401  (sets up MLflow's own handler, which does not propagate)
    import zenml  # noqa: F401  (sets up ZenML's handlers, which the filter is attached to)

    path = log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    for logger in (logging.getLogger(), logging.getLogger("zenml"), logging.getLogger("mlflow")):
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler) and not any(
                isinstance(f, ConsoleFilter) for f in handler.filters
            ):
                handler.addFilter(ConsoleFilter())
    if str(path) not in _FILE_HANDLERS:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger("mlflow").addHandler(handler)  # (MLflow's logger does not propagate)
        _FILE_HANDLERS[str(path)] = handler
    return path
