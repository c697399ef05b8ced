"""The `kickvision` command: demo, train, update, watch, schedule, stack, ui, predict, recommend, explain, ...

Data and configuration problems print one line (`error: ...`) and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from kickvision.errors import KickvisionError

DEMO_DIR = "kickvision-demo"


class _HideUserErrorTracebacks(logging.Filter):
    """Orchestrator logs keep the message of a data/config problem but drop its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _user_error_in_chain(record.exc_info[1]) is not None:
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_error_tracebacks() -> None:
    import zenml  # noqa: F401  (sets up ZenML's handlers, which the filter is attached to)

    for handler in [*logging.getLogger().handlers, *logging.getLogger("zenml").handlers]:
        handler.addFilter(_HideUserErrorTracebacks())


def _train(catalog: str, config: str) -> int:
    from kickvision.config import load_config
    from pipelines.runner import run_training

    cfg = load_config(config)  # a bad config fails here, before any pipeline starts
    _quiet_user_error_tracebacks()
    summary = run_training(catalog, cfg)
    print("\n" + summary.render())
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from kickvision.config import load_config
    from pipelines.runner import run_update

    cfg = load_config(args.config)
    args.catalog = args.drop
    drop = _catalog_dir(args)
    _quiet_user_error_tracebacks()
    result = run_update(drop, cfg)
    print("\n" + (result if isinstance(result, str) else result.render()))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from kickvision.config import load_config
    from kickvision.errors import CatalogError
    from kickvision.watch import DropFailed, watch
    from pipelines.runner import run_update

    cfg = load_config(args.config)
    _quiet_user_error_tracebacks()

    def update(folder: Path) -> str:
        try:
            result = run_update(_catalog_dir(args, folder), cfg)
        except Exception as exc:
            cause = _user_error_in_chain(exc)
            if isinstance(cause, CatalogError):
                raise DropFailed(str(cause)) from None
            raise cause or exc from None
        if isinstance(result, str):  # this drop already reached the registry (e.g. before a crash)
            return result
        reg = result.registration
        fate = "champion" if reg.get("promoted") else "challenger"
        return f"{reg.get('model_name')} v{reg.get('version')} {fate}: {reg.get('reason')}"

    def report(name: str, outcome) -> None:
        print(f"{name}: {outcome.status}: {outcome.detail}", flush=True)

    outcomes = watch(args.drops, update, once=args.once, interval_s=args.interval, report=report)
    print(f"processed {len(outcomes)} drop(s); nothing left in {args.drops}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from kickvision.config import load_config, load_schedule
    from pipelines.runner import schedule_training

    schedule = load_schedule(args.file)
    print(schedule_training(schedule, load_config(schedule.config)))
    return 0


def cmd_demo_drop(args: argparse.Namespace) -> int:
    from kickvision.demo import write_demo_drop

    out = write_demo_drop(args.out, n_per_class=args.per_class, seed=args.seed, new_categories=not args.no_new_category)
    rows = sum(1 for _ in (out / "catalog.csv").open()) - 1
    print(f"wrote a demo catalog drop with {rows} products to {out}/; next: kickvision update --drop {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kickvision.catalog import CATALOG_FILE
    from kickvision.demo import write_demo_catalog

    out = Path(args.out)
    if not (out / CATALOG_FILE).is_file():  # deterministic, so an existing one is the same catalog
        print(f"writing the demo catalog to {out}/ ...")
        write_demo_catalog(out, n_per_class=args.per_class)
    return _train(str(out), args.config)


def _catalog_dir(args: argparse.Namespace, source: str | Path | None = None) -> str:
    """The generic drop for `source` (default --catalog): itself, or its import when --format names another layout."""
    from kickvision.importers import catalog_dir_for

    workdir = Path(os.environ["ZENML_CONFIG_PATH"]).parent / "imports"
    options = {"master_category": args.master_category, "label": args.label}
    return str(catalog_dir_for(args.format, source or args.catalog, workdir, **options))


def cmd_train(args: argparse.Namespace) -> int:
    return _train(_catalog_dir(args), args.config)


def cmd_import(args: argparse.Namespace) -> int:
    from kickvision.importers import REJECTS_FILE, import_catalog

    out = import_catalog(args.format, args.src, args.out, master_category=args.master_category, label=args.label)
    rows = sum(1 for _ in (out / "catalog.csv").open()) - 1
    print(f"wrote a generic drop with {rows} products to {out}")
    if (out / REJECTS_FILE).is_file():
        print(f"lines that could not be parsed, with reasons: {out / REJECTS_FILE}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from kickvision.catalog import read_catalog
    from kickvision.config import load_config
    from kickvision.validation import quarantine_bad_rows

    cfg = load_config(args.config).validate_
    result = quarantine_bad_rows(read_catalog(_catalog_dir(args)), cfg)
    print(result.summary())
    if args.report:
        result.quarantine.to_csv(args.report, index=False)
        print(f"quarantined rows with reasons: {args.report}")
    return 0


def _model_uri(args: argparse.Namespace) -> str:
    """Check the --image argument, point MLflow at the active stack, and name the model to use."""
    from kickvision.registry import champion_uri
    from pipelines.stack import ensure_stack, use_tracking

    if getattr(args, "image", None) and not Path(args.image).is_file():
        raise KickvisionError(f"image not found: {args.image}")
    ensure_stack()
    use_tracking()
    return args.model_uri or champion_uri(args.model_name)


def cmd_predict(args: argparse.Namespace) -> int:
    import mlflow
    import pandas as pd

    uri = _model_uri(args)
    frame = pd.DataFrame({"image": [str(Path(args.image).resolve()) if args.image else None], "title": [args.title]})
    model = mlflow.pyfunc.load_model(uri)
    # A model trained with attribute columns takes them as inputs; an unknown one is left empty.
    attributes = dict(_key_value(item) for item in args.attribute)
    schema = model.metadata.get_input_schema()
    for column in schema.input_names() if schema is not None else []:
        if column not in frame:
            frame[column] = [attributes.get(column, "")]
    result = model.predict(frame).iloc[0]
    print(f"{result['category']}  ({result['probability']:.3f})   model: {uri}")
    for name, p in sorted(result["probabilities"].items(), key=lambda kv: -kv[1])[:3]:
        print(f"  {p:6.3f}  {name}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from kickvision.inference import ShoePredictor, decode_image_field
    from kickvision.recommend import contact_sheet
    from kickvision.registry import load_registered_bundle

    uri = _model_uri(args)
    bundle = load_registered_bundle(uri)
    if bundle.index is None:
        raise KickvisionError(f"{uri} carries no recommendation index; retrain it with this version")
    index = bundle.index
    if args.product_id:
        hits = index.items.index[index.items["product_id"] == args.product_id]
        if len(hits) == 0:
            raise KickvisionError(f"product id '{args.product_id}' is not in the catalog of {uri}")
        query = index.embeddings[hits[:1]].float()
        found = index.results(query, args.k, exclude_ids=[args.product_id])[0]
        item = index.items.iloc[hits[0]]
        query_cell = (item["image"] if Path(item["image"]).is_file() else None, item["category"])
        print(f"query: {item['product_id']}  {item['title']}  [{item['category']}]")
    else:
        predictor = ShoePredictor(bundle)
        image = decode_image_field(str(Path(args.image).resolve())) if args.image else None
        _, embedding = predictor.forward([image], [args.title])
        found = index.results(embedding, args.k)[0]
        query_cell = (image, args.title or "")
    print(f"top {len(found)} similar products ({uri}):")
    for rank, row in enumerate(found.itertuples(), start=1):
        print(f"{rank:>3}. {row.score:.3f}  {row.product_id}  {row.title}  [{row.category}]")
    if args.sheet:
        contact_sheet([query_cell], [found], args.sheet)
        print(f"contact sheet: {args.sheet}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from kickvision.explain import explain_product, plot_explanation
    from kickvision.inference import decode_image_field
    from kickvision.registry import load_registered_bundle

    uri = _model_uri(args)
    bundle = load_registered_bundle(uri)
    if args.target and args.target not in bundle.classes:
        raise KickvisionError(f"--target '{args.target}' is not a class of {uri}: {', '.join(bundle.classes)}")
    image = decode_image_field(str(Path(args.image).resolve())) if args.image else None
    explanation = explain_product(bundle, image, args.title, args.target)
    plot_explanation(explanation, args.out)
    top = sorted(explanation.probabilities.items(), key=lambda kv: -kv[1])[:3]
    print(f"target {explanation.target}; top-3: " + ", ".join(f"{c} {p:.3f}" for c, p in top))
    if explanation.words:
        print(
            "title words (drop in target probability when hidden): "
            + ", ".join(f"{w} {v:+.3f}" for w, v in explanation.words)
        )
    print(f"figure: {args.out}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from pipelines.stack import ensure_stack, use_tracking

    ensure_stack()
    uri = use_tracking()
    if uri.startswith(("http://", "https://")):
        print(f"the active stack tracks on an MLflow server; its UI is {uri}")
        return 0
    print(f"MLflow UI on http://127.0.0.1:{args.port}  (tracking store {uri})")
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    return subprocess.call(cmd)


def cmd_stack_list(args: argparse.Namespace) -> int:
    from pipelines.stack import describe_stacks

    rows = describe_stacks()
    print(f"{'':2}{'recipe':<12}{'ZenML stack':<24}{'registered':<12}{'options':<70}")
    for row in rows:
        print(f"{row['active']:<2}{row['recipe']:<12}{row['stack']:<24}{row['registered']:<12}{row['options']:<70}")
        print(f"{'':14}{row['description']}")
    return 0


def cmd_stack_use(args: argparse.Namespace) -> int:
    from pipelines.stack import load_recipe, use_stack

    options = dict(_key_value(item) for item in args.set)
    if args.tracking_uri:
        options["tracking_uri"] = args.tracking_uri
    credentials = {"tracking_username": args.username, "tracking_password": args.password, "tracking_token": args.token}
    stack = use_stack(args.name, options, credentials)
    recipe = load_recipe(args.name)
    print(f"active stack: {stack.name} (infra/stacks/{args.name}.yaml: {recipe.description})")
    for kind, component in recipe.filled(options).items():
        configuration = component.get("configuration") or {}
        print(f"  {kind:<19} {component['name']} ({component['flavor']}) {configuration or ''}")
    return 0


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise KickvisionError(f"expected key=value, not '{item}'")
    return key.strip().replace("-", "_"), value.strip()


def build_parser() -> argparse.ArgumentParser:
    from kickvision.importers import FORMATS

    parser = argparse.ArgumentParser(prog="kickvision", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write the embedded demo catalog and train on it (what `make run` does)")
    demo.add_argument("--out", default=DEMO_DIR, help=f"demo catalog folder (default ./{DEMO_DIR}/)")
    demo.add_argument("--config", default="demo", help="run config file or name in configs/ (default demo)")
    demo.add_argument("--per-class", type=int, default=120, help="demo products per category")
    demo.set_defaults(func=cmd_demo)

    def import_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--master-category", help="fashion-product: keep only this masterCategory")
        p.add_argument("--label", default="Category", help="ut-zappos: Category or SubCategory")

    def catalog_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--catalog", required=True, help="drop folder (generic: catalog.csv and images)")
        p.add_argument("--format", default="generic", choices=FORMATS, help="catalog layout (default generic)")
        import_options(p)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model-name", default="kickvision")
        p.add_argument("--model-uri", help="any MLflow model URI (default models:/<name>@champion)")

    train = sub.add_parser("train", help="run the training pipeline on a catalog drop")
    catalog_args(train)
    train.add_argument("--config", default="demo", help="run config file or name in configs/")
    train.set_defaults(func=cmd_train)

    update = sub.add_parser("update", help="learn a catalog drop on top of the champion (EWC + replay update pipeline)")
    update.add_argument("--drop", required=True, help="the drop folder (generic: catalog.csv and images)")
    update.add_argument("--format", default="generic", choices=FORMATS, help="drop layout (default generic)")
    update.add_argument("--config", default="demo", help="run config (its validate/data/continual/registry sections)")
    import_options(update)
    update.set_defaults(func=cmd_update)

    watcher = sub.add_parser("watch", help="update the champion with every new drop folder in DIR, in name order")
    watcher.add_argument("--drops", required=True, help="folder of drop folders (hidden ones are skipped)")
    watcher.add_argument("--once", action="store_true", help="process what is there, then exit (for cron)")
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
    demo_drop.add_argument("--per-class", type=int, default=30, help="new products per known category")
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
    predict.add_argument("--image", help="product photo")
    predict.add_argument("--title", help="product title")
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
    recommend.add_argument("--image", help="a product photo (with or without --title)")
    recommend.add_argument("--title", help="a product title (with or without --image)")
    recommend.add_argument("-k", type=int, default=5, help="how many products (default 5)")
    recommend.add_argument("--sheet", help="also write a contact sheet PNG (query + results)")
    model_args(recommend)
    recommend.set_defaults(func=cmd_recommend)

    explain = sub.add_parser("explain", help="Grad-CAM++ on each image branch and title-word importance, as a PNG")
    explain.add_argument("--image", help="product photo")
    explain.add_argument("--title", help="product title")
    explain.add_argument("--target", help="class to explain (default: the predicted one)")
    explain.add_argument("--out", default="explanation.png", help="figure path (default explanation.png)")
    model_args(explain)
    explain.set_defaults(func=cmd_explain)

    ui = sub.add_parser("ui", help="start the MLflow UI on the active stack's tracking store (loopback)")
    ui.add_argument("--port", type=int, default=5000)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Project-local state unless the user chose otherwise: ZenML's store, the artifact store and
    # the MLflow SQLite tracking/registry all live under this one folder.
    os.environ.setdefault("ZENML_CONFIG_PATH", str(Path.cwd() / ".kickvision" / "zenml"))
    os.environ.setdefault("MPLCONFIGDIR", str(Path(os.environ["ZENML_CONFIG_PATH"]).parent / "matplotlib"))
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
        cause = _user_error_in_chain(exc)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2


def _user_error_in_chain(exc: BaseException) -> KickvisionError | None:
    """A pipeline step's KickvisionError may arrive wrapped by the orchestrator."""
    seen = exc
    while seen is not None:
        if isinstance(seen, KickvisionError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
