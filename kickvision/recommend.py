"""Similar-product retrieval from the model's L2-normalised fused embedding.

The index is exact cosine top-k: one matrix product and a top-k over a float16 matrix. Measured
on 2 CPU threads at 64 dims (benchmarks/recommend.py): p50 0.14 ms at 10k products, 2.4-4.6 ms at
100k. Cost grows linearly with products x dims, so exact search stays under ~50 ms up to roughly
a million products; past that, or under heavy concurrent load, an approximate index (FAISS IVF or
HNSW) would be needed, at the price of recall and an extra dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

ITEM_COLUMNS = ("product_id", "title", "category", "image")
OPTIONAL_COLUMNS = ("base_colour",)


@dataclass
class EmbeddingIndex:
    """Unit-norm embeddings [N, D] with one row of product metadata each."""

    embeddings: torch.Tensor  # float16 or float32, rows L2-normalised
    items: pd.DataFrame  # product_id, title, category, image (+ base_colour when known)

    def __len__(self) -> int:
        return len(self.items)

    def search(self, queries: np.ndarray | torch.Tensor, k: int = 5, exclude_ids: list[str] | None = None):
        """(indices [Q, k], scores [Q, k]) of the most similar items, best first.

        `exclude_ids[q]` drops that product from query q's results (a product is not its own
        recommendation when it is queried by id).
        """
        q = torch.as_tensor(queries, dtype=torch.float32)
        q = torch.nn.functional.normalize(q.reshape(len(q), -1), dim=1)
        scores = q @ self.embeddings.float().T
        if exclude_ids is not None:
            ids = self.items["product_id"].astype(str).to_numpy()
            for row, pid in enumerate(exclude_ids):
                if pid is not None:
                    scores[row, torch.from_numpy(ids == str(pid))] = -torch.inf
        k = min(k, len(self))
        top = torch.topk(scores, k, dim=1)
        return top.indices.numpy(), top.values.numpy()

    def results(self, queries, k: int = 5, exclude_ids: list[str] | None = None) -> list[pd.DataFrame]:
        """Per query, a frame of the top-k items with a `score` column, best first."""
        indices, scores = self.search(queries, k, exclude_ids)
        frames = []
        for idx, sc in zip(indices, scores, strict=True):
            keep = np.isfinite(sc)
            frames.append(self.items.iloc[idx[keep]].assign(score=sc[keep]).reset_index(drop=True))
        return frames

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self.embeddings.contiguous()}, str(folder / "embeddings.safetensors"))
        self.items.to_parquet(folder / "items.parquet", index=False)

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingIndex:
        folder = Path(folder)
        embeddings = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
        return cls(embeddings, pd.read_parquet(folder / "items.parquet"))


def make_index(embeddings: np.ndarray, rows: pd.DataFrame, dtype: torch.dtype = torch.float16) -> EmbeddingIndex:
    """An index over `rows` (catalog rows) and their embeddings."""
    columns = [c for c in (*ITEM_COLUMNS, *OPTIONAL_COLUMNS) if c in rows]
    items = rows[columns].astype(str).reset_index(drop=True)
    vectors = torch.nn.functional.normalize(torch.as_tensor(embeddings, dtype=torch.float32), dim=1)
    return EmbeddingIndex(vectors.to(dtype), items)


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
            img = image if isinstance(image, Image.Image) else Image.open(image).convert("RGB")
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
