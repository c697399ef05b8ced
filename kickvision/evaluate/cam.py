"""Grad-CAM++ adapters for the image encoders: which layer to hook, and how to read its output as a map.

They live with the explainer, not in the network (as pytorch-grad-cam keeps its reshape transforms
in `utils/reshape_transforms.py`): a ResNet's last residual block already gives [B, C, H, W]; a
ViT's last block gives tokens, so its adapter drops the prefix (class/register) tokens and lays the
patch tokens out on the patch grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kickvision.model.encoders import ImageEncoder
from kickvision.model.net import MultimodalShoeNet

ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


def vit_reshape_transform(grid: tuple[int, int], prefix_tokens: int) -> ReshapeTransform:
    """[B, prefix + rows·cols, C] tokens -> [B, C, rows, cols] maps."""
    rows, cols = grid

    def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix_tokens:, :]
        return patches.reshape(patches.shape[0], rows, cols, patches.shape[2]).permute(0, 3, 1, 2)

    return tokens_to_map


def cam_target(encoder: ImageEncoder) -> tuple[nn.Module, ReshapeTransform | None]:
    """(the layer Grad-CAM++ hooks, a transform of its output to [B, C, H, W] or None)."""
    backbone = encoder.backbone
    if hasattr(backbone, "layer4"):  # ResNet family: the last residual block
        return backbone.layer4[-1], None
    if hasattr(backbone, "blocks") and hasattr(backbone, "patch_embed"):  # ViT: last block's input norm
        transform = vit_reshape_transform(tuple(backbone.patch_embed.grid_size), backbone.num_prefix_tokens)
        return backbone.blocks[-1].norm1, transform
    raise NotImplementedError(f"no Grad-CAM++ target layer known for image encoder '{encoder.name}'")


def cam_targets(model: MultimodalShoeNet) -> dict[str, tuple[nn.Module, ReshapeTransform | None]]:
    """Branch name (`<index>_<encoder>`) -> (target layer, reshape transform or None)."""
    return {f"{i}_{encoder.name}": cam_target(encoder) for i, encoder in enumerate(model.image_encoders)}


def branch_family(encoder_name: str) -> str:
    """'vit' for transformer image encoders, 'resnet' for the CNNs: the metric-name suffix."""
    return "vit" if any(k in encoder_name for k in ("vit", "deit")) else "resnet"
