"""Audit quality: how many deliberately wrong labels does `kickvision audit` find, and how early?

Takes a trained model (`--model`: a bundle folder or an MLflow model URI) and the catalog it was
trained on; the products of a held-out split (`--split`: test, or val to choose a ranking on; the
split is drawn from the config's seed, as training drew it) are products it never learnt from. For
each of `--draws` random draws, 4% of them (`--flip`) get another category at random; then these
rankings of the held-out products are compared:

- the audit as `kickvision audit` runs it: 1 - the mean of the model's probability of the label
  and its title view's (the same model with the photo hidden; `catalog_audit.second_judge`);
- the audit as the previous release ran it: the second judge a text model cross-fitted on the
  audited products themselves (their given labels, 5 group-aware folds; `text_second_opinion`);
- the audit on the model's probabilities alone;
- 1 - the mean of the model's and the train-split title model's probabilities (below): what a
  text judge fitted on the training catalog would add;
- 1 - the model's probability of the given label (self-confidence alone);
- 1 - a title-only model's probability of the given label (TF-IDF + logistic regression on the
  train split's title and the model's text columns: "the title disagrees").

Recall of the flipped products within the top k, 2k and 3k rows (k = number of flips) and precision
at k, mean ± std over draws; and, since every ranking sees the same flips, the paired difference of
each audit ranking from the two simple ones (mean ± standard error over draws). Also prints the
products the audit doubts most that were *not* flipped: the catalog's own label errors, candidates
for a merchandiser. Writes JSON.

    .venv/bin/python benchmarks/audit.py --catalog ../shared/data/fashion-footwear --config fashion \
        --model /tmp/fashion-bundle [--split val] [--draws 30]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from common import benchmark_parser, prepared_catalog, write_result

from kickvision.config import dotted_overrides, load_config
from kickvision.data.text import product_texts
from kickvision.evaluate.audit import audit_products
from kickvision.evaluate.catalog_audit import second_judge, text_second_opinion, tfidf_text_model
from kickvision.model.bundle import load_bundle
from kickvision.serve.predictor import ShoePredictor


def load_model(source: str):
    if Path(source).is_dir():
        return load_bundle(source)
    from kickvision.serve.registry import load_registered_bundle
    from orchestration.stack import ensure_stack, use_tracking

    ensure_stack()
    use_tracking()
    return load_registered_bundle(source)


def recall_at(ranked_ids: list[str], flipped: set[str], depth: int) -> float:
    return len(set(ranked_ids[:depth]) & flipped) / len(flipped)


def main() -> None:
    parser = benchmark_parser(__doc__, config="fashion")
    parser.add_argument("--model", required=True, help="a bundle folder or an MLflow model URI (trained on --catalog)")
    parser.add_argument("--flip", type=float, default=0.04, help="share of test labels flipped per draw")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument(
        "--split", choices=("val", "test"), default="test", help="the held-out split audited (choose on val)"
    )
    parser.add_argument("--out", help="JSON path (default benchmarks/results/audit_<catalog>.json)")
    args = parser.parse_args()
    cfg = load_config(args.config, overrides=dotted_overrides(args.set))
    bundle = load_model(args.model)
    data, _, name = prepared_catalog(args.catalog, cfg)
    if list(data.classes) != list(bundle.classes):
        raise SystemExit(f"the model's classes {bundle.classes} are not the catalog's {data.classes}")
    train, held = data.indices("train"), data.indices(args.split)
    rows = data.rows.iloc[held].reset_index(drop=True)
    texts = product_texts(rows, bundle.text_columns)
    predictor = ShoePredictor(bundle)
    images = [data.images[j] for j in held]
    views = predictor.model_views_of(images, texts)

    train_texts = [t or "" for t in product_texts(data.rows.iloc[train], bundle.text_columns)]
    title_model = tfidf_text_model(10.0, max_iter=2000)
    title_model.fit(train_texts, data.rows["category"].iloc[train].astype(str))
    title_probs = title_model.predict_proba([t or "" for t in texts])
    title_classes = list(title_model.classes_)

    classes = list(bundle.classes)
    truth = rows["category"].astype(str).to_numpy()
    n_flip = max(1, round(args.flip * len(rows)))
    methods = [
        "audit",
        "audit with a text judge cross-fitted on the audited products (before)",
        "audit, model only",
        "1 - mean p(label), model + train-split title model",
        "1 - p(label)",
        "title model disagrees",
    ]
    results: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    own_errors = None
    for draw in range(args.draws):
        rng = np.random.default_rng(draw)
        flipped_rows = rng.choice(len(rows), n_flip, replace=False)
        given = truth.copy()
        for i in flipped_rows:
            given[i] = rng.choice([c for c in classes if c != truth[i]])
        flipped = set(rows["product_id"].astype(str).iloc[flipped_rows])
        flipped_rows_frame = rows.assign(category=given)
        judge = second_judge(views, flipped_rows_frame, list(bundle.text_columns), seed=draw)
        cross_fitted = text_second_opinion(flipped_rows_frame, classes, list(bundle.text_columns), seed=draw)
        if cross_fitted is None:
            raise SystemExit(f"the {args.split} split is too small to cross-fit a text judge")
        audited = audit_products(flipped_rows_frame, views, second_opinion=judge)
        label = np.array([classes.index(c) for c in given])
        p_model = views.fused[np.arange(len(rows)), label]
        p_title = title_probs[np.arange(len(rows)), [title_classes.index(c) for c in given]]
        ids = rows["product_id"].astype(str).to_numpy()
        rankings = {
            "audit": audited["product_id"].tolist(),
            methods[1]: audit_products(flipped_rows_frame, views, second_opinion=cross_fitted)["product_id"].tolist(),
            "audit, model only": audit_products(flipped_rows_frame, views)["product_id"].tolist(),
            "1 - mean p(label), model + train-split title model": ids[np.argsort(p_model + p_title)].tolist(),
            "1 - p(label)": ids[np.argsort(p_model, kind="stable")].tolist(),
            "title model disagrees": ids[np.argsort(p_title, kind="stable")].tolist(),
        }
        for method, ranked in rankings.items():
            results[method].append(
                {
                    "recall_at_k": recall_at(ranked, flipped, n_flip),
                    "recall_at_2k": recall_at(ranked, flipped, 2 * n_flip),
                    "recall_at_3k": recall_at(ranked, flipped, 3 * n_flip),
                    "precision_at_k": recall_at(ranked, flipped, n_flip),  # k rows, k flips: the same count
                    "flagged": float(audited["label_issue"].sum()) if method == "audit" else float("nan"),
                }
            )
        if draw == 0:
            own_errors = audited[~audited["product_id"].isin(flipped)].head(15)

    print(f"\n{name}: {len(rows)} held-out {args.split} products, {n_flip} flipped per draw, {args.draws} draws")
    print("| ranking | recall@k | recall@2k | recall@3k | precision@k |")
    print("|---|---|---|---|---|")
    summary = {}
    for method, draws in results.items():
        stats = {m: (float(np.mean([d[m] for d in draws])), float(np.std([d[m] for d in draws]))) for m in draws[0]}
        summary[method] = stats
        cells = " | ".join(f"{stats[m][0]:.3f} ± {stats[m][1]:.3f}" for m in ("recall_at_k", "recall_at_2k"))
        print(
            f"| {method} | {cells} | {stats['recall_at_3k'][0]:.3f} ± {stats['recall_at_3k'][1]:.3f} | "
            f"{stats['precision_at_k'][0]:.3f} |"
        )
    print(f"audit flags {summary['audit']['flagged'][0]:.0f} products per draw (confident learning's estimate)")
    # The draws are paired (every ranking sees the same flips): differences per draw, mean ± standard error.
    print("\npaired differences in recall (the same draws), mean ± s.e.:")
    print("| ranking | vs 1 - p(label) @k | @2k | vs title model @k | @2k |")
    print("|---|---|---|---|---|")
    for method in methods:
        if method in ("1 - p(label)", "title model disagrees"):
            continue
        cells, paired = [], {}
        for simple in ("1 - p(label)", "title model disagrees"):
            for metric in ("recall_at_k", "recall_at_2k"):
                diff = np.array([a[metric] - b[metric] for a, b in zip(results[method], results[simple], strict=True)])
                mean, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
                paired[f"{metric} vs {simple}"] = (mean, se)
                cells.append(f"{mean:+.3f} ± {se:.3f}")
        summary[method]["paired"] = paired
        print(f"| {method} | {' | '.join(cells)} |")
    print("\nmost doubted products that were not flipped (draw 0): the catalog's own label errors?")
    for row in own_errors.itertuples():
        print(
            f"  {row.product_id}  [{row.category}] -> {row.predicted}  "
            f"({row.suspicion:.3f}; {row.disagrees or 'neither branch disagrees'})  {row.title}"
        )
    suffix = "" if args.split == "test" else f"_{args.split}"
    meta = {
        "catalog": name,
        "config": cfg.name,
        "model": args.model,
        "split": args.split,
        "products": len(rows),
        "flips": n_flip,
        "draws": args.draws,
    }
    own = own_errors[["product_id", "category", "predicted", "suspicion", "disagrees", "title"]].to_dict("records")
    result = {"meta": meta, "rankings": summary, "unflipped_top": own}
    write_result(result, args.out, f"audit_{name}{suffix}.json")


if __name__ == "__main__":
    main()
