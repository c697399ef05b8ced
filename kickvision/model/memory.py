"""What a model keeps for its next catalog-drop update, stored inside its bundle (`continual/`).

- `ExemplarSet`: encoded products (uint8 pixels, token ids, metadata), not file references that
  may be gone: the replay exemplars and the old-test holdout are such sets. A set may be kept as
  JPEG (`compressed`): several times as many exemplars fit the same bytes, and the pixels it holds
  in memory are the decoded JPEG, so training sees exactly what is stored;
- `ContinualState`: the diagonal Fisher of the model's parameters (the EWC anchor θ* is the model's
  own weights, so it is not stored twice), the replay set, the holdout, the validation memory (old
  validation products an update chooses its epoch on) and how many drops were folded in. The
  algorithms that fill them live in train/ewc.py and train/replay.py.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors import safe_open
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
    jpeg_quality: int | None = None  # rows without stored bytes are kept as JPEG of this quality (None: raw)
    jpeg: list[bytes | None] | None = None  # per row: the JPEG its pixels were decoded from, if any

    def __len__(self) -> int:
        return len(self.rows)

    def _chunks(self) -> list[bytes | None]:
        return list(self.jpeg) if self.jpeg is not None else [None] * len(self)

    def compressed(self, quality: int) -> ExemplarSet:
        """The same products with their photos kept as JPEG at `quality`: rows already kept as JPEG
        keep their bytes (re-encoding would lose more each time), the others are encoded and their
        pixels replaced by the decoded JPEG, so what trains is what is stored."""
        chunks, images = self._chunks(), self.images.copy()
        for i, chunk in enumerate(chunks):
            if chunk is None:
                chunks[i] = encode_jpeg_one(images[i], quality)
                images[i] = decode_jpeg_one(chunks[i], images.shape[1:])
        return ExemplarSet(images, self.input_ids, self.attention_mask, self.rows, quality, chunks)

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
            self.jpeg_quality,
            [self.jpeg[i] for i in indices] if self.jpeg is not None else None,
        )

    def concat(self, other: ExemplarSet) -> ExemplarSet:
        jpeg = self._chunks() + other._chunks() if self.jpeg is not None or other.jpeg is not None else None
        return ExemplarSet(
            np.concatenate([self.images, other.images]),
            np.concatenate([self.input_ids, other.input_ids]),
            np.concatenate([self.attention_mask, other.attention_mask]),
            pd.concat([self.rows, other.rows], ignore_index=True).fillna(""),
            self.jpeg_quality or other.jpeg_quality,
            jpeg,
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
            "input_ids": torch.from_numpy(np.ascontiguousarray(self.input_ids)),
            "attention_mask": torch.from_numpy(np.ascontiguousarray(self.attention_mask)),
        }
        metadata = None
        if self.jpeg_quality is not None:
            blob, offsets = pack(self.compressed(self.jpeg_quality).jpeg)
            tensors |= {"images_jpeg": torch.from_numpy(blob), "images_jpeg_offsets": torch.from_numpy(offsets)}
            metadata = {"image_shape": json.dumps(list(self.images.shape[1:])), "jpeg_quality": str(self.jpeg_quality)}
        else:
            tensors["images"] = torch.from_numpy(np.ascontiguousarray(self.images))
        save_file(tensors, str(folder / f"{name}.safetensors"), metadata=metadata)
        (folder / f"{name}.json").write_text(json.dumps(self.rows.to_dict(orient="records")))

    @classmethod
    def load(cls, folder: Path, name: str) -> ExemplarSet:
        path = folder / f"{name}.safetensors"
        tensors = load_file(str(path))
        rows = pd.DataFrame(json.loads((folder / f"{name}.json").read_text()), columns=None)
        if rows.empty:
            rows = pd.DataFrame(columns=["product_id", "title", "category"])
        quality, chunks = None, None
        if "images_jpeg" in tensors:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            shape = tuple(int(v) for v in json.loads(metadata.get("image_shape", "[]")))
            quality = int(metadata.get("jpeg_quality", "0"))
            if len(shape) != 3 or shape[2] != 3 or not 10 <= quality <= 100:
                raise ValueError(f"{path}: stored exemplars without a valid image shape and JPEG quality")
            chunks = unpack(tensors["images_jpeg"].numpy(), tensors["images_jpeg_offsets"].numpy(), len(rows))
            images = (
                np.stack([decode_jpeg_one(c, shape) for c in chunks]) if chunks else np.zeros((0, *shape), np.uint8)
            )
        else:
            images = tensors["images"].numpy()
        input_ids, attention_mask = tensors["input_ids"].numpy(), tensors["attention_mask"].numpy()
        lengths = {len(rows), len(images), len(input_ids), len(attention_mask)}
        if len(lengths) != 1 or images.dtype != np.uint8 or images.ndim != 4 or input_ids.shape != attention_mask.shape:
            raise ValueError(f"{path}: stored exemplars whose rows, photos and tokens do not match")
        return cls(images, input_ids, attention_mask, rows, quality, chunks)

    def stored_bytes(self) -> int:
        """Bytes its photos take in the bundle (JPEG or raw pixels)."""
        if self.jpeg_quality is None:
            return int(self.images.nbytes)
        return sum(len(c) for c in self.compressed(self.jpeg_quality).jpeg)


def encode_jpeg_one(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg_one(chunk: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """A stored exemplar's pixels; it must be a JPEG of exactly `shape` (H, W, 3), checked from its
    header before any pixel is decoded, or it is refused (ValueError)."""
    try:
        with Image.open(io.BytesIO(chunk)) as image:
            if image.format != "JPEG" or (image.height, image.width) != tuple(shape[:2]):
                raise ValueError(f"a stored exemplar is not a {shape[1]}x{shape[0]} JPEG")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"a stored exemplar cannot be decoded: {exc}") from None


def pack(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row JPEG bytes -> (one uint8 array, N + 1 offsets into it)."""
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    blob = np.frombuffer(b"".join(chunks), dtype=np.uint8).copy()
    return blob, offsets


def unpack(blob: np.ndarray, offsets: np.ndarray, rows: int) -> list[bytes]:
    """The inverse of `pack`, refusing offsets that do not cut `blob` into exactly `rows` pieces."""
    ok = len(offsets) == rows + 1 and offsets[0] == 0 and offsets[-1] == len(blob)
    if not ok or np.any(np.diff(offsets) < 0):
        raise ValueError("stored exemplar offsets do not match their bytes and rows")
    return [blob[offsets[i] : offsets[i + 1]].tobytes() for i in range(rows)]


@dataclass
class ContinualState:
    """What a model needs for its next catalog-drop update (see the module docstring)."""

    fisher: dict[str, torch.Tensor]  # parameter name -> diagonal Fisher, same shape as the parameter
    replay: ExemplarSet
    holdout: ExemplarSet
    updates: int = 0  # how many drops were folded into the Fisher so far
    fisher_samples: int = 0  # products the latest Fisher term was averaged over
    replay_selection: str = "herding"
    validation: ExemplarSet | None = None  # old validation products: what an update chooses its epoch on

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.fisher.items()}, str(folder / "fisher.safetensors"))
        self.replay.save(folder, "replay")
        self.holdout.save(folder, "holdout")
        if self.validation is not None:
            self.validation.save(folder, "validation")
        else:  # re-saved into a folder that held a memory: it must not come back on load
            for stale in (folder / "validation.safetensors", folder / "validation.json"):
                stale.unlink(missing_ok=True)
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
            # bundles before format 4 kept no validation memory
            ExemplarSet.load(folder, "validation") if (folder / "validation.safetensors").is_file() else None,
        )
