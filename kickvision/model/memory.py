"""What a model keeps for its next catalog-drop update, stored inside its bundle (`continual/`).

- `ExemplarSet`: encoded products (uint8 pixels, token ids, metadata), not file references that
  may be gone: the replay exemplars and the old-test holdout are such sets;
- `ContinualState`: the diagonal Fisher of the model's parameters (the EWC anchor θ* is the model's
  own weights, so it is not stored twice), the replay set, the holdout and how many drops were
  folded in. The algorithms that fill them live in train/ewc.py and train/replay.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from kickvision.data.prepare import PreparedData

EXEMPLAR_COLUMNS = ("product_id", "title", "category", "image", "base_colour")


@dataclass
class ExemplarSet:
    """Encoded products kept inside a model bundle: uint8 pixels, token ids and their metadata."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    input_ids: np.ndarray  # int64 [N, L]
    attention_mask: np.ndarray  # int64 [N, L]
    rows: pd.DataFrame  # product_id, title, category (+ image path and base_colour when known)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_prepared(cls, data: PreparedData, indices: np.ndarray) -> ExemplarSet:
        indices = np.asarray(indices, dtype=np.int64)
        rows = data.rows_with_image_paths(indices)
        columns = [c for c in EXEMPLAR_COLUMNS if c in rows]
        return cls(
            data.images[indices],
            data.input_ids[indices],
            data.attention_mask[indices],
            rows[columns].fillna("").astype(str).reset_index(drop=True),
        )

    def take(self, indices: np.ndarray) -> ExemplarSet:
        indices = np.asarray(indices, dtype=np.int64)
        return ExemplarSet(
            self.images[indices],
            self.input_ids[indices],
            self.attention_mask[indices],
            self.rows.iloc[indices].reset_index(drop=True),
        )

    def concat(self, other: ExemplarSet) -> ExemplarSet:
        return ExemplarSet(
            np.concatenate([self.images, other.images]),
            np.concatenate([self.input_ids, other.input_ids]),
            np.concatenate([self.attention_mask, other.attention_mask]),
            pd.concat([self.rows, other.rows], ignore_index=True).fillna(""),
        )

    def labels(self, classes: list[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[c] for c in self.rows["category"]], dtype=np.int64)

    def as_prepared(self, classes: list[str], split: str = "train") -> PreparedData:
        """A PreparedData view, so the training and prediction loops take stored products as they are."""
        rows = self.rows.assign(label=self.labels(classes), split=split)
        return PreparedData(rows, list(classes), self.images, self.input_ids, self.attention_mask, "", "")

    def save(self, folder: Path, name: str) -> None:
        tensors = {
            "images": torch.from_numpy(np.ascontiguousarray(self.images)),
            "input_ids": torch.from_numpy(np.ascontiguousarray(self.input_ids)),
            "attention_mask": torch.from_numpy(np.ascontiguousarray(self.attention_mask)),
        }
        save_file(tensors, str(folder / f"{name}.safetensors"))
        (folder / f"{name}.json").write_text(json.dumps(self.rows.to_dict(orient="records")))

    @classmethod
    def load(cls, folder: Path, name: str) -> ExemplarSet:
        tensors = load_file(str(folder / f"{name}.safetensors"))
        rows = pd.DataFrame(json.loads((folder / f"{name}.json").read_text()), columns=None)
        if rows.empty:
            rows = pd.DataFrame(columns=["product_id", "title", "category"])
        return cls(tensors["images"].numpy(), tensors["input_ids"].numpy(), tensors["attention_mask"].numpy(), rows)


@dataclass
class ContinualState:
    """What a model needs for its next catalog-drop update (see the module docstring)."""

    fisher: dict[str, torch.Tensor]  # parameter name -> diagonal Fisher, same shape as the parameter
    replay: ExemplarSet
    holdout: ExemplarSet
    updates: int = 0  # how many drops were folded into the Fisher so far
    fisher_samples: int = 0  # products the latest Fisher term was averaged over
    replay_selection: str = "herding"

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.fisher.items()}, str(folder / "fisher.safetensors"))
        self.replay.save(folder, "replay")
        self.holdout.save(folder, "holdout")
        meta = {
            "updates": self.updates,
            "fisher_samples": self.fisher_samples,
            "replay_selection": self.replay_selection,
        }
        (folder / "continual.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: str | Path) -> ContinualState:
        folder = Path(folder)
        meta = json.loads((folder / "continual.json").read_text())
        legacy = meta.get("info", {})  # format-1 bundles kept these in an untyped dict
        return cls(
            load_file(str(folder / "fisher.safetensors")),
            ExemplarSet.load(folder, "replay"),
            ExemplarSet.load(folder, "holdout"),
            meta.get("updates", 0),
            meta.get("fisher_samples", legacy.get("fisher_samples", 0)),
            meta.get("replay_selection", legacy.get("replay_selection", "herding")),
        )
