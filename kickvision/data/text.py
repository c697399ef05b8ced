"""What the text encoder reads: the title, then the attribute columns a model was trained with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def product_texts(rows: pd.DataFrame, text_columns: Sequence[str] = ()) -> list[str | None]:
    """The title, then each of `text_columns` that has a value as "column: value", per product
    (e.g. "Puma Men Running Shoe | usage: Sports | gender: Men").

    None where the product has neither a title nor any attribute (the text branch is then hidden).
    """
    n = len(rows)
    titles = rows["title"] if "title" in rows else pd.Series([None] * n, index=rows.index)
    texts = []
    for i, title in enumerate(titles):
        parts = [] if is_blank(title) else [str(title).strip()]
        for column in text_columns:
            if column in rows:
                value = rows[column].iloc[i]
                if not is_blank(value):
                    parts.append(f"{column.replace('_', ' ')}: {str(value).strip()}")
        texts.append(" | ".join(parts) if parts else None)
    return texts


def is_blank(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip()


def tokenize_titles(tokenizer, titles: Sequence[str | None], max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask, padded to max_tokens (a missing text is tokenised as empty)."""
    encoded = tokenizer(
        [str(t) if t is not None else "" for t in titles],
        padding="max_length",
        truncation=True,
        max_length=max_tokens,
        return_tensors="np",
    )
    return encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)
