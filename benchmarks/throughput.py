"""Training and inference throughput of a config's model on a catalog's real batches.

Trains (forward, the training loss, backward, AdamW step) on batches of the train split in the
loader's order, and predicts (kickvision.model.predict) on the validation split, for each batch size
asked, two ways in one process (measured in the order A B B A and averaged): with the text encoder
reading only the token columns some title of the batch uses (`trim_padding`, as kickvision runs) and
reading every column up to `max_title_tokens` (as it ran before). Prints samples per second and the
ratio; writes JSON.

    .venv/bin/python benchmarks/throughput.py --catalog ../shared/data/fashion-footwear --config fashion
    .venv/bin/python benchmarks/throughput.py --catalog ../shared/data/fashion-footwear --config fashion \
        --set 'data.text_columns=[]'          # titles alone
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from common import benchmark_parser, prepared_catalog

from kickvision.config import dotted_overrides, load_config
from kickvision.data.images import resolve_image_transform
from kickvision.model.encoders import TextEncoder
from kickvision.model.net import build_model
from kickvision.model.predict import predict_logits
from kickvision.train.engine import create_optimizer
from kickvision.train.loader import make_loader
from kickvision.train.losses import ClassificationLoss
from kickvision.train.settings import fit_settings


def every_column(encoder: TextEncoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """TextEncoder.forward as it was before `trim_padding`: every padded column through the transformer."""
    states = encoder.forward_features(input_ids, attention_mask)
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def train_rate(model, data, cfg, batch_size: int, seconds: float) -> float:
    """Training samples per second over about `seconds` of steps (after one warm-up step)."""
    settings = fit_settings(cfg.train)
    optimizer = create_optimizer(model, settings)
    loss_fn = ClassificationLoss.from_config(cfg.train, cfg.model)
    transform = resolve_image_transform(cfg.model)
    model.train()
    seen, started = 0, None
    while started is None or time.perf_counter() - started < seconds:
        for batch in make_loader(data, data.indices("train"), batch_size, cfg.seed, balanced=True):
            batch["image"] = transform.standardise(transform.to_unit(batch["image"]))
            out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
            optimizer.zero_grad(set_to_none=True)
            loss_fn(batch, out).backward()
            optimizer.step()
            if started is None:
                started = time.perf_counter()  # the first step warms up
                continue
            seen += len(batch["label"])
            if time.perf_counter() - started >= seconds:
                break
    return seen / (time.perf_counter() - started)


def predict_rate(model, data, batch_size: int) -> float:
    indices = data.indices("val")
    predict_logits(model, data, indices[:batch_size], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    predict_logits(model, data, indices, batch_size=batch_size)
    return len(indices) / (time.perf_counter() - started)


def main() -> None:
    parser = benchmark_parser(__doc__, config="fashion")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seconds", type=float, default=30.0, help="training time per measurement")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/throughput_<catalog>_<config>.json)")
    args = parser.parse_args()
    cfg = load_config(args.config, overrides=dotted_overrides(args.set))
    data, _, name = prepared_catalog(args.catalog, cfg)
    lengths = data.attention_mask.sum(1)
    print(
        f"{name}: {len(data.rows)} products, text columns {cfg.data.text_columns or 'none'}, tokens median "
        f"{np.median(lengths):.0f}, 90th percentile {np.percentile(lengths, 90):.0f}, max_title_tokens "
        f"{cfg.data.max_title_tokens}; {torch.get_num_threads()} threads",
        flush=True,
    )
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, len(data.classes))
    rows = []
    for batch_size in args.batch_sizes:
        row = {"batch_size": batch_size}
        rates: dict[str, list[float]] = {}
        for way in ("every column", "trimmed", "trimmed", "every column"):  # ABBA: drift hits both ways alike
            if way == "every column":
                model.text_encoder.forward = lambda ids, mask: every_column(model.text_encoder, ids, mask)
            elif "forward" in vars(model.text_encoder):
                del model.text_encoder.forward  # back to the class's own (trimming) forward
            rates.setdefault(f"train_{way}", []).append(train_rate(model, data, cfg, batch_size, args.seconds))
            rates.setdefault(f"predict_{way}", []).append(predict_rate(model, data, batch_size))
        row |= {key: float(np.mean(values)) for key, values in rates.items()}
        row["train_ratio"] = row["train_trimmed"] / row["train_every column"]
        row["predict_ratio"] = row["predict_trimmed"] / row["predict_every column"]
        rows.append(row)
        print(row, flush=True)
    print("| batch | train, every column | train, trimmed | ratio | predict, every column | predict, trimmed | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch_size']} | {r['train_every column']:.1f}/s | {r['train_trimmed']:.1f}/s | "
            f"{r['train_ratio']:.2f} | {r['predict_every column']:.0f}/s | {r['predict_trimmed']:.0f}/s | "
            f"{r['predict_ratio']:.2f} |"
        )
    out = Path(args.out or Path(__file__).parent / "results" / f"throughput_{name}_{cfg.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"catalog": name, "config": cfg.name, "overrides": args.set, "host": platform.node()}
    meta |= {"threads": torch.get_num_threads(), "tokens_median": float(np.median(lengths))}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
