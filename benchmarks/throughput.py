"""Training and inference throughput of a config's model on a catalog's real batches.

Trains (forward, the training loss, backward, AdamW step) on batches of the train split in the
loader's order, and predicts (kickvision.model.predict) on the validation split, for each batch size
asked, two ways in one process (measured in the order A B B A and averaged). Prints samples per
second and the ratio; writes JSON. What the two ways are (`--compare`):

- `trim`: the text encoder reading only the token columns some title of the batch uses
  (`trim_padding`, as kickvision runs) vs every column up to `max_title_tokens` (as it ran before);
- `optimizer`: torch's fused AdamW kernel (`create_optimizer`, as kickvision runs) vs AdamW stepping
  each tensor in turn (torch's own choice on a CPU, as it ran before); training only;
- `amp`: float32 vs bf16 autocast on the CPU (`torch.autocast("cpu", dtype=torch.bfloat16)` around the
  forward and the loss, weights and optimizer in float32); worth it only where the CPU has native bf16
  instructions (AVX512-BF16, AMX), which `torch.backends.mkldnn` reports.

    .venv/bin/python benchmarks/throughput.py --catalog ../shared/data/fashion-footwear --config fashion
    .venv/bin/python benchmarks/throughput.py --catalog ../shared/data/fashion-footwear --config fashion \
        --set 'data.text_columns=[]'          # titles alone
    .venv/bin/python benchmarks/throughput.py --catalog ../shared/data/fashion-footwear --config fashion \
        --compare optimizer --batch-sizes 32
    .venv/bin/python benchmarks/throughput.py --catalog ../shared/data/fashion-footwear --config fashion \
        --compare amp --batch-sizes 64
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch
from common import benchmark_parser, prepared_catalog, write_result

from kickvision.config import dotted_overrides, load_config
from kickvision.data.images import resolve_image_transform
from kickvision.model.encoders import TextEncoder
from kickvision.model.net import build_model
from kickvision.model.predict import predict_logits
from kickvision.train.engine import create_optimizer
from kickvision.train.loader import make_loader
from kickvision.train.losses import ClassificationLoss
from kickvision.train.settings import fit_settings

WAYS = {
    "trim": ("every column", "trimmed"),
    "optimizer": ("per tensor", "fused"),
    "amp": ("float32", "bf16 autocast"),
}  # (before, as kickvision runs)


def every_column(encoder: TextEncoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """TextEncoder.forward as it was before `trim_padding`: every padded column through the transformer."""
    states = encoder.forward_features(input_ids, attention_mask)
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def per_tensor_adamw(model, settings) -> torch.optim.Optimizer:
    """`create_optimizer`'s groups and settings, stepped one tensor at a time (torch's CPU default)."""
    groups = create_optimizer(model, settings).param_groups
    return torch.optim.AdamW([g | {"fused": None, "foreach": False} for g in groups])


def train_rate(
    model, data, cfg, batch_size: int, seconds: float, optimizer_factory=create_optimizer, bf16: bool = False
) -> float:
    """Training samples per second over about `seconds` of steps (after one warm-up step)."""
    settings = fit_settings(cfg.train)
    optimizer = optimizer_factory(model, settings)
    loss_fn = ClassificationLoss.from_config(cfg.train, cfg.model)
    transform = resolve_image_transform(cfg.model)
    model.train()
    seen, started = 0, None
    while started is None or time.perf_counter() - started < seconds:
        for batch in make_loader(data, data.indices("train"), batch_size, cfg.seed, balanced=True):
            batch["image"] = transform.standardise(transform.to_unit(batch["image"]))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
                loss = loss_fn(batch, out)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if started is None:
                started = time.perf_counter()  # the first step warms up
                continue
            seen += len(batch["label"])
            if time.perf_counter() - started >= seconds:
                break
    return seen / (time.perf_counter() - started)


def predict_rate(model, data, batch_size: int, bf16: bool = False) -> float:
    indices = data.indices("val")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        predict_logits(model, data, indices[:batch_size], batch_size=batch_size)  # warm-up
        started = time.perf_counter()
        predict_logits(model, data, indices, batch_size=batch_size)
    return len(indices) / (time.perf_counter() - started)


def main() -> None:
    parser = benchmark_parser(__doc__, config="fashion")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--seconds", type=float, default=30.0, help="training time per measurement")
    parser.add_argument("--compare", choices=sorted(WAYS), default="trim", help="which two ways (see above)")
    parser.add_argument(
        "--out", help="JSON path (default benchmarks/results/throughput_<catalog>_<config>[_optimizer].json)"
    )
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
    a, b = WAYS[args.compare]
    rows = []
    for batch_size in args.batch_sizes:
        row = {"batch_size": batch_size}
        rates: dict[str, list[float]] = {}
        for way in (a, b, b, a):  # ABBA: drift hits both ways alike
            factory = create_optimizer
            if way == "every column":
                model.text_encoder.forward = lambda ids, mask: every_column(model.text_encoder, ids, mask)
            elif "forward" in vars(model.text_encoder):
                del model.text_encoder.forward  # back to the class's own (trimming) forward
            if way == "per tensor":
                factory = per_tensor_adamw
            bf16 = way == "bf16 autocast"
            rate = train_rate(model, data, cfg, batch_size, args.seconds, factory, bf16)
            rates.setdefault(f"train_{way}", []).append(rate)
            if args.compare in ("trim", "amp"):
                rates.setdefault(f"predict_{way}", []).append(predict_rate(model, data, batch_size, bf16))
        row |= {key: float(np.mean(values)) for key, values in rates.items()}
        row["train_ratio"] = row[f"train_{b}"] / row[f"train_{a}"]
        if args.compare in ("trim", "amp"):
            row["predict_ratio"] = row[f"predict_{b}"] / row[f"predict_{a}"]
        rows.append(row)
        print(row, flush=True)
    print(
        f"| batch | train, {a} | train, {b} | ratio |"
        + (f" predict, {a} | predict, {b} | ratio |" * (args.compare in ("trim", "amp")))
    )
    print("|---|---|---|---|" + "---|---|---|" * (args.compare in ("trim", "amp")))
    for r in rows:
        line = f"| {r['batch_size']} | {r[f'train_{a}']:.1f}/s | {r[f'train_{b}']:.1f}/s | {r['train_ratio']:.2f} |"
        if args.compare in ("trim", "amp"):
            line += f" {r[f'predict_{a}']:.0f}/s | {r[f'predict_{b}']:.0f}/s | {r['predict_ratio']:.2f} |"
        print(line)
    meta = {
        "catalog": name,
        "config": cfg.name,
        "overrides": args.set,
        "compare": args.compare,
        "host": platform.node(),
    }
    meta |= {"threads": torch.get_num_threads(), "tokens_median": float(np.median(lengths))}
    meta["cpu_bf16"] = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    suffix = "" if args.compare == "trim" else f"_{args.compare}"
    write_result({"meta": meta, "results": rows}, args.out, f"throughput_{name}_{cfg.name}{suffix}.json")


if __name__ == "__main__":
    main()
