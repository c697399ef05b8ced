"""Photo augmentation for training: what a product photo may go through and still show the same shoe.

Applied to a whole batch on its device (GPU-friendly: the data never leaves it), on float pixels in
[0, 1] before normalisation:

- a horizontal flip with probability `hflip` (shoes face either way);
- a random crop keeping a share of the area drawn uniformly from [`crop_scale`, 1] (the aspect ratio
  kept), scaled back to the input size, plus a shift of up to `shift` of each side; both as one
  affine resampling (`affine_grid` + bilinear `grid_sample`), with the border pixels (the white
  background of catalog photos) filling what moves in;
- colour jitter: brightness, contrast and saturation each scaled by a factor drawn from
  [1 - `color_jitter`, 1 + `color_jitter`] (a photo studio's variation, not a different colour).

`kickvision.train.settings.photo_augment` reads the train section's knobs; with everything but the
flip off the batch is only flipped, exactly.

`PhotoMix` mixes a batch's photos with each other after augmentation, by timm's `Mixup` (one draw
per batch, the batch mixed with itself reversed): mixup (Zhang et al. 2018) blends two photos with a
weight λ ~ Beta(α, α), CutMix (Yun et al. 2019) pastes a box of one into the other (λ = the share of
area kept); the targets become the same blend of the two one-hot labels (label smoothing folded in),
which the loss terms read from `batch["target"]`. Only for what the photo alone decides: a title
cannot be mixed with its photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.data.mixup import Mixup, mixup_target

_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class PhotoAugment:
    hflip: float = 0.5
    crop_scale: float = 1.0  # smallest share of the photo's area a crop keeps (1 = no crop)
    shift: float = 0.0  # largest translation, as a share of each side
    color_jitter: float = 0.0  # largest relative change of brightness, contrast and saturation

    @property
    def moves_pixels(self) -> bool:
        return self.crop_scale < 1.0 or self.shift > 0.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """float [N, 3, H, W] in [0, 1] -> the same, augmented per photo (torch's global generator)."""
        n, device = images.shape[0], images.device
        flip = torch.rand(n, device=device) < self.hflip
        if self.moves_pixels:
            images = self._affine(images, flip)
        else:
            images = torch.where(flip.view(n, 1, 1, 1), images.flip(-1), images)
        if self.color_jitter > 0:
            images = self._colour(images)
        return images

    def _affine(self, images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        n, device = images.shape[0], images.device
        # output -> input coordinates in [-1, 1]: a crop of side `scale` somewhere inside the photo, moved
        scale = torch.empty(n, device=device).uniform_(self.crop_scale, 1.0).sqrt()
        room = (1.0 - scale) + 2.0 * self.shift  # how far the crop's centre may move, per axis
        centre = (torch.rand(n, 2, device=device) * 2 - 1) * room.unsqueeze(1)
        theta = torch.zeros(n, 2, 3, device=device)
        theta[:, 0, 0] = torch.where(flip, -scale, scale)
        theta[:, 1, 1] = scale
        theta[:, :, 2] = centre
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _colour(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.shape[0], images.device
        factors = 1.0 + (torch.rand(3, n, 1, 1, 1, device=device) * 2 - 1) * self.color_jitter
        brightness, contrast, saturation = factors
        luma = torch.tensor(_LUMA, device=device).view(1, 3, 1, 1)
        images = images * brightness
        grey = (images * luma).sum(1, keepdim=True)
        images = (images - grey.mean((2, 3), keepdim=True)) * contrast + grey.mean((2, 3), keepdim=True)
        grey = (images * luma).sum(1, keepdim=True)
        images = grey + (images - grey) * saturation
        return images.clamp_(0.0, 1.0)


@dataclass(frozen=True)
class PhotoMix:
    mixup_alpha: float = 0.0  # Beta(α, α) of mixup's blend weight; 0 = no mixup
    cutmix_alpha: float = 0.0  # Beta(α, α) of CutMix's kept area; 0 = no CutMix (both > 0: either, even odds)
    label_smoothing: float = 0.0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """float [N, 3, H, W] in [0, 1] and int labels [N] -> mixed photos and soft targets [N, n_classes].

        timm pairs photo i with photo N - 1 - i, so in a batch of odd size the last photo stays as it is."""
        even = len(images) - len(images) % 2
        if even < len(images):
            alone = mixup_target(labels[even:], n_classes, 1.0, self.label_smoothing)
            if not even:
                return images, alone
            mixed, target = self(images[:even], labels[:even], n_classes)
            return torch.cat([mixed, images[even:]]), torch.cat([target, alone])
        mix = Mixup(
            mixup_alpha=self.mixup_alpha,
            cutmix_alpha=self.cutmix_alpha,
            mode="batch",
            label_smoothing=self.label_smoothing,
            num_classes=n_classes,
        )
        return mix(images.clone(), labels)
