"""Predictions on raw products (photo + title), shared by the CLI, the promotion gate and the pyfunc."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from kickvision.data.images import DEFAULT_MAX_PIXELS, open_image_bounded
from kickvision.data.text import product_texts, tokenize_titles
from kickvision.evaluate.audit import ModelViews
from kickvision.model.bundle import ModelBundle
from kickvision.serve.batching import ForwardBatcher

# Where an `image` cell may name a file: anywhere ("any": the CLI on the user's own files), only
# under a folder (a server given KICKVISION_IMAGE_ROOT), or nowhere (None: a server takes bytes only).
ImagePaths = Path | str | None
Photo = Image.Image | np.ndarray  # decoded, or already letterboxed to the model's input (uint8 HxWx3)


def decode_image_field(value, max_pixels: int = DEFAULT_MAX_PIXELS, paths: ImagePaths = "any") -> Image.Image | None:
    """An `image` cell: base64 image bytes (optionally a data: URL), a file path where `paths`
    allows it, or empty. A path outside what `paths` allows is refused before the file system is
    opened (a server must not tell which files exist); a ValueError or OSError means a bad cell."""
    if value is None or (not isinstance(value, str | bytes) and bool(pd.isna(value))) or value == "":
        return None
    if isinstance(value, bytes):
        return open_image_bounded(io.BytesIO(value), max_pixels)
    text = str(value)
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if paths == "any" and len(text) < 4096 and os.path.isfile(text):  # the CLI, on the user's own files
        return open_image_bounded(Path(text), max_pixels)
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError:
        data = None
    if data is not None:
        try:
            return open_image_bounded(io.BytesIO(data), max_pixels)
        except OSError:  # not image bytes after all: maybe a path that happens to be valid base64
            pass
    if paths is None:
        raise ValueError(f"image must be base64 image bytes (this server takes no file paths): {text[:80]!r}")
    if paths == "any":
        raise ValueError(f"image is neither an existing file nor base64 image data: {text[:80]!r}")
    root = Path(os.path.realpath(paths))
    outside = ValueError(f"image path is not under the server's image root: {text[:80]!r}")
    if len(text) >= 4096 or not os.path.isabs(text) or not Path(os.path.normpath(text)).is_relative_to(root):
        raise outside  # decided on the text alone: nothing outside the root is looked up
    try:
        resolved = Path(os.path.realpath(text, strict=True))  # symlinks followed; then the real file is opened
    except (OSError, RuntimeError):
        raise ValueError(f"image file not found under the image root: {text[:80]!r}") from None
    if not resolved.is_relative_to(root):  # a link under the root that points outside it
        raise outside
    if not resolved.is_file():
        raise ValueError(f"image file not found under the image root: {text[:80]!r}")
    return open_image_bounded(resolved, max_pixels)


class ShoePredictor:
    """Classify products given as (image, title) pairs; either may be missing."""

    def __init__(
        self,
        bundle: ModelBundle,
        batch_size: int = 64,
        image_paths: ImagePaths = "any",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.bundle = bundle
        self.batch_size = batch_size
        self.image_paths = image_paths  # where `image` cells may name files (see decode_image_field)
        self.transform = bundle.image_transform(max_pixels)
        self.temperature = bundle.spec.temperature  # fitted on validation, see evaluate/calibration.py
        bundle.model.eval()
        self.forward_batched = ForwardBatcher(self.forward)  # concurrent callers (a server) share passes

    @torch.inference_mode()
    def probabilities(self, images: list[Photo | None], titles: list[str | None]) -> np.ndarray:
        """Class probabilities [N, C] for raw products."""
        return self.forward(images, titles)[0]

    @torch.inference_mode()
    def forward(self, images: list[Photo | None], titles: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities [N, C], unit-norm embeddings [N, D]) for raw products (decoded
        photos, or photos already letterboxed by `read_frame`)."""
        out, embeddings = [], []
        for start in range(0, len(titles), self.batch_size):
            batch_images = images[start : start + self.batch_size]
            batch_titles = titles[start : start + self.batch_size]
            pixels, image_present = self.transform.pixels(batch_images)
            text_present = np.array([0.0 if not t else 1.0 for t in batch_titles], np.float32)
            ids, mask = tokenize_titles(self.bundle.tokenizer, batch_titles, self.bundle.max_title_tokens)
            result = self.bundle.model(
                self.transform.normalise(pixels),
                torch.from_numpy(ids),
                torch.from_numpy(mask),
                image_present=torch.from_numpy(image_present),
                text_present=torch.from_numpy(text_present),
            )
            out.append((result.logits.float() / self.temperature).softmax(1).numpy())
            embeddings.append(result.embedding.float().numpy())
        if not out:
            return np.zeros((0, len(self.bundle.classes)), np.float32), np.zeros((0, 1), np.float32)
        return np.concatenate(out), np.concatenate(embeddings)

    def model_views(self, frame: pd.DataFrame) -> ModelViews:
        """The audit's evidence for a frame's products (see `model_views_of`)."""
        return self.model_views_of(*self.read_frame(frame))

    def model_views_of(self, images: list[Photo | None], texts: list[str | None]) -> ModelViews:
        """Probabilities fused, with the title hidden and with the photo hidden (None where the model
        lacks that branch), and the embeddings, of products given as photos and texts."""
        model = self.bundle.model
        fused, embeddings = self.forward(images, texts)
        photo = self.forward(images, [None] * len(texts))[0] if model.image_encoders else None
        title = self.forward([None] * len(images), texts)[0] if model.text_encoder is not None else None
        return ModelViews(list(self.bundle.classes), fused, photo, title, embeddings)

    def read_frame(self, frame: pd.DataFrame) -> tuple[list[np.ndarray | None], list[str | None]]:
        """Model-size photos and texts of a frame with `image` and/or `title` columns (plus the
        model's text columns, e.g. `usage`, where it was trained with them; absent ones are skipped).

        Each photo is letterboxed to the model's input as soon as it is decoded, so a request of many
        large photos holds one full-size photo at a time, never all of them."""
        if "image" not in frame and "title" not in frame:
            raise ValueError("input needs an 'image' column, a 'title' column, or both")
        n = len(frame)
        cells = frame["image"] if "image" in frame else [None] * n
        images = []
        for row, cell in enumerate(cells):
            try:
                image = decode_image_field(cell, max_pixels=self.transform.max_pixels, paths=self.image_paths)
            except Exception as exc:  # whatever a bad cell raises (PIL, base64, paths): the caller's input
                raise ValueError(f"row {row}: image: {exc}") from None
            images.append(None if image is None else self.transform.letterbox(image))
        return images, product_texts(frame.reset_index(drop=True), self.bundle.text_columns)

    def predict_frame(self, frame: pd.DataFrame, k: int = 5) -> pd.DataFrame:
        """`frame` has `image` and/or `title` columns; returns category, probability, probabilities
        and, when the bundle carries an index, the k most similar catalog products. Safe to call from
        many threads at once: their forward passes are batched together (`serve.batching`)."""
        images, titles = self.read_frame(frame)
        probs, embeddings = self.forward_batched(images, titles)
        classes = self.bundle.classes
        best = probs.argmax(1) if len(probs) else np.zeros(0, int)
        result = pd.DataFrame(
            {
                "category": [classes[i] for i in best],
                "probability": [float(probs[r, i]) for r, i in enumerate(best)],
                "probabilities": [{c: float(p) for c, p in zip(classes, row, strict=True)} for row in probs],
            }
        )
        if self.bundle.index is not None and len(frame):
            indices, scores = self.bundle.index.search(embeddings, k)
            ids = self.bundle.index.items["product_id"].to_numpy()
            result["similar_product_ids"] = [[str(ids[i]) for i in row] for row in indices]
            result["similar_scores"] = [[float(s) for s in row] for row in scores]
        return result
