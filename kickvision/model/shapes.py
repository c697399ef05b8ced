"""The shape map of a pruned model: portable (JSON), so a pruned model rebuilds without pickle.

Structured pruning shrinks modules in place (fewer channels, heads, hidden units). `changed_shapes`
records, per module path, the shape attributes that differ from a freshly built model of the same
config; `apply_pruned_shapes` sets them on a fresh model and resizes its tensors so the pruned
weights load strictly. Torch-Pruning's own serialisation pickles whole modules; this does not.
"""

from __future__ import annotations

import torch
from torch import nn

# Module attributes that describe a tensor shape (or a count derived from one).
SHAPE_ATTRIBUTES = (
    "in_features",
    "out_features",
    "in_channels",
    "out_channels",
    "num_features",
    "normalized_shape",
    "num_embeddings",
    "embedding_dim",
    "num_heads",
    "n_heads",
    "head_dim",
    "attn_dim",
    "attention_head_size",
    "dim",
    "out_dim",
    "embed_dim",
)


def _shape_attributes(module: nn.Module) -> dict:
    found = {}
    for name in SHAPE_ATTRIBUTES:
        value = getattr(module, name, None)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) or (isinstance(value, tuple) and all(isinstance(v, int) for v in value)):
            found[name] = value
    return found


def changed_shapes(pruned: nn.Module, reference: nn.Module) -> dict[str, dict]:
    """module path -> {attribute: new value} for every shape attribute pruning changed (JSON-able)."""
    reference_modules = dict(reference.named_modules())
    plan = {}
    for name, module in pruned.named_modules():
        before = _shape_attributes(reference_modules[name]) if name in reference_modules else {}
        after = _shape_attributes(module)
        diff = {k: list(v) if isinstance(v, tuple) else v for k, v in after.items() if before.get(k) != v}
        if diff:
            plan[name] = diff
    return plan


def apply_pruned_shapes(model: nn.Module, plan: dict[str, dict], state: dict[str, torch.Tensor]) -> None:
    """Reshape a freshly built model so `state` (a pruned model's weights) loads into it strictly."""
    modules = dict(model.named_modules())
    for name, attributes in plan.items():
        for attribute, value in attributes.items():
            setattr(modules[name], attribute, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        module = modules[owner]
        if leaf in module._parameters and module._parameters[leaf] is not None:
            if module._parameters[leaf].shape != tensor.shape:
                module._parameters[leaf] = nn.Parameter(torch.empty(tensor.shape, dtype=tensor.dtype))
        elif leaf in module._buffers and module._buffers[leaf] is not None:
            if module._buffers[leaf].shape != tensor.shape:
                module._buffers[leaf] = torch.empty(tensor.shape, dtype=tensor.dtype)
