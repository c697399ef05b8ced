"""What each `kickvision` subcommand does (the parser in parser.py maps names and options to these).

Commands import what they need when they run, so `kickvision --help` stays fast and a command that
never launches a pipeline never imports ZenML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kickvision.cli.common import (
    catalog_dir,
    key_value,
    loading,
    model_uri,
    output_folder,
    output_path,
    read_photo,
    state_dir,
)
from kickvision.cli.console import setup_console
from kickvision.errors import KickvisionError

DEMO_DIR = "kickvision-demo"


def _train(catalog: str, config: str, joint_retrain_of: list[str] | None = None) -> int:
    from kickvision.config import load_config
    from orchestration.runner import run_training

    cfg = load_config(config)  # a bad config fails here, before any pipeline starts
    log = setup_console()
    summary = run_training(catalog, cfg, joint_retrain_of=joint_retrain_of)
    print("\n" + summary.render())
    print(f"{'full log':<15}{log}")
    return _exit_status(summary.registration)


def _exit_status(registration: dict) -> int:
    """2 when promotion failed closed (the registry or the champion could not be read), else 0."""
    if registration.get("fail_closed"):
        print(f"error: nothing was promoted: {registration.get('reason')}", file=sys.stderr)
        return 2
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from kickvision.config import load_config
    from orchestration.runner import run_pretraining

    cfg = load_config(args.config)
    setup_console()
    print("\n" + run_pretraining(catalog_dir(args), cfg))
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from kickvision.config import load_config
    from orchestration.runner import run_update

    cfg = load_config(args.config)
    args.catalog = args.drop
    drop = catalog_dir(args)
    log = setup_console()
    result = run_update(drop, cfg)
    if not isinstance(result, str):
        result.config = args.config  # as the user named it, for the command it suggests next
    print("\n" + (result if isinstance(result, str) else result.render()))
    print(f"{'full log':<15}{log}")
    return 0 if isinstance(result, str) else _exit_status(result.registration)


def cmd_schedule(args: argparse.Namespace) -> int:
    from kickvision.config import load_config, load_schedule
    from orchestration.runner import schedule_training

    schedule = load_schedule(args.file)
    print(schedule_training(schedule, load_config(schedule.config)))
    return 0


def cmd_demo_drop(args: argparse.Namespace) -> int:
    from kickvision.data.demo import write_demo_drop

    out = write_demo_drop(
        output_folder(args.out, "--out"),
        n_per_class=args.per_class,
        seed=args.seed,
        new_categories=not args.no_new_category,
    )
    rows = sum(1 for _ in (out / "catalog.csv").open()) - 1
    print(f"wrote a demo catalog drop with {rows} products to {out}/; next: kickvision update --drop {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kickvision.config import load_config
    from kickvision.data.catalog import CATALOG_FILE
    from kickvision.data.demo import write_demo_catalog

    load_config(args.config)  # a wrong config fails before the catalog is written
    out = output_folder(args.out, "--out")
    if not (out / CATALOG_FILE).is_file():  # deterministic, so an existing one is the same catalog
        print(f"writing the demo catalog to {out}/ ...")
        write_demo_catalog(out, n_per_class=args.per_class)
    return _train(str(out), args.config)


def cmd_train(args: argparse.Namespace) -> int:
    if not args.also_drop:
        return _train(catalog_dir(args), args.config)
    from kickvision.config import load_config
    from kickvision.data.catalog import hash_drop

    load_config(args.config)  # a bad config fails before anything is merged
    drops = [catalog_dir(args, d) for d in args.also_drop]
    report = merge_for_joint_retrain([catalog_dir(args), *drops])
    print(report.summary())
    return _train(str(report.folder), args.config, joint_retrain_of=[hash_drop(d) for d in drops])


def merge_for_joint_retrain(folders: list[str]):
    """The catalogs `folders` merged into `<state>/catalogs/joint-<digest of their paths>` (rewritten each time)."""
    import hashlib

    from kickvision.data.merge import merge_catalogs

    digest = hashlib.sha256("\n".join(str(Path(f).resolve()) for f in folders).encode()).hexdigest()[:12]
    return merge_catalogs(folders, state_dir() / "catalogs" / f"joint-{digest}")


def cmd_import(args: argparse.Namespace) -> int:
    from kickvision.data.importers import REJECTS_FILE, import_catalog

    out = import_catalog(args.format, args.src, args.out, master_category=args.master_category, label=args.label)
    rows = sum(1 for _ in (out / "catalog.csv").open()) - 1
    print(f"wrote a generic drop with {rows} products to {out}")
    if (out / REJECTS_FILE).is_file():
        print(f"lines that could not be parsed, with reasons: {out / REJECTS_FILE}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from kickvision.config import load_config
    from kickvision.data.catalog import read_catalog
    from kickvision.data.validation import quarantine_bad_rows, usable_or_raise

    cfg = load_config(args.config).validate_
    report = output_path(args.report, "--report") if args.report else None
    result = quarantine_bad_rows(read_catalog(catalog_dir(args)), cfg)
    print(result.summary())
    if report:
        result.quarantine.to_csv(report, index=False)
        print(f"quarantined rows with reasons: {report}")
    usable_or_raise(result, cfg)  # an unusable catalog: one `error:` line and exit 2, as training would
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import base64

    import mlflow
    import pandas as pd

    from kickvision.config import ValidateConfig

    uri = model_uri(args)
    # The photo travels as bytes, as to a server (the pyfunc opens no paths unless told a root).
    if args.image and Path(args.image).stat().st_size > ValidateConfig().max_image_bytes:
        raise KickvisionError(f"{args.image} is over {ValidateConfig().max_image_bytes:,} bytes")
    photo = base64.b64encode(Path(args.image).read_bytes()).decode() if args.image else None
    frame = pd.DataFrame({"image": [photo], "title": [args.title]})
    with loading(uri):
        model = mlflow.pyfunc.load_model(uri)
    # A model trained with attribute columns takes them as inputs; an unknown one is left empty.
    attributes = dict(key_value(item) for item in args.attribute)
    schema = model.metadata.get_input_schema()
    for column in schema.input_names() if schema is not None else []:
        if column not in frame:
            frame[column] = [attributes.get(column, "")]
    with loading(uri):  # (a photo the model cannot decode is an MlflowException too)
        result = model.predict(frame).iloc[0]
    print(f"{result['category']}  ({result['probability']:.3f})   model: {uri}")
    for name, p in sorted(result["probabilities"].items(), key=lambda kv: -kv[1])[:3]:
        print(f"  {p:6.3f}  {name}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from kickvision.evaluate.retrieval import contact_sheet
    from kickvision.serve.predictor import ShoePredictor
    from kickvision.serve.registry import load_registered_bundle

    sheet = output_path(args.sheet, "--sheet") if args.sheet else None
    uri = model_uri(args)
    with loading(uri):
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
        image = read_photo(args.image) if args.image else None
        _, embedding = predictor.forward([image], [args.title])
        found = index.results(embedding, args.k)[0]
        query_cell = (image, args.title or "")
    print(f"top {len(found)} similar products ({uri}):")
    for rank, row in enumerate(found.itertuples(), start=1):
        print(f"{rank:>3}. {row.score:.3f}  {row.product_id}  {row.title}  [{row.category}]")
    if sheet:
        contact_sheet([query_cell], [found], sheet)
        print(f"contact sheet: {sheet}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from kickvision.evaluate.explain import explain_product, plot_explanation
    from kickvision.serve.registry import load_registered_bundle

    out = output_path(args.out, "--out")
    uri = model_uri(args)
    with loading(uri):
        bundle = load_registered_bundle(uri)
    if args.target and args.target not in bundle.classes:
        raise KickvisionError(f"--target '{args.target}' is not a class of {uri}: {', '.join(bundle.classes)}")
    image = read_photo(args.image) if args.image else None
    explanation = explain_product(bundle, image, args.title, args.target)
    plot_explanation(explanation, out)
    top = sorted(explanation.probabilities.items(), key=lambda kv: -kv[1])[:3]
    print(f"target {explanation.target}; top-3: " + ", ".join(f"{c} {p:.3f}" for c, p in top))
    if explanation.words:
        print(
            "title words (drop in target probability when hidden): "
            + ", ".join(f"{w} {v:+.3f}" for w, v in explanation.words)
        )
    print(f"figure: {out}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from orchestration.stack import ensure_stack, use_tracking

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
    from orchestration.stack import describe_stacks

    rows = describe_stacks()
    print(f"{'':2}{'recipe':<12}{'ZenML stack':<24}{'registered':<12}{'options':<70}")
    for row in rows:
        print(f"{row['active']:<2}{row['recipe']:<12}{row['stack']:<24}{row['registered']:<12}{row['options']:<70}")
        print(f"{'':14}{row['description']}")
    return 0


def cmd_stack_use(args: argparse.Namespace) -> int:
    from orchestration.stack import load_recipe, use_stack

    options = dict(key_value(item) for item in args.set)
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
