"""The `kickvision` command: demo, train, update, watch, schedule, stack, ui, predict, recommend, explain, ...

Data and configuration problems print one line (`error: ...`) and exit 2; no traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from kickvision.cli.common import state_dir
from kickvision.cli.parser import build_parser
from kickvision.errors import KickvisionError, user_error_in_chain


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Project-local state unless the user chose otherwise: ZenML's store, the artifact store and
    # the MLflow SQLite tracking/registry all live under this one folder.
    os.environ.setdefault("ZENML_CONFIG_PATH", str(Path.cwd() / ".kickvision" / "zenml"))
    os.environ.setdefault("MPLCONFIGDIR", str(state_dir() / "matplotlib"))
    # Only the level: ZenML installs its own console handler when a pipeline runs.
    logging.getLogger("kickvision").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.command in ("predict", "recommend", "explain") and not (
        args.image or args.title or getattr(args, "product_id", None)
    ):
        hint = "--product-id, or " if args.command == "recommend" else ""
        print(f"error: give {hint}--image, --title or both", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KickvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        cause = user_error_in_chain(exc)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
