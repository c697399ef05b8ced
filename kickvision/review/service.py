"""The review desk's core, free of any web framework: predict and explain one product, audit a
catalog, record reviewers' decisions, report on drops.

One lock serialises everything that runs the model: the explainers hook the model's layers, and a
prediction running beside it would feed the hooks another product's activations. A review desk
serves a few people at a time, so that costs little; throughput serving is `mlflow models serve`.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from kickvision.config import ValidateConfig
from kickvision.data.catalog import Catalog, hash_drop, read_catalog, resolve_inside
from kickvision.data.corrections import append_correction, read_corrections
from kickvision.data.images import jpeg_thumbnail, open_image_bounded
from kickvision.data.text import product_texts
from kickvision.data.validation import quarantine_bad_rows
from kickvision.errors import CatalogError, KickvisionError
from kickvision.evaluate.audit import ModelViews, audit_products
from kickvision.evaluate.catalog_audit import second_judge
from kickvision.model.bundle import ModelBundle
from kickvision.review.drift import drift_report
from kickvision.serve.predictor import ShoePredictor

UNCERTAIN_WITHOUT_THRESHOLD = 0.5  # models saved before the review threshold was chosen on validation
THUMBNAIL_PX = 160


class NotFound(LookupError):
    """No such product or drop (the web API answers 404)."""


@dataclass
class AuditResult:
    catalog: Catalog
    table: pd.DataFrame  # audit_products' ranking (image: absolute path inside the catalog)
    quarantine: pd.DataFrame  # rows validation set aside, with `reason`
    views: ModelViews  # the model's view of `catalog.rows` (the validated rows), in their order


def learnt_catalog(bundle: ModelBundle, catalog_hash: str) -> bool:
    """Whether the model was trained (or updated) on the catalog with this content hash."""
    lineage = bundle.spec.lineage
    return catalog_hash in set(lineage.catalog_hashes or [lineage.catalog_hash])


def audit_catalog(
    root: str | Path, bundle: ModelBundle, cfg: ValidateConfig, in_sample: bool | None = None
) -> AuditResult:
    """Validate a catalog folder (reviewers' corrections applied) and rank its products by doubt.

    `in_sample`: whether the model learnt this very catalog (found from its hash when not given);
    its own title view then vouches for the labels it learnt, so the second judge is the text model
    cross-fitted on the catalog (`catalog_audit.second_judge`)."""
    catalog = read_catalog(root)
    if in_sample is None:
        in_sample = learnt_catalog(bundle, catalog.content_hash)
    result = quarantine_bad_rows(catalog, cfg, known_categories=list(bundle.classes))
    rows = result.catalog.rows.reset_index(drop=True)
    if rows.empty:
        raise KickvisionError(f"no product of {catalog.root} passed validation: nothing to audit (kickvision validate)")
    rows["image"] = [str(resolve_inside(catalog.root, p)) for p in rows["image"]]  # validated: inside the root
    decisions = read_corrections(catalog.root).set_index("product_id")["action"]
    rows["reviewed"] = rows["product_id"].map(decisions).fillna("")  # relabels are already applied
    frame = rows.reindex(columns=["image", "title", *bundle.text_columns])
    predictor = ShoePredictor(bundle, max_pixels=cfg.max_image_pixels)  # validation's own bound
    views = predictor.model_views(frame)
    opinion = second_judge(views, rows, list(bundle.text_columns), in_sample=in_sample)
    table = audit_products(rows, views, second_opinion=opinion)
    return AuditResult(result.catalog, table, result.quarantine, views)


def thumbnail_url(source: str, product_id: str) -> str:
    """The API path of a product's thumbnail; ids may hold any character, so both parts are quoted."""
    return f"/api/thumbnail/{quote(source, safe='')}/{quote(product_id, safe='')}"


def png_data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _records(table: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: NaN -> None, numpy scalars -> Python."""
    return [
        {k: (None if isinstance(v, float) and v != v else v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in table.to_dict("records")
    ]


@dataclass
class ReviewDesk:
    """The champion (or any bundle) with the catalog under review and the drops folder, if given."""

    bundle: ModelBundle
    model_uri: str = ""
    catalog_dir: Path | None = None
    drops_dir: Path | None = None
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _audit: AuditResult | None = field(default=None, repr=False)
    _drops: dict[str, tuple[str, dict]] = field(default_factory=dict, repr=False)
    _rows: dict[Path, tuple[int, pd.DataFrame]] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.predictor = ShoePredictor(self.bundle, max_pixels=self.validate.max_image_pixels)
        spec = self.bundle.spec
        self.threshold = spec.review_threshold if spec.review_threshold is not None else UNCERTAIN_WITHOUT_THRESHOLD
        self.threshold_source = "validation" if spec.review_threshold is not None else "default (model predates it)"
        # Whether the model learnt this very catalog (hashed once, at start: its doubts are then in-sample).
        self.catalog_in_sample = self.catalog_dir is not None and learnt_catalog(
            self.bundle, hash_drop(self.catalog_dir)
        )

    # -- classify ---------------------------------------------------------------------------------

    def about(self) -> dict:
        return {
            "model": self.model_uri,
            "classes": list(self.bundle.classes),
            "attributes": list(self.bundle.text_columns),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "catalog": self.catalog_dir.name if self.catalog_dir else None,
            "catalog_in_sample": self.catalog_in_sample,
            "drops": self.drop_names(),
        }

    def predict(
        self, image: bytes | None, title: str | None, attributes: dict[str, str], explain: bool = True, k: int = 6
    ) -> dict:
        """The champion's answer for one product: calibrated probabilities, the needs-review flag,
        the k most similar catalog products and, with `explain`, a map per image branch and word weights."""
        started = time.perf_counter()
        photo = None
        if image:
            if len(image) > self.validate.max_image_bytes:
                raise ValueError(f"image is over {self.validate.max_image_bytes:,} bytes")
            try:
                photo = open_image_bounded(io.BytesIO(image), self.validate.max_image_pixels)
            except (OSError, ValueError) as exc:
                raise ValueError(f"image: {exc}") from None
        title = (title or "").strip() or None
        row = pd.DataFrame([{"title": title, **{c: attributes.get(c) or None for c in self.bundle.text_columns}}])
        text = product_texts(row, self.bundle.text_columns)[0]
        if photo is None and text is None:
            raise ValueError("give a photo, a title, or both")
        with self._lock:
            letterboxed = None if photo is None else self.predictor.transform.letterbox(photo)
            probs, embedding = self.predictor.forward([letterboxed], [text])
            probabilities = {c: float(p) for c, p in zip(self.bundle.classes, probs[0], strict=True)}
            category = max(probabilities, key=probabilities.get)
            answer = {
                "category": category,
                "probability": probabilities[category],
                "probabilities": dict(sorted(probabilities.items(), key=lambda kv: -kv[1])),
                "uncertain": probabilities[category] < self.threshold,
                "threshold": self.threshold,
                "similar": self._similar(embedding, k),
            }
            if explain:
                answer["explanation"] = self._explain(photo, text, category)
        answer["elapsed_ms"] = round(1000 * (time.perf_counter() - started), 1)
        return answer

    def _similar(self, embedding: np.ndarray, k: int) -> list[dict]:
        index = self.bundle.index
        if index is None or k <= 0:
            return []
        found = index.results(embedding, k)[0]
        return [
            {
                "product_id": str(r.product_id),
                "title": str(r.title),
                "category": str(r.category),
                "score": round(float(r.score), 4),
                "thumbnail": thumbnail_url("index", str(r.product_id)),
            }
            for r in found.itertuples()
        ]

    def _explain(self, photo: Image.Image | None, text: str | None, category: str) -> dict:
        from pytorch_grad_cam.utils.image import show_cam_on_image

        from kickvision.evaluate.explain import explain_product

        explanation = explain_product(self.bundle, photo, text, category)
        rgb = explanation.image.astype(np.float32) / 255
        return {
            "photo": png_data_url(explanation.image) if photo is not None else None,
            "overlays": {
                name.split("_", 1)[1]: png_data_url(show_cam_on_image(rgb, cam, use_rgb=True))
                for name, cam in explanation.cams.items()
            },
            "overlay_methods": {name.split("_", 1)[1]: method for name, method in explanation.cam_methods.items()},
            "words": [{"word": w, "weight": round(v, 4)} for w, v in explanation.words if any(c.isalnum() for c in w)],
        }

    # -- thumbnails ------------------------------------------------------------------------------

    def thumbnail(self, source: str, product_id: str) -> bytes:
        """A small JPEG of a product of the index, the catalog or a drop (`drop:<name>`); NotFound if unknown.

        The product is looked up by id; paths come from the model's index or a validated catalog, never
        from the request."""
        if source == "index" and self.bundle.index is not None:
            items = self.bundle.index.items
            hits = items.loc[items["product_id"].astype(str) == product_id, "image"]
            path = Path(hits.iloc[0]) if len(hits) and isinstance(hits.iloc[0], str) else None
        elif source == "catalog" and self.catalog_dir is not None:
            path = self._catalog_image(self.catalog_dir, product_id)
        elif source.startswith("drop:") and source[5:] in self.drop_names():
            path = self._catalog_image(self.drops_dir / source[5:], product_id)
        else:
            path = None
        if path is None or not path.is_file():
            raise NotFound(product_id)
        try:
            return jpeg_thumbnail(path, THUMBNAIL_PX, self.validate.max_image_pixels)
        except (OSError, ValueError):  # a row validation would quarantine: no picture to show
            raise NotFound(product_id) from None

    def _catalog_rows(self, root: Path) -> pd.DataFrame:
        """The catalog's rows (corrections applied), re-read only when catalog.csv changes."""
        stamp = (root / "catalog.csv").stat().st_mtime_ns
        cached = self._rows.get(root)
        if cached is None or cached[0] != stamp:
            cached = self._rows[root] = (stamp, read_catalog(root, content_hash="-").rows)
        return cached[1]

    def _catalog_image(self, root: Path, product_id: str) -> Path | None:
        rows = self._catalog_rows(root)
        hits = rows.loc[rows["product_id"].astype(str) == product_id, "image"] if "product_id" in rows else []
        return resolve_inside(root, hits.iloc[0]) if len(hits) and isinstance(hits.iloc[0], str) else None

    # -- audit and corrections -------------------------------------------------------------------

    def audit(self, refresh: bool = False, top: int = 200) -> dict:
        if self.catalog_dir is None:
            raise KickvisionError("no catalog under review: start the desk with --catalog DIR")
        with self._lock:
            if self._audit is None or refresh:
                self._audit = audit_catalog(self.catalog_dir, self.bundle, self.validate, self.catalog_in_sample)
        table = self._audit.table
        shown = table.head(top).drop(columns=["image"], errors="ignore")
        return {
            "catalog": self.catalog_dir.name,
            "products": len(table),
            "doubted": int(table["label_issue"].sum()),
            "duplicates": int((table["duplicate_of"] != "").sum()),
            "quarantined": len(self._audit.quarantine),
            "corrections": self._audit.catalog.corrections,
            "rows": _records(
                shown.assign(thumbnail=[thumbnail_url("catalog", i) for i in shown["product_id"].astype(str)])
            ),
        }

    def correct(self, product_id: str, action: str, category: str = "", note: str = "", reviewer: str = "") -> dict:
        """Append a reviewer's decision to the catalog's corrections.csv (the catalog is not rewritten)."""
        if self.catalog_dir is None:
            raise KickvisionError("no catalog under review: start the desk with --catalog DIR")
        rows = self._catalog_rows(self.catalog_dir)
        if "product_id" not in rows or product_id not in set(rows["product_id"].astype(str)):
            raise NotFound(product_id)
        known = set(self.bundle.classes) | set(rows["category"].dropna().astype(str) if "category" in rows else [])
        if action == "relabel" and category not in known:  # a typo would make a one-product category
            raise ValueError(f"relabel to '{category}': not a category of the model or the catalog")
        record = append_correction(self.catalog_dir, product_id, action, category, note, reviewer)
        if self._audit is not None:  # the ranking stays; the row shows the decision
            table = self._audit.table
            label = f"relabel: {category}" if action == "relabel" else action
            table.loc[table["product_id"] == product_id, "reviewed"] = label
        return record

    # -- drops ------------------------------------------------------------------------------------

    def drop_names(self) -> list[str]:
        if self.drops_dir is None or not self.drops_dir.is_dir():
            return []
        return sorted(p.name for p in self.drops_dir.iterdir() if p.is_dir() and (p / "catalog.csv").is_file())

    def drop_report(self, name: str, top: int = 100) -> dict:
        """What the model predicts for a drop, where it disagrees with the drop's labels, and its drift."""
        if name not in self.drop_names():  # only folders the listing shows: no path from the request
            raise NotFound(name)
        folder = self.drops_dir / name
        content = hash_drop(folder)
        cached = self._drops.get(name)
        if cached and cached[0] == content:
            return cached[1]
        with self._lock:
            try:
                audited = audit_catalog(folder, self.bundle, self.validate)
            except CatalogError as exc:
                return {"drop": name, "error": str(exc)}
        table = audited.table
        known = table["issue"] != "category unknown to the model"
        disagree = table[known & (table["predicted"] != table["category"])]
        drift = None
        if self.bundle.index is not None:
            categories = audited.catalog.rows["category"].astype(str).tolist()
            predicted = [self.bundle.classes[i] for i in audited.views.fused.argmax(1)]
            drift = drift_report(
                audited.views.embeddings,
                audited.catalog.rows["product_id"].astype(str).tolist(),
                categories,
                predicted,
                self.bundle.index,
                list(self.bundle.classes),
                self.bundle.spec.val_top1,
                command=f"kickvision update --drop {folder}",
            )
        shown = disagree.head(top).drop(columns=["image"], errors="ignore")
        report = {
            "drop": name,
            "products": len(table),
            "quarantined": len(audited.quarantine),
            "agree": float((table.loc[known, "predicted"] == table.loc[known, "category"]).mean())
            if known.any()
            else None,
            "disagreements": _records(
                shown.assign(thumbnail=[thumbnail_url(f"drop:{name}", i) for i in shown["product_id"].astype(str)])
            ),
            "drift": drift.to_dict() if drift else None,
        }
        self._drops[name] = (content, report)
        return report
