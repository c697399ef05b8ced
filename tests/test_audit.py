"""The catalog audit: doubted labels first, repeated listings found, every catalog row accounted for."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from kickvision.cli import main as cli_main
from kickvision.evaluate.audit import ModelViews, audit_products, near_duplicates
from kickvision.serve.pyfunc_logging import example_frame, log_pyfunc

CLASSES = ["Boots", "Flats", "Heels", "Sandals"]


def synthetic_catalog(n: int = 200, flips: int = 10, seed: int = 0):
    """Products whose model probabilities favour their true class; `flips` of them carry another label."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, 1, (n, len(CLASSES)))
    logits[np.arange(n), truth] += 4
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = truth.copy()
    flipped = rng.choice(n, flips, replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, len(CLASSES), flips)) % len(CLASSES)
    rows = pd.DataFrame(
        {
            "product_id": [f"P{i:04d}" for i in range(n)],
            "category": [CLASSES[c] for c in given],
            "title": [f"product {i}" for i in range(n)],
            "image_sha1": [f"sha{i}" for i in range(n)],
        }
    )
    embeddings = rng.normal(0, 1, (n, 16)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    title_says_the_label = np.eye(len(CLASSES))[given]  # titles written to match the (possibly wrong) label
    views = ModelViews(CLASSES, probabilities, probabilities, title_says_the_label, embeddings)
    return rows, views, set(rows["product_id"].iloc[flipped])


def test_the_mislabelled_products_come_first_and_confident_learning_flags_them():
    rows, views, flipped = synthetic_catalog()
    audit = audit_products(rows, views)
    assert len(audit) == len(rows) and audit["rank"].tolist() == list(range(1, len(rows) + 1))
    top = set(audit["product_id"].head(len(flipped)))
    assert len(top & flipped) >= 0.8 * len(flipped)
    doubted = audit[audit["label_issue"]]
    assert set(doubted["product_id"]) >= flipped  # flagged: every wrong label, and they rank high
    assert doubted["rank"].mean() < audit.loc[~audit["label_issue"], "rank"].mean()
    first = audit.iloc[0]
    assert first["predicted"] != first["category"] and first["disagrees"] == "photo"
    assert first["suspicion"] == pytest.approx(1 - first["p_category"])


def test_a_category_the_model_does_not_know_is_listed_last_and_not_judged():
    rows, views, _ = synthetic_catalog()
    rows.loc[3, "category"] = "Clogs"
    audit = audit_products(rows, views)
    last = audit.iloc[-1]
    assert last["product_id"] == "P0003" and last["issue"] == "category unknown to the model"
    assert np.isnan(last["suspicion"]) and not last["label_issue"]


def test_repeated_photos_titles_and_near_identical_embeddings_are_named_with_their_labels():
    rows, views, _ = synthetic_catalog(n=20, flips=0)
    rows.loc[5, "image_sha1"] = rows.loc[2, "image_sha1"]  # the same photo bytes under two ids
    rows.loc[7, "title"] = "  PRODUCT 6 "  # the same title but for case and spacing
    rows.loc[7, "category"] = "Heels" if rows.loc[6, "category"] != "Heels" else "Boots"
    views.embeddings[9] = views.embeddings[8]
    found = near_duplicates(rows, views.embeddings).set_index(rows["product_id"])
    assert found.loc["P0005", "duplicate_of"] == "P0002" and found.loc["P0005", "duplicate_kind"] == "same photo"
    assert found.loc["P0007", "duplicate_of"] == "P0006" and found.loc["P0007", "duplicate_label"] == "different"
    assert found.loc["P0009", "duplicate_of"] == "P0008" and found.loc["P0009", "duplicate_kind"].startswith(
        "embedding cosine 1.000"
    )
    assert (found.loc["P0011"] == "").all()


@pytest.mark.integration
def test_audit_ranks_a_catalog_with_the_model_and_accounts_for_every_row(
    shared_trained, learnt_data, mlflow_client, tmp_path, capsys
):
    from kickvision.data.demo import write_demo_catalog

    with mlflow.start_run():
        uri = log_pyfunc(shared_trained, example_frame(learnt_data)).model_uri
    drop = write_demo_catalog(tmp_path / "drop", n_per_class=12, seed=3, image_size=32)
    catalog = pd.read_csv(drop / "catalog.csv", dtype=str)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(catalog), 8, replace=False)
    categories = sorted(catalog["category"].unique())
    for i in flipped:  # a wrong label, as a merchandiser might file it
        catalog.loc[i, "category"] = next(c for c in categories if c != catalog.loc[i, "category"])
    flipped_ids = set(catalog["product_id"].iloc[flipped])
    rare = categories[-1]  # a category the model knows, with two products in this catalog
    catalog = pd.concat([catalog[catalog["category"] != rare], catalog[catalog["category"] == rare].head(2)])
    broken = catalog.iloc[[0]].assign(product_id="BROKEN", image="images/missing.png")
    pd.concat([catalog, broken]).to_csv(drop / "catalog.csv", index=False)

    out, page = tmp_path / "audit.csv", tmp_path / "audit.html"
    code = cli_main(["audit", "--catalog", str(drop), "--model-uri", uri, "--out", str(out), "--html", str(page)])
    assert code == 0
    audit = pd.read_csv(out, dtype={"product_id": str})
    assert sorted(audit["product_id"]) == sorted([*catalog["product_id"], "BROKEN"])  # every row, once
    assert audit.set_index("product_id").loc["BROKEN", "issue"].startswith("quarantined: image file not found")
    scored = audit[audit["rank"].notna()]
    assert (scored["category"] == rare).sum() == 2  # audited, not set aside as "too few rows"
    is_flipped = scored["product_id"].isin(flipped_ids)
    assert scored.loc[is_flipped, "suspicion"].mean() > scored.loc[~is_flipped, "suspicion"].mean() + 0.2
    html = page.read_text()
    assert html.count("<tr") >= 10 and "data:image/jpeg;base64," in html and "http" not in html.lower()
    assert "labels doubted (confident learning)" in capsys.readouterr().out


