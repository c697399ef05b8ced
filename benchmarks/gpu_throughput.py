"""Training throughput of a config's model on one GPU, through the training engine itself.

Each way trains a fresh model with `train_loop` (photo augmentation, bf16 autocast, channels-last
weights and photos, the fused AdamW, the loss and its per-step read-back: what `kickvision train`
runs) for a few epochs over the catalog's training split (repeated `--repeat` times per epoch, so an
epoch lasts long enough to time), validation left out. Reported per way and batch size: training
samples per second over the epochs after the first (the first warms up, and compiles), the first
epoch's seconds, and the peak GPU memory. The ways, side by side in one process:

- `host loader`: batches gathered per product on the host and copied per step (`train.data_on_device: false`);
- `data on device`: batches cut from the split's tensors on the GPU (`train.data_on_device: true`);
- `data on device in fp32`: without bf16 autocast (`train.amp: false`), for reference;
- `data on device + compile`: and the training forward through torch.compile (`train.compile: true`).

    python benchmarks/gpu_throughput.py --catalog ../shared/data/fashion-footwear --config gpu --batch-sizes 256 512
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import replace

import numpy as np
import torch
from common import add_validated_option, benchmark_parser, prepared_catalog, write_result

from kickvision.config import dotted_overrides, load_config
from kickvision.model.net import build_model, count_parameters
from kickvision.train.engine import pick_device, seed_everything, train_loop
from kickvision.train.losses import ClassificationLoss
from kickvision.train.settings import fit_settings

WAYS = {
    "host loader": {"data_on_device": False},
    "data on device": {"data_on_device": True},
    "data on device in fp32": {"data_on_device": True, "amp": False},
    "data on device + compile": {"data_on_device": True, "compile": True},
}


def measure(data, cfg, way: str, batch_size: int, epochs: int, repeat: int) -> dict:
    settings = replace(
        fit_settings(cfg.train), epochs=epochs, batch_size=batch_size, monitor=None, patience=None, **WAYS[way]
    )
    seed_everything(cfg.seed)
    model = build_model(cfg.model, len(data.classes))
    rows = np.tile(data.indices("train"), repeat)
    loss = [ClassificationLoss.from_config(cfg.train, cfg.model)]
    device = pick_device(settings.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = train_loop(model, data, rows, settings, loss, lambda m: {}, seed=cfg.seed, progress=False)
    later = [h["train_samples_per_s"] for h in result.history[1:]]
    return {
        "way": way,
        "batch_size": batch_size,
        "samples_per_s": float(np.mean(later)) if later else float("nan"),
        "samples_per_s_each_epoch": [h["train_samples_per_s"] for h in result.history],
        "first_epoch_s": result.history[0]["epoch_seconds"],
        "wall_s": time.perf_counter() - started,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan"),
        "samples_per_epoch": len(rows),
    }


def main() -> None:
    parser = benchmark_parser(__doc__, config="gpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated subset of the ways")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per way (the first is not counted)")
    parser.add_argument("--repeat", type=int, default=2, help="the training split this many times per epoch")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/gpu_throughput_<catalog>_<config>.json)")
    add_validated_option(parser)
    args = parser.parse_args()
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)  # graph breaks at the title trim: expected
    cfg = load_config(args.config, overrides=dotted_overrides(args.set))
    data, _, name = prepared_catalog(args.catalog, cfg, args.validated)
    model = build_model(cfg.model, len(data.classes))
    device = pick_device(cfg.train.device)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none"
    meta = {
        "catalog": name,
        "config": cfg.name,
        "overrides": args.set,
        "image_hw": list(cfg.model.image_hw),
        "encoders": [e.name for e in cfg.model.image_encoders] + [t.name for t in [cfg.model.text_encoder] if t],
        "parameters": count_parameters(model),
        "gpu": gpu,
        "torch": torch.__version__,
        "host": platform.node(),
    }
    print(meta, flush=True)
    rows = []
    for way in args.ways.split(","):  # way by way: a slow compile last costs only its own rows
        for batch_size in args.batch_sizes:
            rows.append(measure(data, cfg, way, batch_size, args.epochs, args.repeat))
            print(rows[-1], flush=True)
            write_result({"meta": meta, "results": rows}, args.out, f"gpu_throughput_{name}_{cfg.name}.json")
    print(f"\n{name}, config {cfg.name} ({'x'.join(map(str, cfg.model.image_hw))} px), {gpu}")
    print("| way | batch | samples/s | vs host loader | first epoch s | peak GPU GB |\n|---|---|---|---|---|---|")
    for r in rows:
        host = [x for x in rows if x["batch_size"] == r["batch_size"] and x["way"] == "host loader"]
        ratio = f"{r['samples_per_s'] / host[0]['samples_per_s']:.2f}" if host else "–"
        print(
            f"| {r['way']} | {r['batch_size']} | {r['samples_per_s']:.0f} | {ratio} | "
            f"{r['first_epoch_s']:.1f} | {r['peak_gpu_gb']:.1f} |"
        )


if __name__ == "__main__":
    main()
