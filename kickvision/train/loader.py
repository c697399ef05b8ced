"""Batches for the training engine: cached uint8 pixels and tokens, optionally class-balanced (the
engine augments the photos on the batch's device: `kickvision.train.augment`)."""

from __future__ import annotations

import numpy as np
import torch

from kickvision.data.prepare import PreparedData


class ShoeBatches(torch.utils.data.Dataset):
    """Index-based view of PreparedData for a DataLoader."""

    def __init__(self, data: PreparedData, indices: np.ndarray):
        self.data, self.indices = data, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = self.indices[i]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(self.data.images[j])),
            "input_ids": torch.from_numpy(self.data.input_ids[j]),
            "attention_mask": torch.from_numpy(self.data.attention_mask[j]),
            "label": torch.tensor(int(self.data.rows.at[j, "label"])),
            "index": torch.tensor(int(j)),  # the row, for loss terms that look up per-product targets
        }


def make_loader(
    data: PreparedData, indices: np.ndarray, batch_size: int, seed: int, balanced: bool
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
        ShoeBatches(data, indices),
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(indices) > batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
