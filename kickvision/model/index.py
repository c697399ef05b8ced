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

from kickvision.data.prepare import PreparedData
from kickvision.model.net import MultimodalShoeNet
from kickvision.model.predict import predict_logits

ITEM_COLUMNS = ("product_id", "title", "category", "image")
OPTIONAL_COLUMNS = ("base_colour", "split")  # split: drift reference (review/drift.py)


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


def index_catalog(model: MultimodalShoeNet, data: PreparedData) -> EmbeddingIndex:
    """Embed every product of the prepared catalog (all splits) into a recommendation index."""
    _, embeddings = predict_logits(model, data, np.arange(len(data.rows)))
    return make_index(embeddings, data.rows_with_image_paths())
