"""What a model costs to keep and run: parameters, MACs, weights-file bytes, CPU latency."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def example_inputs(model, batch: int = 1, tokens: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    height, width = model.cfg.image_hw
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, 3, height, width, generator=generator),
        torch.randint(1000, 2000, (batch, tokens), generator=generator),
        torch.ones(batch, tokens, dtype=torch.long),
    )


def weights_file_bytes(model: nn.Module) -> int:
    """Size of the model's weights as the bundle stores them (model.safetensors)."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
        return path.stat().st_size


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, batch: int, tokens: int = 16, repeats: int = 15) -> float:
    """Median CPU forward time of `model` at `batch` (after warm-up)."""
    model = model.eval().cpu()
    inputs = example_inputs(model, batch, tokens)
    for _ in range(3):
        model(*inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model(*inputs)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def model_costs(model: nn.Module, tokens: int = 16, latency: bool = True) -> dict[str, float]:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model.eval(), example_inputs(model, 1, tokens))
    costs = {"params": float(params), "macs": float(macs), "file_bytes": float(weights_file_bytes(model))}
    if latency:
        costs["latency_b1_ms"] = cpu_latency_ms(model, 1, tokens)
        costs["latency_b32_ms"] = cpu_latency_ms(model, 32, tokens)
    return costs
