"""Catalogs whose right explanation is known: the class is decided by the top-left quadrant alone.

They check that an image map points at the evidence (tests/test_explain.py, benchmarks/vit_maps.py).
`where`: a dark square top-left (class `top_left`) or in one of the other three quadrants
(`elsewhere`). `colour`: a square in every quadrant, the top-left one red (`top_left`) or blue
(`elsewhere`), the others red or blue at random, so the rest of the photo says nothing. Titles are
empty; the split is 70/15/15 in row order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kickvision.config import ImageEncoderConfig
from kickvision.data.prepare import PreparedData

# The ViT these catalogs are explained with (tests and benchmark alike): 8-px patches, two blocks,
# mean-pooled patch tokens as fashion.yaml's ViT; learns either rule in seconds on CPU.
TINY_VIT = ImageEncoderConfig(
    name="vit_tiny_patch16_224",
    pretrained=False,
    overrides={
        "patch_size": 8,
        "depth": 2,
        "embed_dim": 64,
        "num_heads": 2,
        "global_pool": "avg",
        "class_token": False,
    },
)


def region_catalog(rule: str = "where", n: int = 320, size: int = 32, seed: int = 0) -> PreparedData:
    """The `where` or `colour` catalog (module docstring) of `n` photos of `size` px."""
    if rule not in ("where", "colour"):
        raise ValueError(f"unknown rule {rule!r}; choose 'where' or 'colour'")
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 3), 255, np.uint8)
    labels = np.arange(n) % 2  # 1 = top_left
    half, side = size // 2, size // 4
    palette = np.array([[30, 30, 200], [200, 30, 30]])  # elsewhere: blue, top_left: red
    for i, label in enumerate(labels):
        for quadrant in [0 if label else int(rng.integers(1, 4))] if rule == "where" else range(4):
            qy, qx = divmod(quadrant, 2)
            y, x = qy * half + rng.integers(0, half - side + 1), qx * half + rng.integers(0, half - side + 1)
            if rule == "where":
                colour = rng.integers(0, 80, 3)
            else:
                colour = palette[label if quadrant == 0 else int(rng.integers(0, 2))] + rng.integers(-20, 21, 3)
            images[i, y : y + side, x : x + side] = np.clip(colour, 0, 255)
    split = np.array(["train"] * n, dtype=object)
    split[int(n * 0.7) : int(n * 0.85)], split[int(n * 0.85) :] = "val", "test"
    rows = pd.DataFrame(
        {
            "product_id": [str(i) for i in range(n)],
            "title": [""] * n,
            "image": [f"{i}.png" for i in range(n)],
            "category": np.array(["elsewhere", "top_left"])[labels],
            "label": labels,
            "split": split,
        }
    )
    ids = np.zeros((n, 12), np.int64)
    return PreparedData(rows, ["elsewhere", "top_left"], images, ids, ids.copy(), "", "")
