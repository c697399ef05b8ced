"""Photo pretraining: title alignment learns, its encoders travel as a pickle-free artifact into training."""

import math
import re

import numpy as np
import pytest
import torch

from kickvision.data.synthetic import region_catalog
from kickvision.errors import ConfigError
from kickvision.evaluate.metrics import evaluate_bundle
from kickvision.evaluate.model_card import render_model_card
from kickvision.model.bundle import load_bundle, save_bundle
from kickvision.model.encoders import build_tokenizer
from kickvision.model.net import build_model
from kickvision.model.photo_encoders import PhotoEncoders
from kickvision.train.engine import seed_everything
from kickvision.train.fit import fit
from kickvision.train.pretrain import (
    LabelContrastLoss,
    PhotoLabelLoss,
    PhotoOutputs,
    PhotoPretrainer,
    ViewAgreementLoss,
    embed_titles,
    knn_top1,
    linear_probe_top1,
    objective_losses,
    pretrain_photos,
    pretrain_validator,
)


@pytest.fixture(scope="module")
def pretrained(tiny_config, learnt_data):
    cfg = tiny_config.pretrain.model_copy(update={"enabled": True, "epochs": 3, "batch_size": 32, "probe_cs": (0.5,)})
    return pretrain_photos(learnt_data, tiny_config.model, cfg, tiny_config.train, seed=0, progress=False)


def test_title_alignment_finds_each_photos_title_better_than_chance(pretrained, learnt_data):
    encoders, metrics = pretrained
    n_val = len(learnt_data.indices("val"))
    chance = math.log(min(32, n_val))  # InfoNCE of an untrained model over a validation batch
    assert metrics["pretrain_val_loss"] < chance - 0.2
    assert 1 <= metrics["pretrain_best_epoch"] <= 3 and encoders.record.epochs == metrics["pretrain_best_epoch"]
    names = ["0_resnet18", "1_vit_tiny_patch16_224"]
    keys = {f"pretrain_{p}_top1_{n}{s}" for p in ("knn", "probe") for n in names for s in ("", "_scratch")}
    assert keys <= set(metrics) and all(0 <= metrics[k] <= 1 for k in keys)
    assert all(metrics[f"pretrain_probe_c_{n}{s}"] == 0.5 for n in names for s in ("", "_scratch"))  # probe_cs
    assert encoders.record.catalog_hash == learnt_data.catalog_hash and encoders.record.method == "title_alignment"


def test_photo_encoders_round_trip_and_start_the_model(pretrained, tiny_config, tmp_path):
    encoders, _ = pretrained
    loaded = PhotoEncoders.load(encoders.save(tmp_path / "enc"))
    assert loaded.record == encoders.record and loaded.names == encoders.names
    model = build_model(tiny_config.model, n_classes=3)
    loaded.apply_to(model)
    for encoder, state in zip(model.image_encoders, encoders.states, strict=True):
        assert encoder.pretrained_loaded
        for name, tensor in encoder.backbone.state_dict().items():
            torch.testing.assert_close(tensor, state[name], rtol=0, atol=0)
    assert PhotoEncoders.load(PhotoEncoders().save(tmp_path / "none")).record is None  # nothing pretrained

    only_resnet = tiny_config.model.model_copy(update={"image_encoders": tiny_config.model.image_encoders[:1]})
    with pytest.raises(ConfigError, match="pretrain again"):
        loaded.apply_to(build_model(only_resnet, n_classes=3))
    portrait = tiny_config.model.model_copy(update={"image_size": (48, 32)})  # the ViT's position table differs
    with pytest.raises(ConfigError, match="vit_tiny_patch16_224 does not fit the model .*image_size"):
        loaded.apply_to(build_model(portrait, n_classes=3))


