"""The one image path of kickvision: every photo the model sees goes through an `ImageTransform`.

Decoding is bounded (the pixel count is read from the file header and checked before any pixel is
decoded), then the photo is letterboxed onto white (catalog photos sit on white) to the model's
input size (square, or [height, width] for portrait photos) and kept as uint8 HWC, the form caches,
exemplars and indexes store. Normalisation to float NCHW happens on the device, right before a
forward pass (training augments in between: `kickvision.train.augment`). `resolve_image_transform` derives
the transform from the model's config, as timm's `resolve_model_data_config` + `create_transform`
do, so training, evaluation, serving, explanations and index rebuilds cannot disagree.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps

from kickvision.config import ModelConfig, ValidateConfig, image_hw

# Decompression-bomb guard: the validate section's bound, also used where no config is at hand (serving).
DEFAULT_MAX_PIXELS: int = ValidateConfig.model_fields["max_image_pixels"].default
PAD_COLOUR = (255, 255, 255)
# The photo formats kickvision decodes. Pillow knows many more (EPS goes through Ghostscript, PSD,
# ICNS, ...); each is attack surface for a server that decodes what requests send, so none is tried.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def open_image_bounded(source: str | Path | IO[bytes], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image as RGB, refusing oversized ones before their pixels are decoded.

    Upright as shot (EXIF orientation applied), transparent pixels on white (the padding colour),
    16-bit greyscale scaled to 8 bits (PIL's plain conversion clips it to nearly white). Only
    IMAGE_FORMATS are decoded: anything else is an UnidentifiedImageError (an OSError). A file PIL
    cannot parse (a broken PNG chunk raises SyntaxError, a truncated header struct.error or
    EOFError) is a ValueError, like every other bad image."""
    try:
        opened = Image.open(source, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:  # PIL's own, far larger bound
        raise ValueError(str(exc)) from None
    except (SyntaxError, struct.error, EOFError) as exc:
        raise ValueError(f"image cannot be parsed: {exc}") from None
    with opened as img:
        width, height = img.size  # read from the header, no pixel decoding yet
        if width * height > max_pixels:
            raise ValueError(f"image is {width}x{height}, over the {max_pixels:,}-pixel limit")
        img.draft("RGB", (width, height))
        try:
            return _as_rgb(ImageOps.exif_transpose(img))
        except (SyntaxError, struct.error, EOFError) as exc:
            raise ValueError(f"image cannot be decoded: {exc}") from None


def jpeg_thumbnail(source: str | Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A JPEG of at most `size` x `size` pixels of an image, decoded by `open_image_bounded`."""
    import io

    image = open_image_bounded(source, max_pixels)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _as_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit greyscale
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        peak = values.max(initial=0.0)
        if img.mode.startswith("I;16") or peak > 255:
            top = 65535.0
        elif img.mode == "F" and peak <= 1.0:  # floating-point greyscale in 0..1 (TIFF)
            top = 1.0
        else:
            top = 255.0
        return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    # an alpha channel, or one colour (or palette entry) marked transparent by a tRNS chunk
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*PAD_COLOUR, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


@dataclass(frozen=True)
class ImageTransform:
    """Photo -> the model's uint8 input -> normalised tensor, for one model configuration."""

    size: int | tuple[int, int]  # one side (square) or (height, width)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return image_hw(self.size)

    def letterbox(self, image: Image.Image) -> np.ndarray:
        """uint8 [H, W, 3]: the photo scaled to fit, centred on white."""
        height, width = self.hw
        return np.asarray(
            ImageOps.pad(image.convert("RGB"), (width, height), Image.Resampling.BILINEAR, color=PAD_COLOUR)
        )

    def blank(self) -> np.ndarray:
        """The pixels standing in for a missing photo (the model is told the photo is absent)."""
        return np.full((*self.hw, 3), PAD_COLOUR[0], np.uint8)

    def blank_input(self) -> torch.Tensor:
        """The blank photo as the model sees it: normalised float [1, 3, H, W] (what an occluded patch shows)."""
        return self.normalise(self.blank()[None])

    def load(self, source: str | Path | IO[bytes]) -> np.ndarray:
        """Decode (bounded) and letterbox one image file."""
        return self.letterbox(open_image_bounded(source, self.max_pixels))

    def load_or_blank(self, sources: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 [N, H, W, 3], bool [N] readable): each file decoded, blank where it cannot be read."""
        pixels = np.empty((len(sources), *self.hw, 3), np.uint8)
        readable = np.zeros(len(sources), dtype=bool)
        for i, source in enumerate(sources):
            try:
                pixels[i], readable[i] = self.load(source), True
            except (OSError, ValueError):
                pixels[i] = self.blank()
        return pixels, readable

    def pixels(self, images: Sequence[Image.Image | np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 [N, H, W, 3], float32 [N] presence) for photos, None where a photo is missing. A photo
        is a decoded image or an array this transform already letterboxed (uint8 [H, W, 3])."""
        arrays = [self.blank() if image is None else self._letterboxed(image) for image in images]
        present = np.array([image is not None for image in images], np.float32)
        stacked = np.stack(arrays) if arrays else np.zeros((0, *self.hw, 3), np.uint8)
        return stacked, present

    def _letterboxed(self, image: Image.Image | np.ndarray) -> np.ndarray:
        if isinstance(image, Image.Image):
            return self.letterbox(image)
        if image.shape != (*self.hw, 3) or image.dtype != np.uint8:
            raise ValueError(f"a letterboxed photo is uint8 {(*self.hw, 3)}, got {image.dtype} {image.shape}")
        return image

    def normalise(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 NHWC (numpy, or a tensor on any device) -> normalised float NCHW on the same device."""
        return self.standardise(self.to_unit(images))

    @staticmethod
    def to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 NHWC (numpy, or a tensor on any device) -> float NCHW in [0, 1] (what augmentation acts on)."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.require(images, requirements=["C", "W"]))  # copies read-only arrays
        return images.permute(0, 3, 1, 2).float().div_(255)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """float NCHW in [0, 1] -> (x - mean) / std per channel."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def resolve_image_transform(model_cfg: ModelConfig, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageTransform:
    """The transform of a model configuration (its image_size, image_mean and image_std)."""
    size = model_cfg.image_size if isinstance(model_cfg.image_size, int) else tuple(model_cfg.image_size)
    return ImageTransform(size, tuple(model_cfg.image_mean), tuple(model_cfg.image_std), max_pixels)
