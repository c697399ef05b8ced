"""Batches for the training engine: cached uint8 pixels and tokens, flipped on the fly, optionally class-balanced."""

from __future__ import annotations

import numpy as np
import torch

from kickvision.data.prepare import PreparedData


class ShoeBatches(torch.utils.data.Dataset):
    """Index-based view of PreparedData for a DataLoader (pixels augmented on the fly)."""

    def __init__(self, data: PreparedData, indices: np.ndarray, augment: bool = False):
        self.data, self.indices, self.augment = data, indices, augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = self.indices[i]
        image = self.data.images[j]
        if self.augment and np.random.random() < 0.5:
            image = image[:, ::-1]  # shoes face either way
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "input_ids": torch.from_numpy(self.data.input_ids[j]),
            "attention_mask": torch.from_numpy(self.data.attention_mask[j]),
            "label": torch.tensor(int(self.data.rows.at[j, "label"])),
            "index": torch.tensor(int(j)),  # the row, for loss terms that look up per-product targets
        }


def make_loader(
    data: PreparedData, indices: np.ndarray, batch_size: int, seed: int, augment: bool, balanced: bool
) -> torch.utils.data.DataLoader:
    """A shuffled training loader over `indices` (class-balanced sampling with `balanced`)."""
    sampler = None
    if balanced:
        labels = data.labels()[indices]
        weights = 1.0 / np.bincount(labels, minlength=len(data.classes))[labels]
        sampler = torch.utils.data.WeightedRandomSampler(
            weights, len(indices), generator=torch.Generator().manual_seed(seed)
        )
    return torch.utils.data.DataLoader(
        ShoeBatches(data, indices, augment=augment),
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(indices) > batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
