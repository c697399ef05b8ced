"""The model card: what a registered version was trained on, how well it does, and where it fails."""

from __future__ import annotations

from datetime import UTC, datetime

from kickvision.data.prepare import PreparedData
from kickvision.evaluate.metrics import EvaluationReport
from kickvision.model.bundle import ModelBundle
from kickvision.model.net import count_parameters

LIMITATIONS = (
    "Titles often name the category outright, so a strong title signal can hide a weak photo model: "
    "compare `test_top1_image_input_only` and `test_top1_text_input_only`.",
    "Categories that differ only in use (e.g. casual vs sports shoes) are told apart mostly by words "
    "in the title; a photo alone is far less reliable for them.",
    "Catalog labels carry noise (titles that contradict their label); top-1 is capped below 100%.",
    "Trained on one catalog's photography; other backgrounds, angles or resolutions may degrade it.",
)


def render_model_card(
    bundle: ModelBundle,
    report: EvaluationReport,
    data: PreparedData,
    model_name: str,
    version: str | None = None,
    decision: str | None = None,
    update_metrics: dict[str, float] | None = None,
) -> str:
    """Markdown model card from the bundle, its evaluation report and the data it was trained on."""
    m = report.metrics
    counts = data.rows.groupby(["category", "split"]).size().unstack(fill_value=0)
    cfg = bundle.model_config
    started = bundle.spec.training.pretrained  # recorded at training (load_bundle marks the encoders from it)

    def origin(key: str) -> str:
        return "pretrained" if started.get(key) else "from scratch"

    encoders = [f"{e.name} ({origin(f'image_{i}_{e.name}')})" for i, e in enumerate(bundle.model.image_encoders)]
    if bundle.model.text_encoder is not None:
        encoders.append(f"{bundle.model.text_encoder.model.config.model_type} text encoder ({origin('text')})")
    lines = [
        f"# Model card: {model_name}" + (f" v{version}" if version else ""),
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}." + (f" Registry decision: {decision}." if decision else ""),
        "",
        "## Intended use",
        "Classify footwear catalog products (photo + title) into the categories below, find similar "
        "products, and explain predictions to merchandisers. Not for other product domains without retraining.",
        "",
        "## Model",
        f"MultimodalShoeNet: {', '.join(encoders)}; {cfg.fusion} fusion, "
        f"{'x'.join(map(str, cfg.image_hw))} px input (HxW), "
        f"{count_parameters(bundle.model):,} parameters, embedding {cfg.embedding_dim}-d; "
        f"temperature {bundle.spec.temperature:.3f}. Text input: the title"
        + (f" + {', '.join(bundle.text_columns)}." if bundle.text_columns else " only."),
        "",
        branch_votes_line(bundle),
        photo_pretraining_line(bundle),
        "",
        "## Data",
        f"Catalog content hash `{data.catalog_hash}`, {len(data.rows)} products after validation, "
        f"group-aware split {data.split_counts()}.",
        corrections_line(data.corrections),
        "",
        "| category | " + " | ".join(counts.columns) + " |",
        "|---|" + "---|" * len(counts.columns),
        *[f"| {c} | " + " | ".join(str(int(v)) for v in row) + " |" for c, row in counts.iterrows()],
        "",
        "## Metrics (test split)",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in sorted(m.items())],
        "",
        "Per class:",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *[
            f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {int(r['support'])} |"
            for _, r in report.per_class.iterrows()
        ],
        "",
        *(
            [
                "## Catalog-drop update",
                f"Updated from v{bundle.spec.lineage.updated_from} with online EWC + replay; new categories: "
                f"{', '.join(bundle.spec.lineage.new_classes) or 'none'}.",
                "",
                "| metric | value |",
                "|---|---|",
                *[f"| {k} | {v:.4f} |" for k, v in sorted(update_metrics.items())],
                "",
            ]
            if update_metrics
            else []
        ),
        "## Known limitations",
        *[f"- {text}" for text in LIMITATIONS],
        "",
    ]
    return "\n".join(lines)


def corrections_line(counts: dict[str, int]) -> str:
    """How many reviewer decisions (the catalog's corrections.csv) shaped the training labels."""
    if not any(counts.values()):
        return "No reviewer corrections were applied (no corrections.csv beside the catalog)."
    line = (
        f"Reviewer corrections applied (corrections.csv): {counts.get('relabelled', 0)} relabelled, "
        f"{counts.get('excluded', 0)} excluded, {counts.get('confirmed', 0)} confirmed"
    )
    unmatched = counts.get("unmatched", 0)
    return line + (f"; {unmatched} named products the catalog no longer holds." if unmatched else ".")


def branch_votes_line(bundle: ModelBundle) -> str:
    """Whether the per-branch heads add their logits to the fused head's (train/fusion.py)."""
    model = bundle.model
    if model.branch_classifiers is None:
        return ""
    weights = model.branch_head_weights.tolist()
    if not bundle.spec.training.branch_head_weights:  # saved before the heads voted
        return "Per-branch heads trained beside the fused head; they do not vote (weights never chosen).\n"
    if not any(weights):
        return "Per-branch heads trained beside the fused head; on validation they did not help, so they do not vote.\n"
    votes = ", ".join(f"{n} {w:g}" for n, w in zip(model.branch_names, weights, strict=True))
    return f"Prediction = fused head + per-branch heads weighted (chosen on validation): {votes}.\n"


def photo_pretraining_line(bundle: ModelBundle) -> str:
    """Where the image encoders' starting weights came from."""
    record = bundle.spec.lineage.photo_pretraining
    if record is None:
        return "Image encoders: trained from scratch with the rest of the model (no photo pretraining)."

    def quality(probe: str) -> str:  # "0_resnet18 0.470 -> 0.784": untrained, then pretrained
        prefix, metrics = f"pretrain_{probe}_top1_", record.metrics
        return ", ".join(
            f"{k.removeprefix(prefix)} "
            + (f"{metrics[k + '_scratch']:.3f} -> " if k + "_scratch" in metrics else "")
            + f"{v:.3f}"
            for k, v in sorted(metrics.items())
            if k.startswith(prefix) and not k.endswith("_scratch")
        )

    probe = quality("probe")  # models pretrained before the linear probe existed report k-NN alone
    return (
        f"Image encoders: pretrained on the catalog's own photos ({record.method}, best epoch {record.epochs}, "
        f"catalog `{record.catalog_hash[:12]}`), then fine-tuned; validation top-1 of their photo vectors "
        f"(untrained -> pretrained), k-NN: "
        f"{quality('knn')}" + (f"; linear probe: {probe}." if probe else ".")
    )
