"""Errors a user can cause and fix: the CLI prints them as one line, never as a traceback."""


class KickvisionError(Exception):
    """Base class for problems with the user's data, configuration or registry state."""


class CatalogError(KickvisionError):
    """A catalog drop is unreadable or unusable (missing file, bad columns, too few good rows)."""


class ConfigError(KickvisionError):
    """A run configuration file is missing or has an invalid value."""


class RegistryError(KickvisionError):
    """The MLflow registry lacks what was asked for (e.g. no champion yet)."""


def user_error_in_chain(exc: BaseException) -> KickvisionError | None:
    """The KickvisionError behind `exc`, if any (a pipeline step's may arrive wrapped by the orchestrator)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, KickvisionError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
