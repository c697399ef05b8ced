"""How good the recommendations are: same-category precision@k and mAP, same-colour p@5, contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kickvision.data.images import open_image_bounded
from kickvision.model.index import EmbeddingIndex


def retrieval_scores(
    query_embeddings: np.ndarray,
    query_rows: pd.DataFrame,
    gallery: EmbeddingIndex,
    ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """Same-category precision@k, mAP over the whole ranking, and same-colour-and-category p@5.

    Queries are products not in the gallery (e.g. test split against the training catalog).
    """
    if len(query_rows) == 0 or len(gallery) == 0:
        return {}
    scores = torch.as_tensor(query_embeddings, dtype=torch.float32) @ gallery.embeddings.float().T
    order = torch.argsort(scores, dim=1, descending=True).numpy()
    gallery_cat = gallery.items["category"].to_numpy()
    relevant = gallery_cat[order] == query_rows["category"].to_numpy()[:, None]  # [Q, N] in rank order
    metrics = {f"p_at_{k}": float(relevant[:, :k].mean()) for k in ks if k <= len(gallery)}
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    n_relevant = relevant.sum(1)
    ap = (relevant * hits / ranks).sum(1) / np.maximum(n_relevant, 1)
    metrics["map"] = float(ap[n_relevant > 0].mean()) if (n_relevant > 0).any() else 0.0
    if "base_colour" in query_rows and "base_colour" in gallery.items:
        query_colour = query_rows["base_colour"].astype(str).to_numpy()[:, None]
        colour = gallery.items["base_colour"].to_numpy()[order[:, :5]] == query_colour
        metrics["colour_p_at_5"] = float((relevant[:, :5] & colour).mean())
    return metrics


def contact_sheet(
    queries: list[tuple[object, str]], results: list[pd.DataFrame], path: str | Path, thumb: int = 96
) -> Path:
    """A PNG grid: one row per query (its photo, then its results with category and score).

    `queries` holds (image path or PIL image or None, caption) pairs; `results` the frames
    returned by `EmbeddingIndex.results`.
    """
    from PIL import Image, ImageDraw, ImageOps

    def tile(image, caption: str, frame: str) -> Image.Image:
        cell = Image.new("RGB", (thumb, thumb + 28), "white")
        if image is not None:
            img = image if isinstance(image, Image.Image) else open_image_bounded(image)
            cell.paste(ImageOps.pad(img.convert("RGB"), (thumb, thumb), color=(255, 255, 255)), (0, 0))
        draw = ImageDraw.Draw(cell)
        for i, line in enumerate((caption[:17], caption[17:34])):
            draw.text((2, thumb + 1 + 13 * i), line, fill="black")
        draw.rectangle([0, 0, thumb - 1, thumb - 1], outline=frame, width=2)
        return cell

    columns = 1 + max((len(r) for r in results), default=0)
    sheet = Image.new("RGB", (columns * (thumb + 6), len(queries) * (thumb + 34)), "white")
    for row, ((image, caption), found) in enumerate(zip(queries, results, strict=True)):
        y = row * (thumb + 34)
        sheet.paste(tile(image, f"Q {caption}", "black"), (0, y))
        for col, item in enumerate(found.itertuples(), start=1):
            picture = item.image if Path(str(item.image)).is_file() else None
            sheet.paste(tile(picture, f"{item.score:.2f} {item.category}", "grey"), (col * (thumb + 6), y))
    sheet.save(path)
    return Path(path)
