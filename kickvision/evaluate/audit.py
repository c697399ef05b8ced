"""Catalog audit: the products whose label the model doubts most, and the listings that repeat.

Label errors, by confident learning (Northcutt, Jiang and Chuang 2021; `cleanlab.filter.
find_label_issues`, "prune_by_noise_rate"): each class's threshold is the mean probability the
model gives that class on the products labelled with it; products whose probability for another
class clears that class's threshold fill the confident joint of (given, likely true) labels, which
estimates how many products of each pair are mislabelled; that many per pair are flagged
(`label_issue`, and their count: the estimate of the catalog's label errors). The ranking is by
suspicion = 1 - the judged probability of the given label (the model's, or its mean with a second
judge's): with 4% of 1,577 real test labels changed, putting the flagged products first found fewer
of the changes within the first k rows than suspicion alone (0.886 vs 0.922 recall@k,
benchmarks/audit.py).

The probabilities must be out-of-sample: products the model did not learn from (a new catalog, a
drop, a held-out split). On its own training rows a model has learnt their labels, wrong ones
included, and vouches for them.

Evidence per product: the predicted category and its probability, the given label's probability,
what the photo alone and the title alone say (the same model with the other input hidden) and
which of them disagrees with the label; and near-duplicate listings: the same photo bytes (SHA-1),
the same title (case and spacing aside), or fused embeddings at cosine >= `duplicate_cosine` (and
among the closest `EMBEDDING_DUPLICATE_SHARE` of the catalog's nearest-neighbour pairs, since a
class-separating embedding puts whole categories above any fixed cosine), under another product
id, with whether the labels agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DUPLICATE_COSINE = 0.98
EMBEDDING_DUPLICATE_SHARE = 0.01  # at most this share of products is a near-duplicate by embedding alone


@dataclass
class ModelViews:
    """A model's view of N products: probabilities [N, C] fused, photo only and title only (None
    where the model has no such branch), and unit-norm fused embeddings [N, D]."""

    classes: list[str]
    fused: np.ndarray
    photo: np.ndarray | None
    title: np.ndarray | None
    embeddings: np.ndarray


def label_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Boolean [N]: confident learning's flagged products (labels are class indices)."""
    from cleanlab.filter import find_label_issues

    if len(labels) < 2 or len(np.unique(labels)) < 2:
        return np.zeros(len(labels), bool)  # nothing to estimate noise rates from
    # n_jobs=1: cleanlab's default forks a process pool, which deadlocks inside a threaded step runner
    # (a forked child inherits locks held by other threads) and buys nothing at catalog sizes.
    return find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate", n_jobs=1)


def audit_products(
    rows: pd.DataFrame,
    views: ModelViews,
    duplicate_cosine: float = DUPLICATE_COSINE,
    second_opinion: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per product of `rows` (columns product_id, category, title; image_sha1 optional),
    most doubted label first. Products of a category the model does not know cannot be judged:
    they come last, with that as the issue. Products a reviewer already decided on (a non-empty
    `reviewed` column: the action in corrections.csv) come after the undecided ones.

    `second_opinion` ([N, C]: the model's own title view, or a text model cross-fitted on the same
    products; `catalog_audit.second_judge`) is averaged with the model's probabilities before
    judging: the title's word on the label weighs beside the fused answer, so a label the title
    contradicts is doubted before one only the photo questions.
    `predicted` stays the model's answer."""
    classes = list(views.classes)
    given = rows["category"].astype(str).to_numpy()
    known = np.array([c in classes for c in given])
    label = np.array([classes.index(c) if k else -1 for c, k in zip(given, known, strict=True)])
    n = len(rows)
    # The judged probabilities: the model's, or their mean with the second judge's.
    judged = views.fused if second_opinion is None else (views.fused + second_opinion) / 2
    p_given = np.full(n, np.nan)
    p_given[known] = judged[known, label[known]]
    flagged = np.zeros(n, bool)
    flagged[known] = label_issues(label[known], judged[known])
    predicted = views.fused.argmax(1)
    out = pd.DataFrame(
        {
            "product_id": rows["product_id"].astype(str).to_numpy(),
            "category": given,
            "predicted": [classes[i] for i in predicted],
            "suspicion": 1.0 - p_given,
            "label_issue": flagged,
            "p_category": p_given,
            "p_predicted": views.fused.max(1),
        }
    )
    disagree = []
    for name, probabilities in (("photo", views.photo), ("title", views.title)):
        if probabilities is None:
            out[f"{name}_says"] = ""
            continue
        says = np.array([classes[i] for i in probabilities.argmax(1)])
        out[f"{name}_says"] = says
        disagree.append(np.where(known & (says != given), name, ""))
    out["disagrees"] = [" + ".join(p for p in parts if p) for parts in zip(*disagree, strict=True)] if disagree else ""
    out["issue"] = np.select(
        [~known, flagged], ["category unknown to the model", "label doubted (confident learning)"], default=""
    )
    duplicates = near_duplicates(rows, views.embeddings, duplicate_cosine)
    out = pd.concat([out, duplicates], axis=1)
    out["title"] = rows["title"].to_numpy()
    if "image" in rows:
        out["image"] = rows["image"].to_numpy()
    reviewed = rows["reviewed"].fillna("").astype(str).to_numpy() if "reviewed" in rows else np.full(n, "")
    out["reviewed"] = reviewed
    order = np.lexsort((-np.nan_to_num(out["suspicion"].to_numpy(), nan=-1.0), reviewed != "", ~known))
    out = out.iloc[order].reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, n + 1))
    return out


