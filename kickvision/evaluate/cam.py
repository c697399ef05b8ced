"""Grad-CAM++ adapters for the image encoders: which layer to hook, and how to read its output as a map.

They live with the explainer, not in the network (as pytorch-grad-cam keeps its reshape transforms
in `utils/reshape_transforms.py`): a ResNet's last residual block already gives [B, C, H, W]; a
ViT's layers give tokens, so its adapter drops the prefix (class/register) tokens and lays the
patch tokens out on the patch grid.

Which ViT layer depends on how the ViT pools. With class-token pooling the patch tokens reach the
output only through the last block's attention, so the hook sits on that block's input norm (the
output of the last block would carry no gradient to the patches). With average pooling the patch
tokens after the last block are exactly what is pooled, like a CNN's last feature map, so the hook
sits there; on a synthetic catalog whose class is decided by one quadrant of the photo, that moved
the maps' mass in the deciding quadrant from 0.50 to 0.68 (chance 0.25; tests/test_explain.py).
That holds for one training seed, not in general (0.11-0.74 over seeds; README, "ViT maps"):
attention moves evidence between tokens, so the maps show where it ended up, not where it came from.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.image import scale_cam_image
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

    tokens_to_map.tokens = prefix_tokens + rows * cols  # what it expects (see any_branch_reshape)
    return tokens_to_map


def any_branch_reshape(transforms: list[ReshapeTransform | None]) -> ReshapeTransform:
    """One transform for several hooked layers at once (pytorch-grad-cam applies a single one to
    every layer): maps pass through, token sequences go to the ViT transform of their length."""
    by_tokens = {t.tokens: t for t in transforms if t is not None}

    def reshape(output: torch.Tensor) -> torch.Tensor:
        return output if output.ndim == 4 else by_tokens[output.shape[1]](output)

    return reshape


class BranchGradCAMPlusPlus(GradCAMPlusPlus):
    """Grad-CAM++ of several layers from ONE forward and backward pass, one map per layer
    ([B, layers, H, W], each scaled to 0..1 as a single-layer Grad-CAM++ is) instead of their mean."""

    def aggregate_multi_layers(self, cam_per_target_layer: list[np.ndarray]) -> np.ndarray:
        stacked = np.maximum(np.concatenate(cam_per_target_layer, axis=1), 0)
        return np.stack([scale_cam_image(stacked[:, i]) for i in range(stacked.shape[1])], axis=1)


def cam_target(encoder: ImageEncoder) -> tuple[nn.Module, ReshapeTransform | None]:
    """(the layer Grad-CAM++ hooks, a transform of its output to [B, C, H, W] or None)."""
    backbone = encoder.backbone
    if hasattr(backbone, "layer4"):  # ResNet family: the last residual block
        return backbone.layer4[-1], None
    if hasattr(backbone, "blocks") and hasattr(backbone, "patch_embed"):  # ViT: see the module docstring
        transform = vit_reshape_transform(tuple(backbone.patch_embed.grid_size), backbone.num_prefix_tokens)
        pooled_tokens = getattr(backbone, "global_pool", "token") in ("avg", "avgmax", "max")
        return (backbone.blocks[-1] if pooled_tokens else backbone.blocks[-1].norm1), transform
    raise NotImplementedError(f"no Grad-CAM++ target layer known for image encoder '{encoder.name}'")


def cam_targets(model: MultimodalShoeNet) -> dict[str, tuple[nn.Module, ReshapeTransform | None]]:
    """Branch name (`<index>_<encoder>`) -> (target layer, reshape transform or None)."""
    return {f"{i}_{encoder.name}": cam_target(encoder) for i, encoder in enumerate(model.image_encoders)}


def branch_family(encoder_name: str) -> str:
    """'vit' for transformer image encoders, 'resnet' for the CNNs: the metric-name suffix."""
    return "vit" if any(k in encoder_name for k in ("vit", "deit")) else "resnet"