def test_a_model_trained_from_pretrained_encoders_names_them_in_its_lineage_and_card(
    pretrained, tiny_config, learnt_data, tmp_path
):
    encoders, _ = pretrained
    tokenizer = build_tokenizer(tiny_config.model.text_encoder)
    train = tiny_config.train.model_copy(update={"epochs": 1})
    bundle = fit(learnt_data, tiny_config.model, train, tokenizer, 12, progress=False, photo_encoders=encoders).bundle
    assert bundle.spec.lineage.photo_pretraining == encoders.record
    assert all(bundle.spec.training.pretrained[f"image_{i}_{n}"] for i, n in enumerate(encoders.names))
    reloaded = load_bundle(save_bundle(bundle, tmp_path / "b"))
    assert reloaded.spec.lineage.photo_pretraining == encoders.record
    card = render_model_card(reloaded, evaluate_bundle(reloaded, learnt_data), learnt_data, "kickvision")
    assert "pretrained on the catalog's own photos (title_alignment" in card and "resnet18 (pretrained)" in card
    untrained_then_pretrained = r"0_resnet18 \d\.\d{3} -> \d\.\d{3}, 1_vit_tiny_patch16_224 \d\.\d{3} -> \d\.\d{3}"
    assert re.search(rf"k-NN: {untrained_then_pretrained}; linear probe: {untrained_then_pretrained}\.", card)
    scratch = fit(learnt_data, tiny_config.model, train, tokenizer, 12, progress=False).bundle
    assert scratch.spec.lineage.photo_pretraining is None
    assert "trained from scratch with the rest of the model" in render_model_card(
        scratch, evaluate_bundle(scratch, learnt_data), learnt_data, "kickvision"
    )


def test_knn_top1_is_perfect_for_separated_classes_and_follows_the_neighbours():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    vectors = torch.nn.functional.normalize(torch.eye(3)[labels] + 0.05 * torch.randn(60, 3), dim=1)
    assert knn_top1(vectors[:45], labels[:45], vectors[45:], labels[45:], k=5) == 1.0
    shuffled = rng.permutation(labels[:45])
    assert knn_top1(vectors[:45], shuffled, vectors[45:], labels[45:], k=5) < 0.8


def test_linear_probe_separates_linearly_separable_classes_and_not_shuffled_labels():
    labels = np.arange(300) % 3
    vectors = torch.eye(3)[labels] + 0.2 * torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
    top1, c = linear_probe_top1(vectors[:240], labels[:240], vectors[240:], labels[240:], cs=(0.01, 1.0))
    assert top1 >= 0.95 and c in (0.01, 1.0)
    shuffled = np.random.default_rng(0).permutation(labels[:240])
    assert linear_probe_top1(vectors[:240], shuffled, vectors[240:], labels[240:], cs=(1.0,))[0] < 0.6
    # the probe fits the training vectors only: the query labels never reach it
    assert linear_probe_top1(vectors[:240], labels[:240], vectors[240:], (labels[240:] + 1) % 3, cs=(1.0,))[0] < 0.05
    # C is the L2 strength: a vanishing one leaves only the intercept, which names the commonest class
    skewed = np.r_[np.zeros(180, int), np.ones(60, int)]
    vectors = torch.eye(2)[skewed] + 0.2 * torch.randn(240, 2, generator=torch.Generator().manual_seed(1))
    queries = torch.eye(2)[[0, 1, 1, 1]]
    assert linear_probe_top1(vectors, skewed, queries, np.array([0, 1, 1, 1]), cs=(1.0,))[0] == 1.0
    assert linear_probe_top1(vectors, skewed, queries, np.array([0, 1, 1, 1]), cs=(1e-8,))[0] == 0.25


