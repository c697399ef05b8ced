"""Row-level validation of a catalog drop with Great Expectations 1.x.

Two stages: `probe_images` looks at every image file (path safety, existence, size, decoding,
content hash) and writes what it saw into columns; a GX expectation suite then checks those columns
and the catalog's own columns. Every row that fails any expectation is quarantined with the
reasons, so each row of a drop is either used or set aside with an explanation.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import pandas as pd
from PIL import Image, UnidentifiedImageError

from kickvision.config import ValidateConfig
from kickvision.data.catalog import REQUIRED_COLUMNS, Catalog, resolve_inside
from kickvision.data.images import IMAGE_FORMATS

log = logging.getLogger(__name__)

IMAGE_OK = "ok"


@dataclass
class ValidationResult:
    """Good rows (ready for preprocessing) and quarantined rows with a `reason` column."""

    catalog: Catalog
    quarantine: pd.DataFrame
    total_rows: int
    reason_counts: dict[str, int] = field(default_factory=dict)
    data_docs_html: str = ""  # GX's Data Docs page of the expectation suite's results

    @property
    def good_rows(self) -> int:
        return len(self.catalog.rows)

    def summary(self) -> str:
        lines = [f"{self.good_rows} of {self.total_rows} rows passed validation, {len(self.quarantine)} quarantined"]
        lines += [f"  {count:>6}  {reason}" for reason, count in self.reason_counts.items()]
        decided = self.catalog.corrections
        if any(decided.values()):
            lines.append("reviewer corrections applied: " + ", ".join(f"{v} {k}" for k, v in decided.items() if v))
        return "\n".join(lines)


def probe_image(root, relative: str | None, cfg: ValidateConfig) -> tuple[str, str | None, int, int]:
    """(status, sha1, width, height) for one image path; status is IMAGE_OK or the problem."""
    if relative is None:
        return "image path is empty", None, 0, 0
    path = resolve_inside(root, relative)
    if path is None:
        return f"image path escapes the drop folder: {relative}", None, 0, 0
    if not path.is_file():
        return f"image file not found: {relative}", None, 0, 0
    size = path.stat().st_size
    if size == 0:
        return f"image file is empty (0 bytes): {relative}", None, 0, 0
    if size > cfg.max_image_bytes:
        return f"image file is {size:,} bytes, over the {cfg.max_image_bytes:,}-byte limit", None, 0, 0
    data = path.read_bytes()
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            width, height = img.size  # header only: the pixel limit is checked before decoding
            if width * height > cfg.max_image_pixels:
                return f"image is {width}x{height}, over the {cfg.max_image_pixels:,}-pixel limit", None, width, height
            img.load()  # full decode catches truncated files that verify() lets through
    except UnidentifiedImageError:
        return f"image does not decode as {'/'.join(IMAGE_FORMATS)}: {relative}", None, 0, 0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"image does not decode ({type(exc).__name__}): {relative}", None, 0, 0
    if min(width, height) < cfg.min_image_side:
        return f"image is {width}x{height}, under the {cfg.min_image_side}-pixel minimum side", None, width, height
    return IMAGE_OK, hashlib.sha1(data).hexdigest(), width, height


def probe_images(catalog: Catalog, cfg: ValidateConfig) -> pd.DataFrame:
    """The catalog rows plus `_image_status`, `image_sha1`, `image_width`, `image_height`."""
    rows = catalog.rows.copy()
    paths = rows["image"] if "image" in rows else pd.Series([None] * len(rows))
    probes = [probe_image(catalog.root, p, cfg) for p in paths]
    rows["_image_status"] = [p[0] for p in probes]
    rows["image_sha1"] = [p[1] for p in probes]
    rows["image_width"] = [p[2] for p in probes]
    rows["image_height"] = [p[3] for p in probes]
    return rows


def _expectation_suite(columns: list[str], cfg: ValidateConfig):
    """GX expectations with the quarantine reason each one stands for."""
    import great_expectations as gx

    checks = []
    for column in REQUIRED_COLUMNS:
        if column in columns:
            checks.append((gx.expectations.ExpectColumnValuesToNotBeNull(column=column), f"{column} is empty"))
    if "product_id" in columns:
        checks.append(
            (gx.expectations.ExpectColumnValuesToBeUnique(column="product_id"), "product_id appears more than once")
        )
    if "title" in columns:
        checks.append(
            (
                gx.expectations.ExpectColumnValueLengthsToBeBetween(
                    column="title", min_value=cfg.title_min_chars, max_value=cfg.title_max_chars
                ),
                f"title length outside {cfg.title_min_chars}..{cfg.title_max_chars} characters",
            )
        )
    if "category" in columns and cfg.allowed_categories:
        checks.append(
            (
                gx.expectations.ExpectColumnValuesToBeInSet(column="category", value_set=cfg.allowed_categories),
                "category is not one of validate.allowed_categories",
            )
        )
    # The image probe's own message is the reason, so this check's label is only a fallback.
    checks.append((gx.expectations.ExpectColumnValuesToBeInSet(column="_image_status", value_set=[IMAGE_OK]), None))
    return checks


def _gx_context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def quarantine_bad_rows(
    catalog: Catalog, cfg: ValidateConfig, known_categories: list[str] | None = None
) -> ValidationResult:
    """Split a drop into good rows and quarantined rows (each with its reasons, `; `-joined).

    `known_categories` (a drop for an existing model) are exempt from `min_rows_per_class`: the
    model already knows them, so a drop may bring just a few new products of one.
    """
    import great_expectations as gx

    probed = probe_images(catalog, cfg).reset_index(drop=True)
    total = len(probed)
    reasons: list[list[str]] = [[] for _ in range(total)]

    missing = [c for c in REQUIRED_COLUMNS if c not in probed.columns]
    for column in missing:  # a missing column makes every row unusable
        for row_reasons in reasons:
            row_reasons.append(f"catalog.csv has no '{column}' column")

    context = _gx_context()
    batch = (
        context.data_sources.add_pandas("catalog")
        .add_dataframe_asset("rows")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": probed})
    )
    checks = _expectation_suite(list(probed.columns), cfg)
    suite = context.suites.add(gx.ExpectationSuite(name="catalog_rows", expectations=[c for c, _ in checks]))
    results = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    labels = {c.expectation_type + str(c.column): label for c, label in checks}
    for result in results.results:
        config = result.expectation_config
        if result.exception_info and result.exception_info.get("raised_exception"):
            raise RuntimeError(f"GX expectation {config.type} failed to run: {result.exception_info}")
        label = labels[config.type + str(config.kwargs.get("column"))]
        for index in result.result.get("unexpected_index_list") or []:
            reasons[index].append(label or probed.at[index, "_image_status"])

    if catalog.exclusions and "product_id" in probed:  # a reviewer's decision (data/corrections.py)
        for index, product_id in probed["product_id"].items():
            if product_id in catalog.exclusions:
                reasons[index].append(catalog.exclusions[product_id])

    # New categories too rare to appear in every split are set aside, not silently dropped.
    ok = [not r for r in reasons]
    known = set(known_categories or [])
    if "category" in probed:
        counts = probed.loc[ok, "category"].value_counts()
        for index in probed.index[ok]:
            n = counts.get(probed.at[index, "category"], 0)
            if n < cfg.min_rows_per_class and probed.at[index, "category"] not in known:
                reasons[index].append(
                    f"category has too few good rows: '{probed.at[index, 'category']}' has {n} "
                    f"(validate.min_rows_per_class is {cfg.min_rows_per_class})"
                )

    bad = pd.Series([bool(r) for r in reasons])
    quarantine = probed.loc[bad].drop(columns=["_image_status"]).copy()
    quarantine["reason"] = ["; ".join(r) for r in reasons if r]
    good = probed.loc[~bad].drop(columns=["_image_status"]).reset_index(drop=True)
    counts = pd.Series([_reason_kind(x) for r in reasons for x in r]).value_counts()
    log.info("validation: %d good, %d quarantined of %d rows", len(good), int(bad.sum()), total)
    return ValidationResult(
        catalog=Catalog(
            root=catalog.root, rows=good, content_hash=catalog.content_hash, corrections=catalog.corrections
        ),
        quarantine=quarantine.reset_index(drop=True),
        total_rows=total,
        reason_counts={str(k): int(v) for k, v in counts.items()},
        data_docs_html=render_data_docs(results),
    )


def render_data_docs(results) -> str:
    """GX's Data Docs validation page for `results`, as one HTML document (styles from GX's CDN)."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(results))


def _reason_kind(reason: str) -> str:
    """A reason without its row-specific detail (after ': '), so counts group by kind."""
    return reason.split(": ")[0]


def usable_or_raise(result: ValidationResult, cfg: ValidateConfig) -> None:
    """Raise one clear CatalogError when too few good rows remain for a meaningful run."""
    from kickvision.errors import CatalogError

    needed = max(cfg.min_good_rows, int(cfg.min_good_fraction * result.total_rows + 0.999))
    if result.good_rows < needed:
        top = ", ".join(f"{reason} ({count})" for reason, count in list(result.reason_counts.items())[:3])
        raise CatalogError(
            f"catalog drop '{result.catalog.name}' is unusable: {result.good_rows} of "
            f"{result.total_rows} rows passed validation, at least {needed} are needed "
            f"(validate.min_good_rows / min_good_fraction); most common problems: {top or 'none'}"
        )
