"""Batched forward passes over encoded products: logits and embeddings, with modalities hidden at will."""

from __future__ import annotations

import numpy as np
import torch

from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import PreparedData
from kickvision.model.net import MultimodalShoeNet


@torch.no_grad()
def predict_arrays(
    model: MultimodalShoeNet,
    images: np.ndarray,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    batch_size: int = 128,
    device: torch.device | None = None,
    use_image: bool | np.ndarray = True,
    use_text: bool | np.ndarray = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, C], embeddings [N, D]) for encoded products (uint8 NHWC pixels, token ids).

    `use_image` / `use_text` False (or a per-product boolean array) hides that modality from the
    model, as for a product with no photo or no title.
    """
    device = device or next(model.parameters()).device
    transform = resolve_image_transform(model.cfg)
    model.eval()
    n = len(images)
    image_present = np.broadcast_to(np.asarray(use_image, dtype=np.float32), (n,))
    text_present = np.broadcast_to(np.asarray(use_text, dtype=np.float32), (n,))
    logits, embeddings = [], []
    for start in range(0, n, batch_size):
        window = slice(start, start + batch_size)
        out = model(
            transform.normalise(torch.from_numpy(np.ascontiguousarray(images[window])).to(device)),
            torch.from_numpy(np.ascontiguousarray(input_ids[window])).to(device),
            torch.from_numpy(np.ascontiguousarray(attention_mask[window])).to(device),
            image_present=torch.from_numpy(image_present[window].copy()).to(device),
            text_present=torch.from_numpy(text_present[window].copy()).to(device),
        )
        logits.append(out.logits.float().cpu())
        embeddings.append(out.embedding.float().cpu())
    if not logits:
        return np.zeros((0, model.classifier.out_features), np.float32), np.zeros(
            (0, model.cfg.embedding_dim), np.float32
        )
    return torch.cat(logits).numpy(), torch.cat(embeddings).numpy()


def predict_logits(
    model: MultimodalShoeNet,
    data: PreparedData,
    indices: np.ndarray,
    batch_size: int = 128,
    device: torch.device | None = None,
    use_image: bool = True,
    use_text: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, C], embeddings [N, D]) for the rows `indices` of `data` (see predict_arrays)."""
    return predict_arrays(
        model,
        data.images[indices],
        data.input_ids[indices],
        data.attention_mask[indices],
        batch_size,
        device,
        use_image,
        use_text,
    )
