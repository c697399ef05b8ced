"""The `kickvision` argument parser: every subcommand, its options and its help."""

from __future__ import annotations

import argparse

from kickvision.cli.audit import cmd_audit
from kickvision.cli.commands import (
    DEMO_DIR,
    cmd_demo,
    cmd_demo_drop,
    cmd_explain,
    cmd_import,
    cmd_predict,
    cmd_pretrain,
    cmd_recommend,
    cmd_schedule,
    cmd_stack_list,
    cmd_stack_use,
    cmd_train,
    cmd_ui,
    cmd_update,
    cmd_validate,
)
from kickvision.cli.review import cmd_review
from kickvision.cli.watch import cmd_watch


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a bad one is argparse's usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is at most 65535, got {value}")
    return value


DESCRIPTION = (
    "The `kickvision` command: demo, train, update, watch, schedule, stack, ui, predict, recommend, explain, ..."
)


def build_parser() -> argparse.ArgumentParser:
    from kickvision.data.importers import FORMATS

    parser = argparse.ArgumentParser(prog="kickvision", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write the embedded demo catalog and train on it (what `make run` does)")
    demo.add_argument("--out", default=DEMO_DIR, help=f"demo catalog folder (default ./{DEMO_DIR}/)")
    demo.add_argument("--config", default="demo", help="run config file or name in configs/ (default demo)")
    demo.add_argument("--per-class", type=positive_int, default=120, help="demo products per category")
    demo.set_defaults(func=cmd_demo)

    def import_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--master-category", help="fashion-product: keep only this masterCategory")
        p.add_argument("--label", default="Category", help="ut-zappos: Category or SubCategory")

    def catalog_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--catalog", required=True, help="drop folder (generic: catalog.csv and images)")
        p.add_argument("--format", default="generic", choices=FORMATS, help="catalog layout (default generic)")
        import_options(p)

    def product_args(p: argparse.ArgumentParser, note: str) -> None:
        p.add_argument("--image", help=f"product photo{note}")
        p.add_argument("--title", help=f"product title{note}")

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model-name", default="kickvision")
        p.add_argument("--model-uri", help="any MLflow model URI (default models:/<name>@champion)")

    train = sub.add_parser("train", help="run the training pipeline on a catalog drop")
    catalog_args(train)
    train.add_argument("--config", default="demo", help="run config file or name in configs/")
    train.add_argument(
        "--also-drop",
        action="append",
        default=[],
        metavar="DIR",
        help="a joint retrain: also learn this drop (repeatable, oldest first; merged with --catalog into one "
        "catalog under the state folder, a later listing of a product replacing an earlier one)",
    )
    train.set_defaults(func=cmd_train)

    pretrain = sub.add_parser(
        "pretrain", help="pretrain the image encoders on a catalog's photos (cached: `train` then reuses them)"
    )
    catalog_args(pretrain)
    pretrain.add_argument("--config", default="demo", help="run config with pretrain.enabled: true")
    pretrain.set_defaults(func=cmd_pretrain)

    update = sub.add_parser("update", help="learn a catalog drop on top of the champion (EWC + replay update pipeline)")
    update.add_argument("--drop", required=True, help="the drop folder (generic: catalog.csv and images)")
    update.add_argument("--format", default="generic", choices=FORMATS, help="drop layout (default generic)")
    update.add_argument("--config", default="demo", help="run config (its validate/data/continual/registry sections)")
    import_options(update)
    update.set_defaults(func=cmd_update)

    watcher = sub.add_parser("watch", help="update the champion with every new drop folder in DIR, in name order")
    watcher.add_argument("--drops", required=True, help="folder of drop folders (hidden ones are skipped)")
    watcher.add_argument("--once", action="store_true", help="process what is there, then exit (for cron)")
    watcher.add_argument(
        "--max-drops",
        type=positive_int,
        help="with --once: at most this many drops, then exit (save the ledger between)",
    )
    watcher.add_argument("--interval", type=float, default=300.0, help="seconds between looks (default 300)")
    watcher.add_argument("--format", default="generic", choices=FORMATS, help="drop layout (default generic)")
    watcher.add_argument("--config", default="demo", help="run config (as for update)")
    import_options(watcher)
    watcher.set_defaults(func=cmd_watch)

    schedule = sub.add_parser("schedule", help="retrain on a cron schedule (orchestrators with schedules)")
    schedule.add_argument("--file", default="schedule", help="schedule file or name in configs/ (default schedule)")
    schedule.set_defaults(func=cmd_schedule)

    demo_drop = sub.add_parser("demo-drop", help="write a demo catalog drop (new products + a new category)")
    demo_drop.add_argument("--out", default="kickvision-drop-1", help="drop folder (default ./kickvision-drop-1/)")
    demo_drop.add_argument("--seed", type=int, default=11, help="a different seed gives a different drop")
    demo_drop.add_argument("--per-class", type=positive_int, default=30, help="new products per known category")
    demo_drop.add_argument("--no-new-category", action="store_true", help="only new products of known categories")
    demo_drop.set_defaults(func=cmd_demo_drop)

    validate = sub.add_parser("validate", help="check a catalog drop and report bad rows (trains nothing)")
    catalog_args(validate)
    validate.add_argument("--config", default="demo")
    validate.add_argument("--report", help="write quarantined rows with reasons to this CSV")
    validate.set_defaults(func=cmd_validate)

    importer = sub.add_parser("import", help="convert another catalog layout into a generic drop")
    importer.add_argument("--format", required=True, choices=FORMATS)
    importer.add_argument("--src", required=True, help="the catalog in its own layout")
    importer.add_argument("--out", required=True, help="folder for the generic drop")
    import_options(importer)
    importer.set_defaults(func=cmd_import)

    predict = sub.add_parser("predict", help="classify one product with the champion model")
    product_args(predict, "")
    predict.add_argument(
        "--attribute",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="an attribute the model reads next to the title (data.text_columns), e.g. usage=Sports",
    )
    model_args(predict)
    predict.set_defaults(func=cmd_predict)

    recommend = sub.add_parser("recommend", help="similar catalog products, from the champion's index")
    recommend.add_argument("--product-id", help="a product of the indexed catalog")
    product_args(recommend, " (with or without the other)")
    recommend.add_argument("-k", type=positive_int, default=5, help="how many products (default 5)")
    recommend.add_argument("--sheet", help="also write a contact sheet PNG (query + results)")
    model_args(recommend)
    recommend.set_defaults(func=cmd_recommend)

    explain = sub.add_parser(
        "explain", help="a map per image branch (Grad-CAM++, patch occlusion) and title-word importance, as a PNG"
    )
    product_args(explain, "")
    explain.add_argument("--target", help="class to explain (default: the predicted one)")
    explain.add_argument("--out", default="explanation.png", help="figure path (default explanation.png)")
    model_args(explain)
    explain.set_defaults(func=cmd_explain)

    audit = sub.add_parser(
        "audit", help="rank a catalog's products by how much the model doubts their label; find repeated listings"
    )
    catalog_args(audit)
    audit.add_argument("--config", default="demo", help="run config (its validate section decides what is quarantined)")
    audit.add_argument("--out", required=True, help="CSV: one row per product, most doubted label first")
    audit.add_argument("--html", help="also write a page of the most doubted products, with thumbnails")
    model_args(audit)
    audit.set_defaults(func=cmd_audit)

    review = sub.add_parser(
        "review", help="the review desk: a local web page to classify, explain, audit and correct (loopback)"
    )
    review.add_argument("--catalog", help="catalog folder to audit and correct (generic layout: catalog.csv beside it)")
    review.add_argument("--drops", help="a folder of catalog drops to report on (disagreements, drift, advice)")
    review.add_argument("--config", default="demo", help="run config (its validate section bounds uploads)")
    review.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback only)")
    review.add_argument("--port", type=port, default=8080)
    model_args(review)
    review.set_defaults(func=cmd_review)

    ui = sub.add_parser("ui", help="start the MLflow UI on the active stack's tracking store (loopback)")
    ui.add_argument("--port", type=port, default=5000)
    ui.set_defaults(func=cmd_ui)

    stack = sub.add_parser("stack", help="ZenML stacks from infra/stacks/: list them, or register and activate one")
    stack_sub = stack.add_subparsers(dest="stack_command", required=True)
    stack_list = stack_sub.add_parser("list", help="the stack recipes, which are registered, which is active")
    stack_list.set_defaults(func=cmd_stack_list)
    stack_use = stack_sub.add_parser("use", help="register (if needed) and activate a stack recipe")
    stack_use.add_argument("name", help="recipe: local, team, kubernetes, kubeflow (infra/stacks/<name>.yaml)")
    stack_use.add_argument("--tracking-uri", help="the MLflow server (team, kubernetes, kubeflow)")
    stack_use.add_argument("--username", help="MLflow server user (default $MLFLOW_TRACKING_USERNAME)")
    stack_use.add_argument("--password", help="MLflow server password (default $MLFLOW_TRACKING_PASSWORD)")
    stack_use.add_argument("--token", help="MLflow server token, instead of user and password")
    stack_use.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any other recipe option (repeatable)"
    )
    stack_use.set_defaults(func=cmd_stack_use)
    return parser