def test_linear_probe_chooses_its_strength_on_training_vectors_alone_and_keeps_a_class_seen_once():
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 2
    vectors = torch.from_numpy(np.c_[2 * labels + rng.normal(0, 1, 400), rng.normal(0, 1, (400, 200))]).float()
    cs = (1e-3, 1e4)
    top1, c = linear_probe_top1(vectors[:320], labels[:320], vectors[320:], labels[320:], cs)
    assert c in cs and 0.55 < top1 < 1
    flipped = linear_probe_top1(vectors[:320], labels[:320], vectors[320:], 1 - labels[320:], cs)
    assert flipped == (pytest.approx(1 - top1), c)  # the query labels score the probe, they choose nothing
    for position in range(0, 320, 16):  # a category of one training photo, in the fitted part or the held-out one
        rare = labels[:320].copy()
        rare[position] = 2
        assert 0.55 < linear_probe_top1(vectors[:320], rare, vectors[320:], labels[320:], cs)[0] < 1
    diverged = vectors[:320].clone()
    diverged[0, 0] = float("nan")
    assert np.isnan(linear_probe_top1(diverged, labels[:320], vectors[320:], labels[320:], cs)).all()


def test_an_update_keeps_naming_the_photo_encoders_its_champion_started_from(
    pretrained, shared_trained, tiny_config, tmp_path
):
    import copy

    from kickvision.data.demo import write_demo_drop
    from kickvision.train.update import update_bundle
    from tests.conftest import prepare_drop

    encoders, _ = pretrained
    champion = copy.deepcopy(shared_trained)
    champion.spec.lineage.photo_pretraining = encoders.record
    drop_dir = write_demo_drop(tmp_path / "drop", n_per_class=3, image_size=32, new_categories=False)
    drop = prepare_drop(drop_dir, tiny_config, champion.tokenizer, known_classes=champion.classes)
    cfg = tiny_config.continual.model_copy(update={"epochs": 1})
    updated = update_bundle(champion, drop, cfg, tiny_config.train, progress=False).bundle
    assert updated.spec.lineage.photo_pretraining == encoders.record


@pytest.mark.parametrize(
    "method,recipe",
    [
        ("views", {}),
        ("labels", {}),
        ("title_alignment+views+labels", {}),
        ("labels", {"mixup_alpha": 0.2, "ema_decay": 0.8}),  # mixed photos, weights averaged
    ],
)
def test_each_pretraining_objective_learns_from_the_training_photos_and_is_recorded(
    method, recipe, tiny_config, learnt_data
):
    update = {"enabled": True, "epochs": 6, "batch_size": 32, "lr": 3e-3, "method": method, **recipe}
    cfg = tiny_config.pretrain.model_copy(update=update)
    titles = (
        embed_titles(learnt_data.rows["title"].fillna("").tolist(), cfg.text_encoder) if "title" in method else None
    )
    seed_everything(0)
    untrained = PhotoPretrainer(tiny_config.model, cfg, 0 if titles is None else titles.shape[1], 7)
    validate = pretrain_validator(learnt_data, objective_losses(cfg, titles), cfg.batch_size, seed=0)
    before = validate(untrained)["val_loss"]
    assert validate(untrained)["val_loss"] == before  # the validation views repeat: epochs compare
    encoders, metrics = pretrain_photos(learnt_data, tiny_config.model, cfg, tiny_config.train, seed=0, progress=False)
    assert metrics["pretrain_val_loss"] < before - 0.05
    assert encoders.record.method == method and len(encoders.states) == 2


def test_view_agreement_is_near_zero_for_twins_and_near_chance_for_strangers():
    twins = torch.nn.functional.normalize(torch.eye(8, 16), dim=1)
    loss = ViewAgreementLoss(temperature=0.05)
    assert float(loss({}, PhotoOutputs(views=[(twins, twins.clone())]))) < 1e-3
    strangers = torch.nn.functional.normalize(torch.randn(256, 512, generator=torch.Generator().manual_seed(0)), dim=1)
    chance = math.log(2 * 128 - 1)
    assert float(ViewAgreementLoss(1.0)({}, PhotoOutputs(views=[(strangers[:128], strangers[128:])]))) == pytest.approx(
        chance, abs=0.05
    )