def near_duplicates(rows: pd.DataFrame, embeddings: np.ndarray, cosine: float = DUPLICATE_COSINE) -> pd.DataFrame:
    """Per product: `duplicate_of` (another product id, or ""), `duplicate_kind` (same photo / same
    title / near-identical embedding) and `duplicate_label` (same / different)."""
    n = len(rows)
    ids = rows["product_id"].astype(str).to_numpy()
    categories = rows["category"].astype(str).to_numpy()
    match = np.full(n, -1)
    kind = np.full(n, "", dtype=object)
    keys = [("same photo", rows["image_sha1"] if "image_sha1" in rows else None)]
    keys.append(("same title", rows["title"].fillna("").astype(str).str.lower().str.split().str.join(" ")))
    for name, values in keys:
        if values is None:
            continue
        values = pd.Series(values).reset_index(drop=True)
        usable = values.notna() & (values.astype(str) != "")
        first = {}
        for i in np.flatnonzero(usable.to_numpy()):
            first.setdefault(values[i], []).append(i)
        for group in first.values():
            for i in group:
                if match[i] < 0 and len(group) > 1:
                    match[i], kind[i] = next(j for j in group if j != i), name
    vectors = np.asarray(embeddings, np.float32)
    nearest = np.full(n, -1)
    similarity = np.full(n, -np.inf, np.float32)
    for start in range(0, n, 1024):  # exact cosine, a block of queries at a time
        block = vectors[start : start + 1024] @ vectors.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        if n > 1:
            nearest[start : start + len(block)] = block.argmax(1)
            similarity[start : start + len(block)] = block.max(1)
    # An embedding trained to separate categories packs each one tightly: when most products have a
    # neighbour above `cosine`, that says "same category", not "same listing". Only the closest
    # percent of the catalog's pairs (and never below `cosine`) count as near-identical then.
    bound = max(cosine, float(np.quantile(similarity, 1 - EMBEDDING_DUPLICATE_SHARE))) if n >= 100 else cosine
    for i in np.flatnonzero((match < 0) & (nearest >= 0) & (similarity >= bound)):
        match[i], kind[i] = nearest[i], f"embedding cosine {similarity[i]:.3f}"
    has = match >= 0
    return pd.DataFrame(
        {
            "duplicate_of": np.where(has, ids[np.maximum(match, 0)], ""),
            "duplicate_kind": kind,
            "duplicate_label": np.where(
                has, np.where(categories[np.maximum(match, 0)] == categories, "same", "different"), ""
            ),
        }
    )


def audit_summary(audit: pd.DataFrame, top: int = 10) -> str:
    """A few lines for the console: counts, then the most doubted products."""
    lines = [
        f"{len(audit)} products audited: {int(audit['label_issue'].sum())} labels doubted (confident learning), "
        f"{int((audit['duplicate_of'] != '').sum())} near-duplicate listings "
        f"({int((audit['duplicate_label'] == 'different').sum())} with a different label), "
        f"{int((audit['issue'] == 'category unknown to the model').sum())} in categories the model does not know"
    ]
    if "audited_by" in audit:
        per_judge = audit.groupby("audited_by")["label_issue"].agg(["sum", "count"])
        lines.append(
            "doubted per judge: "
            + "; ".join(f"{j} {int(r['sum'])} of {int(r['count'])}" for j, r in per_judge.iterrows())
        )
    for row in audit.head(top).itertuples():
        lines.append(
            f"{row.rank:>4}. {row.product_id}  [{row.category}] -> {row.predicted} "
            f"(suspicion {row.suspicion:.3f}{', ' + row.disagrees + ' disagree' if row.disagrees else ''})  {row.title}"
        )
    return "\n".join(lines)


def audit_html(audit: pd.DataFrame, top: int = 200, thumb: int = 96) -> str:
    """A self-contained page (thumbnails inline, no assets from the internet) of the `top` rows."""
    import base64
    import html

    from kickvision.data.images import jpeg_thumbnail

    def thumbnail(path) -> str:
        if not isinstance(path, str) or not path:
            return ""
        try:
            jpeg = jpeg_thumbnail(path, thumb)
        except (OSError, ValueError):
            return ""
        return f'<img src="data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}" alt="">'

    columns = ["rank", "product_id", "category", "predicted", "suspicion", "issue", "disagrees", "duplicate_of"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["photo", *columns, "title"])
    body = []
    for row in audit.head(top).to_dict("records"):
        cells = [thumbnail(row.get("image"))]
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:.3f}" if isinstance(value, float) and value == value else html.escape(str(value)))
        cells.append(html.escape(str(row.get("title", ""))))
        flagged = ' class="doubted"' if row.get("label_issue") else ""
        body.append(f"<tr{flagged}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    style = (
        "body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:middle}"
        "tr.doubted td{background:#fff4e5}img{display:block}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>kickvision audit</title><style>{style}</style>"
        f"</head><body><h1>Catalog audit</h1><pre>{html.escape(audit_summary(audit, top=0))}</pre>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></body></html>"
    )
