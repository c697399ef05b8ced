"""Smoke test on ~300 real products of ../shared/data/fashion-footwear (read in place, never copied)."""

import numpy as np
import pytest

from kickvision.data.catalog import read_catalog
from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import prepare_catalog
from kickvision.data.validation import quarantine_bad_rows
from kickvision.evaluate.metrics import evaluate_bundle
from kickvision.model.encoders import build_tokenizer
from kickvision.train.fit import fit
from tests.conftest import REAL_DATA

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (REAL_DATA / "catalog.csv").is_file(), reason=f"real data not present at {REAL_DATA}"),
]


def test_real_catalog_validates_trains_and_evaluates(tiny_config):
    catalog = read_catalog(REAL_DATA)
    assert len(catalog.rows) == 7882
    # ~300 rows, every class represented, so the smoke run stays fast
    picked = catalog.rows.groupby("category").sample(n=40, random_state=0)
    catalog.rows = picked.reset_index(drop=True)
    result = quarantine_bad_rows(catalog, tiny_config.validate_)
    assert result.good_rows >= 0.95 * len(picked), result.summary()

    model_cfg = tiny_config.model
    tokenizer = build_tokenizer(model_cfg.text_encoder)
    data = prepare_catalog(result.catalog, tokenizer, resolve_image_transform(model_cfg), tiny_config.data, seed=0)
    assert len(data.classes) == 8 and data.images.shape[1:] == (32, 32, 3)
    train_cfg = tiny_config.train.model_copy(update={"epochs": 1})
    fitted = fit(data, model_cfg, train_cfg, tokenizer, tiny_config.data.max_title_tokens, progress=False)
    report = evaluate_bundle(fitted.bundle, data)
    assert report.confusion.sum() == len(data.indices("test"))
    assert report.metrics["test_top1"] == pytest.approx(np.trace(report.confusion) / report.confusion.sum())