def test_the_audit_judges_each_label_by_the_model_and_its_own_title_view(
    shared_trained, learnt_data, tiny_config, tmp_path
):
    from kickvision.data.demo import write_demo_catalog
    from kickvision.evaluate.catalog_audit import second_judge, text_second_opinion
    from kickvision.review.service import audit_catalog

    drop = write_demo_catalog(tmp_path / "drop", n_per_class=6, seed=4, image_size=32)
    result = audit_catalog(drop, shared_trained, tiny_config.validate_)
    views, rows = result.views, result.catalog.rows.reset_index(drop=True)
    assert views.title is not None and not np.allclose(views.title, views.fused)
    label = np.array([views.classes.index(c) for c in rows["category"]])
    judged = (views.fused + views.title) / 2  # the title view is the second judge, not a refitted text model
    expected = pd.Series(1 - judged[np.arange(len(rows)), label], index=rows["product_id"].astype(str))
    suspicion = result.table.set_index("product_id")["suspicion"]
    np.testing.assert_allclose(suspicion.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=1e-6)
    # Where the title view would add nothing (a model without a photo or a title branch) or would vouch
    # for labels it learnt (a catalog the model was trained on), the text model cross-fitted on the
    # audited products judges instead.
    cross_fitted = text_second_opinion(rows, list(views.classes), [])
    assert cross_fitted is not None and not np.allclose(cross_fitted, views.title)
    for one_branch in (
        ModelViews(views.classes, views.fused, views.photo, None, views.embeddings),
        ModelViews(views.classes, views.fused, None, views.title, views.embeddings),
    ):
        np.testing.assert_array_equal(second_judge(one_branch, rows, []), cross_fitted)
    np.testing.assert_array_equal(second_judge(views, rows, [], in_sample=True), cross_fitted)
    learnt = audit_catalog(learnt_data.catalog_root, shared_trained, tiny_config.validate_)  # its training catalog
    learnt_rows = learnt.catalog.rows.reset_index(drop=True)
    opinion = text_second_opinion(learnt_rows, list(views.classes), list(shared_trained.text_columns))
    label = np.array([views.classes.index(c) for c in learnt_rows["category"]])
    expected = 1 - ((learnt.views.fused + opinion) / 2)[np.arange(len(learnt_rows)), label]
    got = learnt.table.set_index("product_id").loc[learnt_rows["product_id"].astype(str), "suspicion"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_audit_into_a_missing_folder_is_one_error_line_before_any_work(tmp_path, capsys):
    code = cli_main(["audit", "--catalog", str(tmp_path), "--out", str(tmp_path / "no" / "audit.csv")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out") and "does not exist" in err[0]


def test_the_pipeline_audit_judges_every_product_with_a_model_that_did_not_learn_it(shared_trained, learnt_data):
    import copy

    from kickvision.evaluate.catalog_audit import MODEL_JUDGE, TEXT_JUDGE, catalog_audit

    data = copy.copy(learnt_data)
    data.rows = learnt_data.rows.copy()
    rng = np.random.default_rng(1)
    flipped = []
    for split, n in (("train", 8), ("test", 4)):  # wrong labels where each judge looks
        for i in rng.choice(data.indices(split), n, replace=False):
            label = (data.rows.at[i, "label"] + 1) % len(data.classes)
            data.rows.loc[i, ["label", "category"]] = [label, data.classes[label]]
            flipped.append(data.rows.at[i, "product_id"])

    audit = catalog_audit(shared_trained, data, folds=3, seed=0)
    assert sorted(audit["product_id"]) == sorted(data.rows["product_id"])  # every product, once
    judges = audit.set_index("product_id")["audited_by"]
    split = data.rows.set_index("product_id")["split"]
    assert (judges[split[split == "train"].index] == TEXT_JUDGE).all()  # never the model that learnt them
    assert (judges[split[split != "train"].index] == MODEL_JUDGE).all()
    assert list(audit["rank"]) == list(range(1, len(audit) + 1))
    # The held-out products: the mean of the model's fused and title-only probabilities of the label.
    from kickvision.evaluate.calibration import softmax
    from kickvision.model.predict import predict_logits

    held = np.flatnonzero(data.rows["split"].to_numpy() != "train")
    t = shared_trained.spec.temperature
    fused = softmax(predict_logits(shared_trained.model.eval(), data, held)[0], t)
    title = softmax(predict_logits(shared_trained.model, data, held, use_image=False)[0], t)
    assert not np.allclose(title, fused)  # the title view is a judge of its own here
    expected = 1 - (fused + title)[np.arange(len(held)), data.labels()[held]] / 2
    got = audit.set_index("product_id").loc[data.rows["product_id"].iloc[held], "suspicion"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for judge, rows in audit.groupby("audited_by"):  # each judge doubts the wrong labels it sees
        wrong = rows["product_id"].isin(flipped)
        assert rows.loc[wrong, "suspicion"].mean() > rows.loc[~wrong, "suspicion"].mean() + 0.2, judge
    assert audit["product_id"].head(len(audit) // 3).isin(flipped).sum() >= 0.75 * len(flipped)


def test_a_second_independent_judge_finds_more_of_the_wrong_labels():
    rng = np.random.default_rng(5)
    n, flips = 600, 24
    truth = rng.integers(0, len(CLASSES), n)

    def judge():  # a weak judge: the true class a little ahead, its own noise
        logits = rng.normal(0, 1, (n, len(CLASSES)))
        logits[np.arange(n), truth] += 1.5
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    model, text = judge(), judge()
    given = truth.copy()
    flipped = rng.choice(n, flips, replace=False)
    given[flipped] = (truth[flipped] + 1) % len(CLASSES)
    rows = pd.DataFrame({"product_id": [f"P{i}" for i in range(n)], "category": [CLASSES[c] for c in given]})
    rows["title"] = [f"t{i}" for i in range(n)]
    embeddings = np.eye(n, 16, dtype=np.float32)
    views = ModelViews(CLASSES, model, None, None, embeddings)
    wrong = set(rows["product_id"].iloc[flipped])

    def found(audit):
        return audit["product_id"].head(2 * flips).isin(wrong).sum()

    assert found(audit_products(rows, views, second_opinion=text)) > found(audit_products(rows, views))


@pytest.mark.parametrize("titles", ["kept", "one-letter words"])
def test_the_pipeline_audit_lists_every_product_of_a_tiny_catalog_it_cannot_cross_fit(
    shared_trained, learnt_data, titles
):
    import copy

    from kickvision.evaluate.catalog_audit import catalog_audit

    rows = learnt_data.rows
    first, second = learnt_data.classes[:2]
    keep = np.concatenate(
        [np.flatnonzero(rows["category"] == first), np.flatnonzero(rows["category"] == second)[:3]]
    )  # two categories, one of them with 3 products: as validation allows
    data = copy.copy(learnt_data)
    data.rows = rows.iloc[keep].reset_index(drop=True)
    if titles != "kept":
        data.rows["title"] = "a b c"
    for name in ("images", "input_ids", "attention_mask"):
        setattr(data, name, getattr(learnt_data, name)[keep])
    audit = catalog_audit(shared_trained, data, folds=5)
    assert sorted(audit["product_id"]) == sorted(data.rows["product_id"])  # every product, judged or not
