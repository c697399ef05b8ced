"""Helpers every `kickvision` subcommand shares: input folders and files, output paths, the model to load."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kickvision.errors import KickvisionError


def state_dir() -> Path:
    """The project's state folder: the parent of ZENML_CONFIG_PATH (default `./.kickvision/zenml`), which
    also holds MLflow's store, imported and merged catalogs, the matplotlib cache and the log."""
    return Path(os.environ.get("ZENML_CONFIG_PATH", Path.cwd() / ".kickvision" / "zenml")).parent


def catalog_dir(args: argparse.Namespace, source: str | Path | None = None) -> str:
    """The generic drop for `source` (default --catalog): itself, or its import when --format names another layout."""
    from kickvision.data.importers import catalog_dir_for

    workdir = state_dir() / "imports"
    options = {"master_category": args.master_category, "label": args.label}
    return str(catalog_dir_for(args.format, source or args.catalog, workdir, **options))


def output_folder(path: str, option: str) -> Path:
    """A folder the command will write into: it may exist, but not as a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise KickvisionError(f"{option} {path} is a file, not a folder")
    return out


def output_path(path: str, option: str) -> Path:
    """A file the command will write: its folder must exist and it must not be a folder (checked before any work)."""
    out = Path(path)
    if out.is_dir():
        raise KickvisionError(f"{option} {path} is a folder; give a file name")
    if not out.parent.is_dir():
        raise KickvisionError(f"{option} {path}: folder {out.parent} does not exist")
    return out


def read_photo(path: str):
    """The --image file, decoded as training decodes photos; an unreadable one is one error line."""
    from kickvision.serve.predictor import decode_image_field

    try:
        return decode_image_field(str(Path(path).resolve()))
    except Exception as exc:  # PIL's many ways to say "not an image I can read"
        raise KickvisionError(f"--image {path}: {exc}") from None


@contextmanager
def loading(uri: str) -> Iterator[None]:
    """A model URI that does not resolve (no such model, version, alias or folder) is one error line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KickvisionError(f"{uri}: {first}") from None


def model_uri(args: argparse.Namespace) -> str:
    """Check the --image argument, point MLflow at the active stack, and name the model to use."""
    from kickvision.serve.registry import champion_uri
    from orchestration.stack import ensure_stack, use_tracking

    if getattr(args, "image", None) and not Path(args.image).is_file():
        raise KickvisionError(f"image not found: {args.image}")
    ensure_stack()
    use_tracking()
    return args.model_uri or champion_uri(args.model_name)


def key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise KickvisionError(f"expected key=value, not '{item}'")
    return key.strip().replace("-", "_"), value.strip()
