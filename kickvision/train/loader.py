"""Batches for the training engine: cached uint8 pixels and tokens, optionally class-balanced (the
engine augments the photos on the batch's device: `kickvision.train.augment`).

Two sources of the same batches: `make_loader`, a DataLoader that gathers each product in Python and
collates on the host (the engine copies each batch to its device), and `DeviceBatches`, which puts
the split's tensors on the training device once and cuts every batch there by index, so a GPU never
waits on the host (`train.data_on_device`). Both draw each epoch's order from the same kind of
sampler: a seeded shuffle, or draws with replacement weighted towards rare classes (class-balanced at
`balanced_sampling` 1, square-root at 0.5).
"""

from __future__ import annotations

from collections.abc import Iterator

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


def balanced_sampler(
    data: PreparedData, indices: np.ndarray, seed: int, power: float = 1.0
) -> torch.utils.data.Sampler:
    """Draws with replacement, each product with weight 1 / (its class's count)^`power`, so a class of n products
    is drawn in proportion to n^(1 - power): at 1 each class equally likely, at 0.5 square-root sampling; as many
    draws per epoch as `indices`."""
    labels = data.labels()[indices]
    weights = 1.0 / np.bincount(labels, minlength=len(data.classes))[labels] ** float(power)
    return torch.utils.data.WeightedRandomSampler(weights, len(indices), generator=torch.Generator().manual_seed(seed))


def make_loader(
    data: PreparedData, indices: np.ndarray, batch_size: int, seed: int, balanced: float
) -> torch.utils.data.DataLoader:
    """A shuffled training loader over `indices` (with `balanced` > 0, `balanced_sampler` at that power)."""
    sampler = balanced_sampler(data, indices, seed, balanced) if balanced else None
    return torch.utils.data.DataLoader(
        ShoeBatches(data, indices),
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(indices) > batch_size,
        generator=torch.Generator().manual_seed(seed),
    )


class DeviceBatches:
    """`make_loader`'s batches, in its order, cut from tensors that live on `device` (pixels, tokens, labels, rows of
    `indices`, copied there once). Per epoch the sampler's order goes to the device as one index
    tensor and each batch is a gather from it: no per-product Python, no host-to-device copy per step.
    Costs the split's pixels in the device's memory (uint8: H x W x 3 bytes a product)."""

    def __init__(
        self,
        data: PreparedData,
        indices: np.ndarray,
        batch_size: int,
        seed: int,
        balanced: float,
        device: torch.device | str,
    ):
        rows = np.asarray(indices, dtype=np.int64)
        self.tensors = {
            "image": torch.from_numpy(data.images[rows]).to(device),
            "input_ids": torch.from_numpy(data.input_ids[rows]).to(device),
            "attention_mask": torch.from_numpy(data.attention_mask[rows]).to(device),
            "label": torch.from_numpy(data.labels()[rows].astype(np.int64)).to(device),
            "index": torch.from_numpy(rows).to(device),
        }
        self.batch_size, self.drop_last = batch_size, len(rows) > batch_size
        # make_loader's DataLoader draws its workers' base seed from its generator as each epoch starts;
        # unbalanced, its shuffle draws from that generator too, so the same draw keeps the same order
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = (
            balanced_sampler(data, rows, seed, balanced)
            if balanced
            else torch.utils.data.RandomSampler(range(len(rows)), generator=self.generator)
        )

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # the DataLoader's base seed
        order = torch.tensor(list(self.sampler), dtype=torch.int64).to(self.tensors["label"].device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            positions = order[start : start + self.batch_size]
            yield {key: tensor.index_select(0, positions) for key, tensor in self.tensors.items()}
