"""Maps of where each image branch found its evidence: Grad-CAM++ for the CNNs, patch occlusion for ViTs.

A ResNet's last residual block gives [B, C, H, W] activations whose gradients say which places
raised the class score; Grad-CAM++ weighs them into a map (hooked at `layer4[-1]`).

A ViT is explained by occluding its patches instead. Gradient maps of a ViT's tokens (Grad-CAM++,
Grad-CAM or LayerCAM, hooked after the last block, after the first, or on the embedded patches) show
where attention moved the evidence, not where it came from: on synthetic catalogs whose class is
decided by one quadrant of the photo, their mass in that quadrant ranged 0.06-0.83 over training
seeds for every method and layer (uniform: 0.25; docs/measured.md, "ViT maps"). Occlusion asks the question
directly: for each patch, how far does the target class's log-probability fall when the ViT sees
that patch of a blank photo (white, as a missing photo is) in its place? The patch is replaced
after the patch embedding, in the ViT alone (the other branches see the whole photo), so the map
is that branch's own and costs one forward pass of patches + 1 photos, no backward pass. Falls
below zero (the patch spoke against the class) count as zero; the map is resized to the photo and
scaled to 0..1 as Grad-CAM++'s is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.image import scale_cam_image
from torch import nn

from kickvision.model.encoders import ImageEncoder
from kickvision.model.net import MultimodalShoeNet

METHOD_NAMES = {"cnn": "Grad-CAM++", "vit": "patch occlusion"}


def is_vit(encoder: ImageEncoder) -> bool:
    """A timm ViT whose patch embedding reads each patch of a grid alone (patch occlusion needs that)."""
    patch_embed = getattr(encoder.backbone, "patch_embed", None)
    return (
        isinstance(patch_embed, nn.Module) and hasattr(patch_embed, "grid_size") and hasattr(encoder.backbone, "blocks")
    )


def cam_layer(encoder: ImageEncoder) -> nn.Module:
    """The layer Grad-CAM++ hooks in a CNN branch."""
    if hasattr(encoder.backbone, "layer4"):  # ResNet family: the last residual block
        return encoder.backbone.layer4[-1]
    raise NotImplementedError(f"no Grad-CAM++ target layer known for image encoder '{encoder.name}'")


def explain_methods(model: MultimodalShoeNet) -> dict[str, str]:
    """Branch name (`<index>_<encoder>`) -> how its map is made ("Grad-CAM++" or "patch occlusion")."""
    for encoder in model.image_encoders:
        if not is_vit(encoder):
            cam_layer(encoder)  # an encoder nothing can explain fails here, by name
    return {f"{i}_{e.name}": METHOD_NAMES["vit" if is_vit(e) else "cnn"] for i, e in enumerate(model.image_encoders)}


class BranchGradCAMPlusPlus(GradCAMPlusPlus):
    """Grad-CAM++ of several layers from ONE forward and backward pass, one map per layer
    ([B, layers, H, W], each scaled to 0..1 as a single-layer Grad-CAM++ is) instead of their mean."""

    def aggregate_multi_layers(self, cam_per_target_layer: list[np.ndarray]) -> np.ndarray:
        stacked = np.maximum(np.concatenate(cam_per_target_layer, axis=1), 0)
        return np.stack([scale_cam_image(stacked[:, i]) for i in range(stacked.shape[1])], axis=1)


@torch.no_grad()
def patch_occlusion(
    wrapper: nn.Module,
    encoder: ImageEncoder,
    images: torch.Tensor,
    blank: torch.Tensor,
    target: int,
    same_photo: Sequence[nn.Module] = (),
) -> np.ndarray:
    """[1, H, W] in 0..1 for one photo ([1, 3, H, W], normalised): each ViT patch's fall in the target
    class's log-probability when the ViT sees that patch of `blank` (normalised, same shape) instead.

    One batch of patches + 1 copies of the photo; only the ViT's patch tokens differ between them, so
    the `same_photo` modules (the model's other image encoders, called with the photos as their first
    positional argument: their input is the same photo in every row) run on one copy and their output
    is repeated. The model must be in eval mode (in training, dropout would differ row by row)."""
    if images.shape[0] != 1:
        raise ValueError(f"patch occlusion explains one photo at a time, got a batch of {images.shape[0]}")
    patch_embed = encoder.backbone.patch_embed
    rows, cols = patch_embed.grid_size
    patches = rows * cols
    blank_tokens = patch_embed(blank).reshape(patches, -1)  # timm gives [1, N, C] or, as NHWC, [1, rows, cols, C]

    def occlude(_module: nn.Module, _args, tokens: torch.Tensor) -> torch.Tensor:
        flat = tokens.reshape(tokens.shape[0], patches, -1).clone()
        each = torch.arange(patches)
        flat[each + 1, each] = blank_tokens  # row 0 keeps the whole photo; row k+1 loses patch k
        return flat.reshape(tokens.shape)

    rows_seen = []

    def first_row(_module: nn.Module, args: tuple) -> tuple:
        rows_seen.append(args[0].shape[0])
        return (args[0][:1], *args[1:])

    def repeated(_module: nn.Module, _args, out: torch.Tensor) -> torch.Tensor:
        return out.expand(rows_seen.pop(), *out.shape[1:])

    handles = [patch_embed.register_forward_hook(occlude)]
    for other in same_photo:
        handles += [other.register_forward_pre_hook(first_row), other.register_forward_hook(repeated)]
    try:
        log_p = wrapper(images.expand(patches + 1, -1, -1, -1)).float().log_softmax(1)[:, target]
    finally:
        for handle in handles:
            handle.remove()
    falls = (log_p[0] - log_p[1:]).clamp(min=0).reshape(1, rows, cols).cpu().numpy()
    return scale_cam_image(falls, target_size=(images.shape[-1], images.shape[-2]))


def branch_maps(
    model: MultimodalShoeNet, wrapper: nn.Module, images: torch.Tensor, blank: torch.Tensor, target: int, cam_target
) -> dict[str, np.ndarray]:
    """Branch name -> [H, W] map in 0..1 for one photo: the CNN branches' Grad-CAM++ of `cam_target`
    (a pytorch-grad-cam output target) from one forward and backward pass, each ViT's patch occlusion."""
    maps = cnn_maps(model, wrapper, images, cam_target)
    for name, encoder in zip(explain_methods(model), model.image_encoders, strict=True):
        if is_vit(encoder):
            others = [e for e in model.image_encoders if e is not encoder]
            maps[name] = patch_occlusion(wrapper, encoder, images, blank, target, same_photo=others)[0]
    return {name: maps[name] for name in explain_methods(model)}


def cnn_maps(model: MultimodalShoeNet, wrapper: nn.Module, images: torch.Tensor, cam_target) -> dict[str, np.ndarray]:
    """Branch name -> [H, W] Grad-CAM++ map of each CNN branch, all from one forward and backward pass."""
    encoders = dict(zip(explain_methods(model), model.image_encoders, strict=True))
    cnns = {name: cam_layer(e) for name, e in encoders.items() if not is_vit(e)}
    if not cnns:
        return {}
    with BranchGradCAMPlusPlus(model=wrapper, target_layers=list(cnns.values())) as cam:
        return dict(zip(cnns, cam(input_tensor=images, targets=[cam_target])[0], strict=True))


def branch_family(encoder_name: str) -> str:
    """'vit' for transformer image encoders, 'resnet' for the CNNs: the metric-name suffix."""
    return "vit" if any(k in encoder_name for k in ("vit", "deit")) else "resnet"