def test_label_contrast_pretraining_runs_end_to_end_and_moves_the_resnets_neighbourhoods(tiny_config):
    data = region_catalog("where", n=320, size=32, seed=0)  # the class is decided by where a square sits
    update = {
        "enabled": True,
        "epochs": 6,
        "batch_size": 32,
        "lr": 3e-3,
        "method": "label_contrast",
        "probe_cs": (0.5,),
    }
    cfg = tiny_config.pretrain.model_copy(update=update)
    encoders, metrics = pretrain_photos(data, tiny_config.model, cfg, tiny_config.train, seed=0, progress=False)
    name = f"0_{encoders.names[0]}"
    assert metrics[f"pretrain_knn_top1_{name}"] > metrics[f"pretrain_knn_top1_{name}_scratch"] + 0.1
    assert encoders.record.method == "label_contrast" and math.isfinite(metrics["pretrain_val_loss"])


def test_label_contrast_gathers_each_category_and_counts_a_photos_other_view_as_its_own():
    by_class = torch.eye(3)[torch.tensor([0, 0, 1, 1, 2, 2])]  # orthogonal categories, pairs that coincide
    loss = LabelContrastLoss(temperature=0.1)
    gathered = float(loss({"label": torch.tensor([0, 0, 1, 1, 2, 2])}, PhotoOutputs(pooled=[[by_class]])))
    scattered = float(loss({"label": torch.tensor([0, 1, 2, 0, 1, 2])}, PhotoOutputs(pooled=[[by_class]])))
    assert gathered < 1e-3 and scattered > 9  # the same vectors: only the categories differ
    strangers = torch.eye(4)  # four categories, one photo each: with one view nothing to gather
    batch = {"label": torch.arange(4)}
    assert float(loss(batch, PhotoOutputs(pooled=[[strangers]]))) == 0
    assert float(loss(batch, PhotoOutputs(pooled=[[strangers, strangers.clone()]]))) < 1e-3
    assert float(loss(batch, PhotoOutputs(pooled=[[strangers, strangers.roll(1, 0)]]))) > 9


def test_label_contrast_reads_every_views_normalised_pooled_vector_at_the_configured_temperature(tiny_config):
    cfg = tiny_config.pretrain.model_copy(update={"method": "views+label_contrast", "contrast_temperature": 0.5})
    model = PhotoPretrainer(tiny_config.model, cfg, 0, 7).eval()
    pixels = torch.rand(4, 3, *tiny_config.model.image_hw)
    out = model(pixels, pixels)
    assert len(out.pooled) == len(model.image_encoders) and all(len(views) == 2 for views in out.pooled)
    norms = torch.cat([v.norm(dim=1) for views in out.pooled for v in views])
    torch.testing.assert_close(norms, torch.ones_like(norms))
    (loss,) = [term for term in objective_losses(cfg, None) if isinstance(term, LabelContrastLoss)]
    assert loss.temperature == 0.5


def test_the_views_objective_refuses_a_batch_without_its_pixels(tiny_config):
    cfg = tiny_config.pretrain.model_copy(update={"method": "views"})
    with pytest.raises(ValueError, match="pixels"):
        PhotoPretrainer(tiny_config.model, cfg, 0, 7)(torch.zeros(2, 3, 32, 32))


def test_the_labels_objective_learns_mixed_photos_by_their_blended_targets():
    logits = [torch.randn(4, 3), torch.randn(4, 3)]  # two encoders' classifiers
    labels, target = torch.tensor([0, 0, 1, 1]), torch.tensor([[0.0, 0.4, 0.6]]).repeat(4, 1)
    out = PhotoOutputs(logits=logits)
    expected = torch.stack([torch.nn.functional.cross_entropy(x, target) for x in logits]).mean()
    torch.testing.assert_close(PhotoLabelLoss()({"label": labels, "target": target}, out), expected)
    plain = torch.stack([torch.nn.functional.cross_entropy(x, labels) for x in logits]).mean()
    torch.testing.assert_close(PhotoLabelLoss()({"label": labels}, out), plain)
