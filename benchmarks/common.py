"""What every benchmark starts with: its common options, a validated, prepared catalog (a real one, or
the demo), and a model fitted and scored the same way."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from kickvision.config import RunConfig
from kickvision.data.catalog import read_catalog
from kickvision.data.demo import write_demo_catalog
from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import PreparedData, prepare_catalog
from kickvision.data.validation import quarantine_bad_rows
from kickvision.model.encoders import build_tokenizer
from kickvision.model.predict import predict_arrays, predict_logits
from kickvision.train.engine import classification_scores
from kickvision.train.fit import FitResult, fit

RESULTS = Path(__file__).parent / "results"


def write_result(result: dict, out: str | None, default_name: str) -> Path:
    """A benchmark's result as JSON at `out` (default benchmarks/results/<default_name>); says where."""
    path = Path(out or RESULTS / default_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {path}")
    return path


def benchmark_parser(doc: str, config: str = "demo", seeds: tuple[int, ...] = (42,)) -> argparse.ArgumentParser:
    """--catalog, --config, --seeds and --set, as every benchmark takes them."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--catalog", help="catalog drop (default: the demo catalog, generated)")
    parser.add_argument("--config", default=config)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    return parser


def add_validated_option(parser: argparse.ArgumentParser) -> None:
    """--validated, for the benchmarks a lent GPU box runs (benchmarks/gpu/session.sh)."""
    parser.add_argument(
        "--validated",
        action="store_true",
        help="the catalog holds validation's good rows already (written by benchmarks/gpu/validated_catalog.py): "
        "read it as it is, no Great Expectations run (for a machine without GX, such as a lent GPU box)",
    )


def prepared_catalog(catalog: str | None, cfg: RunConfig, validated: bool = False):
    """(prepared data, tokenizer, catalog name) for `catalog`, or for a freshly drawn demo catalog;
    `validated`: the catalog is validation's output already (its good rows), read as it is."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(catalog) if catalog else write_demo_catalog(Path(tmp) / "demo")
        rows = read_catalog(source) if validated else quarantine_bad_rows(read_catalog(source), cfg.validate_).catalog
        tokenizer = build_tokenizer(cfg.model.text_encoder)
        data: PreparedData = prepare_catalog(rows, tokenizer, resolve_image_transform(cfg.model), cfg.data, cfg.seed)
    return data, tokenizer, source.name if catalog else "demo"


def data_for_model(data: PreparedData, bundle, cfg: RunConfig) -> PreparedData:
    """`data` labelled in a saved model's class order (a catalog-drop update appends its new categories),
    after checking that the model reads the text the config encodes; exits with one line otherwise."""
    if sorted(bundle.classes) != sorted(data.classes):
        raise SystemExit(f"error: the model's classes {bundle.classes} are not the catalog's {data.classes}")
    read = (bundle.spec.text_columns, bundle.spec.max_title_tokens)
    if read != (cfg.data.text_columns, cfg.data.max_title_tokens):
        raise SystemExit(f"error: the model reads (text columns, tokens) {read}; config {cfg.name} encodes otherwise")
    if bundle.classes == data.classes:
        return data
    order = {c: i for i, c in enumerate(bundle.classes)}
    rows = data.rows.assign(label=data.rows["category"].map(order).astype("int64"))
    return dataclasses.replace(data, rows=rows, classes=list(bundle.classes))


def fit_quietly(data: PreparedData, cfg: RunConfig, model_cfg, tokenizer, seed: int, photo_encoders=None) -> FitResult:
    """`model_cfg` fitted with the run config's train and data sections, no progress bars."""
    tokens, columns = cfg.data.max_title_tokens, cfg.data.text_columns
    return fit(
        data,
        model_cfg,
        cfg.train,
        tokenizer,
        tokens,
        seed=seed,
        progress=False,
        text_columns=columns,
        photo_encoders=photo_encoders,
    )


def image_only_scores(data: PreparedData, cfg: RunConfig, tokenizer, seed: int, photo_encoders=None) -> dict:
    """The config's model without its text branch, fitted and scored on the test split (+ with flip
    test-time averaging, the kept epoch and the fit's seconds)."""
    started = time.perf_counter()
    bundle = fit_quietly(
        data, cfg, cfg.model.model_copy(update={"text_encoder": None}), tokenizer, seed, photo_encoders
    ).bundle
    seconds = time.perf_counter() - started
    test = data.indices("test")
    labels = data.labels()[test]
    logits, _ = predict_logits(bundle.model, data, test)
    scores = classification_scores(labels, logits.argmax(1))
    flip = flip_tta_scores(bundle.model, data, test, logits)
    return {**scores, **flip, "best_epoch": bundle.spec.training.best_epoch, "seconds": seconds}


def flip_tta_scores(model, data: PreparedData, rows, logits, **hide) -> dict[str, float]:
    """Test-time averaging of flips: top-1 and macro-F1 of `logits` (the products as they are, with the
    modalities `hide` names hidden) averaged with the logits of their photos' mirror images."""
    mirrored = data.images[rows][:, :, ::-1]  # NHWC: the width axis
    flipped, _ = predict_arrays(model, mirrored, data.input_ids[rows], data.attention_mask[rows], **hide)
    scores = classification_scores(data.labels()[rows], (logits + flipped).argmax(1))
    return {"top1_flip_tta": scores["top1"], "macro_f1_flip_tta": scores["macro_f1"]}


def split_methods(text: str) -> list[str]:
    """A list option (`--methods`, `--train-arms`) split on the commas outside brackets, so
    `config[interpolation=[0.5,1.0]]` stays one item."""
    methods, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            methods.append(current)
            current = ""
        else:
            current += ch
    return [m for m in [*methods, current] if m]
