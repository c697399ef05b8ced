"""Training only the top of a pretrained encoder (partial fine-tuning).

An encoder lists its weights bottom to top in `stages()` (a text encoder: embeddings, then each
layer; an image backbone: timm's stem, then each stage or block). With N trainable stages, every
weight below the top N gets no gradient, so autograd does no backward pass below the lowest weight
that learns; 0 freezes the encoder whole. Frozen parts compute as they will serve: a wholly frozen
encoder in eval mode (no dropout), a frozen stage's batch-norm statistics left as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


def frozen_parameters(encoders: Sequence[torch.nn.Module], trainable_stages: int | None) -> list[torch.nn.Parameter]:
    """The weights of `encoders` below their top `trainable_stages` stages; all with 0, none with None."""
    if trainable_stages is None:
        return []
    stages = [e.stages() for e in encoders]
    return [p for s in stages for stage in s[: max(len(s) - trainable_stages, 0)] for p in stage]


@contextmanager
def frozen(params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """No gradient into `params` inside the block; what was trainable before is trainable again after
    it, whatever happens (for whoever uses the model next: the Fisher)."""
    params = [p for p in params if p.requires_grad]
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def hold_frozen_modes(encoders: Sequence[torch.nn.Module], trainable_stages: int | None) -> None:
    """After `model.train()`: a wholly frozen encoder back to eval mode, and every batch norm whose
    weights are frozen too (its running statistics would otherwise still move)."""
    if trainable_stages is None:
        return
    for encoder in encoders:
        for module in encoder.modules():
            norm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
            if (trainable_stages == 0 or norm) and not any(p.requires_grad for p in module.parameters()):
                module.eval()


def hold_norm_statistics(model: torch.nn.Module) -> None:
    """After `model.train()`: every batch norm in eval mode, so it normalises with the running
    statistics it has and leaves them as they are (its scale and shift still train)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
