"""EWC penalty, classifier growth, exemplar selection and storage, the update gate (tiny models, no ZenML)."""

import copy

import numpy as np
import pytest
import torch

from kickvision.evaluate.update import evaluate_update
from kickvision.model.bundle import ModelBundle, load_bundle, save_bundle
from kickvision.model.net import build_model, grow_classifier
from kickvision.model.predict import predict_arrays, predict_logits
from kickvision.serve.gates import update_gate
from kickvision.train.ewc import EWCPenalty
from kickvision.train.fusion import choose_branch_head_weights
from kickvision.train.replay import herding, select_exemplars
from kickvision.train.update import update_bundle, update_validation


def _inputs(cfg, batch=3, tokens=8):
    return (
        torch.randn(batch, 3, cfg.image_size, cfg.image_size),
        torch.randint(1000, 2000, (batch, tokens)),
        torch.ones(batch, tokens, dtype=torch.long),
    )


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_fisher_weighted_distance(tiny_config):
    model = build_model(tiny_config.model, n_classes=4)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    penalty = EWCPenalty(model, fisher, anchor, lam=2.0)
    assert penalty().item() == 0.0

    weight = model.classifier.weight
    with torch.no_grad():
        weight[0, 0] += 0.5
    assert penalty().item() == pytest.approx(0.5 * 2.0 * 0.25)
    with torch.no_grad():
        weight[0, 0] += 0.5  # twice the distance -> four times the penalty
    assert penalty().item() == pytest.approx(0.5 * 2.0 * 1.0)

    fisher["classifier.weight"][0, 0] = 0.0  # an unimportant weight moves for free
    assert EWCPenalty(model, fisher, anchor, lam=2.0)().item() == 0.0
    fisher["classifier.weight"][0, 0] = 10.0
    assert EWCPenalty(model, fisher, anchor, lam=2.0)().item() == pytest.approx(0.5 * 2.0 * 10.0)


def test_penalty_has_a_gradient_only_on_the_old_rows_of_a_grown_classifier(tiny_config):
    model = build_model(tiny_config.model, n_classes=3)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    grow_classifier(model, 5)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    penalty = EWCPenalty(model, fisher, anchor, lam=1.0)
    penalty().backward()
    autograd = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    grad = model.classifier.weight.grad
    assert grad[:3].abs().sum() > 0 and grad[3:].abs().sum() == 0
    model.zero_grad(set_to_none=True)
    penalty.after_backward()  # the in-place shortcut the training engine uses gives the same gradient
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, autograd.get(name, torch.zeros_like(param)))


def test_growing_the_classifier_keeps_old_logits_exactly(tiny_config):
    model = build_model(tiny_config.model, n_classes=4).eval()
    model.branch_head_weights.fill_(0.5)  # the branch heads vote too: their old rows are kept as well
    inputs = _inputs(tiny_config.model)
    before = model(*inputs).logits
    grow_classifier(model, 6)
    after = model(*inputs).logits
    assert after.shape == (3, 6)
    torch.testing.assert_close(after[:, :4], before, rtol=0, atol=0)
    with pytest.raises(ValueError):
        grow_classifier(model, 2)


def test_herding_picks_distinct_rows_whose_mean_tracks_the_class_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    chosen = herding(x, 10)
    assert len(set(chosen.tolist())) == 10
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    herd_error = np.linalg.norm(unit[chosen].mean(0) - unit.mean(0))
    random_errors = [np.linalg.norm(unit[rng.permutation(200)[:10]].mean(0) - unit.mean(0)) for _ in range(50)]
    assert herd_error < np.median(random_errors)
    picked = select_exemplars(x, np.array(["a", "b"] * 100), per_class=3)
    assert len(picked) == 6 and len(set(picked.tolist())) == 6


def test_fisher_replay_and_holdout_survive_a_bundle_round_trip(shared_trained, learnt_data, tiny_config, tmp_path):
    state = shared_trained.continual
    assert set(state.fisher) == {n for n, _ in shared_trained.model.named_parameters()}
    assert all(f.min() >= 0 for f in state.fisher.values()) and any(f.sum() > 0 for f in state.fisher.values())
    assert len(state.replay) == tiny_config.continual.replay_per_class * len(learnt_data.classes)
    assert set(state.holdout.rows["product_id"]) <= set(
        learnt_data.rows.iloc[learnt_data.indices("test")]["product_id"]
    )
    loaded = load_bundle(save_bundle(shared_trained, tmp_path / "b")).continual
    np.testing.assert_array_equal(loaded.replay.images, state.replay.images)
    np.testing.assert_array_equal(loaded.replay.input_ids, state.replay.input_ids)
    assert loaded.replay.rows.to_dict() == state.replay.rows.to_dict()
    assert loaded.holdout.rows["product_id"].tolist() == state.holdout.rows["product_id"].tolist()
    assert (loaded.fisher_samples, loaded.replay_selection) == (state.fisher_samples, "herding")
    for name, value in state.fisher.items():
        torch.testing.assert_close(loaded.fisher[name], value)


def test_an_update_learns_a_new_category_and_keeps_the_label_map(shared_trained, loafers_drop, tiny_config):
    champion, drop = shared_trained, loafers_drop
    assert drop.classes == [*champion.classes, "Loafers"]
    cfg = tiny_config.continual.model_copy(update={"epochs": 1})
    updated: ModelBundle = update_bundle(champion, drop, cfg, tiny_config.train, progress=False).bundle
    assert updated.classes == drop.classes and updated.model.classifier.out_features == len(drop.classes)
    assert updated.continual.updates == 1
    assert "Loafers" in set(updated.continual.replay.rows["category"])
    lineage = updated.spec.lineage
    assert lineage.new_classes == ["Loafers"] and lineage.catalog_hashes[-1] == drop.catalog_hash
    assert lineage.catalog_hashes[:-1] == champion.spec.lineage.catalog_hashes
    logits, _ = predict_logits(updated.model, drop, drop.indices("train"))
    assert logits.shape[1] == len(drop.classes)
    metrics = evaluate_update(champion, updated, drop)
    assert metrics["update_new_classes"] == 1
    holdout = champion.continual.holdout
    before, _ = predict_arrays(champion.model, holdout.images, holdout.input_ids, holdout.attention_mask)
    assert metrics["update_old_top1_before"] == pytest.approx((before.argmax(1) == holdout.labels(drop.classes)).mean())
    assert metrics["update_forgetting"] == pytest.approx(
        metrics["update_old_top1_before"] - metrics["update_old_top1_after"]
    )


@pytest.mark.parametrize(
    ("forgetting", "combined_after", "promoted", "words"),
    [(0.0, 0.8, True, "forgetting"), (0.05, 0.9, False, "forgot too much"), (0.01, 0.6, False, "worse overall")],
)
def test_update_gate(forgetting, combined_after, promoted, words):
    metrics = {
        "update_old_top1_before": 0.9,
        "update_old_top1_after": 0.9 - forgetting,
        "update_forgetting": forgetting,
        "update_combined_top1_before": 0.7,
        "update_combined_top1_after": combined_after,
    }
    decision, reason = update_gate(metrics, tolerance=0.02)
    assert decision is promoted and words in reason


def test_a_strong_ewc_penalty_keeps_the_update_near_the_anchor(shared_trained, loafers_drop, tiny_config):
    bundle, drop = shared_trained, loafers_drop
    anchor = dict(bundle.model.named_parameters())

    def distance(lam: float) -> float:
        c = tiny_config.continual.model_copy(update={"epochs": 3, "batch_size": 4, "ewc_lambda": lam})
        model = update_bundle(bundle, drop, c, tiny_config.train, progress=False).bundle.model
        return sum(
            (bundle.continual.fisher[n] * (p.detach() - anchor[n].detach()) ** 2).sum().item()
            for n, p in model.named_parameters()
            if n in anchor and p.shape == anchor[n].shape
        )

    assert distance(1e6) < 0.5 * distance(0.0)


def test_growing_the_classifier_grows_the_branch_heads_too(tiny_config):
    cfg = tiny_config.model.model_copy(update={"branch_loss_weight": 0.5})
    model = build_model(cfg, n_classes=4).train()
    inputs = _inputs(cfg)
    torch.manual_seed(0)  # dropout draws
    before = [b.detach() for b in model(*inputs).branch_logits]
    grow_classifier(model, 6)
    torch.manual_seed(0)  # the same modality-dropout draw
    after = model(*inputs).branch_logits
    for old, new in zip(before, after, strict=True):
        assert new.shape[1] == 6
        torch.testing.assert_close(new[:, :4], old, rtol=0, atol=0)


def _out(logits: torch.Tensor):
    from kickvision.model.net import ShoeNetOutput

    return ShoeNetOutput(logits=logits, embedding=torch.zeros(len(logits), 2))


def test_logit_replay_pulls_only_the_replay_rows_old_category_logits_to_the_champions():
    from kickvision.train.losses import LogitReplay

    targets = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # the champion knew 2 categories
    replay = torch.tensor([False, True, True])
    term = LogitReplay(targets, replay, weight=2.0)
    batch = {"index": torch.tensor([0, 1, 2])}
    same = torch.tensor([[9.0, 9.0, 9.0], [3.0, 4.0, -7.0], [5.0, 6.0, 8.0]])  # row 0 and the new column: free
    assert term(batch, _out(same)).item() == 0.0
    moved = same.clone()
    moved[1, 0] += 1.0
    assert term(batch, _out(moved)).item() == pytest.approx(2.0 * 1.0 / 4)  # MSE over 2 rows x 2 logits
    assert term({"index": torch.tensor([0])}, _out(moved[:1])).item() == 0.0  # no replay row in the batch


def test_old_class_distillation_is_zero_when_the_student_keeps_the_champions_old_category_odds():
    from kickvision.train.losses import OldClassDistillation

    targets = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    term = OldClassDistillation(targets, torch.tensor([True, True]), weight=1.0, temperature=2.0)
    batch = {"index": torch.tensor([0, 1])}
    shifted = torch.tensor([[12.0, 10.0, 50.0], [-3.0, -2.0, 0.0]])  # same old-category odds, any new logit
    assert term(batch, _out(shifted)).item() == pytest.approx(0.0, abs=1e-6)
    flipped = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    assert term(batch, _out(flipped)).item() > 0.1


def test_weight_aligning_scales_the_new_categories_rows_to_the_old_rows_norm_and_leaves_old_rows(tiny_config):
    from kickvision.train.update import align_new_class_weights

    cfg = tiny_config.model.model_copy(update={"branch_loss_weight": 0.5})
    model = build_model(cfg, n_classes=3)
    grow_classifier(model, 5)
    with torch.no_grad():
        model.classifier.weight[3:] *= 4.0  # the update's bias towards what it saw last
    old_rows = model.classifier.weight[:3].detach().clone()
    scales = align_new_class_weights(model, n_old=3)
    norms = model.classifier.weight.detach().norm(dim=1)
    assert norms[3:].mean().item() == pytest.approx(norms[:3].mean().item(), rel=1e-5)
    torch.testing.assert_close(model.classifier.weight[:3].detach(), old_rows, rtol=0, atol=0)
    assert scales["weight_aligning_classifier"] < 1 and len(scales) == 1 + len(model.branch_classifiers)
    assert align_new_class_weights(build_model(cfg, n_classes=3), n_old=3) == {}  # nothing new: untouched


def test_a_normalised_fisher_has_mean_one_keeps_its_proportions_and_is_idempotent():
    from kickvision.train.ewc import normalise_fisher

    fisher = {"a": torch.tensor([1e-6, 3e-6]), "b": torch.tensor([[0.0, 4e-6]])}
    normalised = normalise_fisher(fisher)
    entries = torch.cat([f.flatten() for f in normalised.values()])
    assert entries.mean().item() == pytest.approx(1.0)
    assert normalised["a"][1] / normalised["a"][0] == pytest.approx(3.0)
    for name, value in normalise_fisher(normalised).items():
        torch.testing.assert_close(value, normalised[name])
    zeros = {"a": torch.zeros(3)}
    assert normalise_fisher(zeros) is zeros  # nothing learnt yet: left as it is


def test_distillation_keeps_the_champions_old_category_outputs_on_its_exemplars(
    shared_trained, loafers_drop, tiny_config
):
    """DER++ + LwF: after the same updates the old-category logits on the replay exemplars stay closer
    to the champion's than without them; the recipe (with weight aligning) is reported by the update.

    Summed over four update seeds: on the tiny model the drift distillation cannot remove (part of it
    the batch-norm statistics of 4-product batches, which the eval-mode targets do not see; weight 20
    or no augmentation leave it as it is) is of the size of the plain update's drift on some seeds:
    one seed's ratio ranged 0.25-1.09 over these seeds under torch's per-tensor and fused AdamW (the
    tiny champion trained with each), the four-seed ratio 0.44-0.63 (2026-12-02), and 0.87 once the
    text encoder read batches to their longest title (2026-12-03: other dropout masks, so another
    random stream); on a CPU without AVX-512 (2026-12-05) three epochs gave 1.19 (weight 20: 1.21)
    and five 0.77: the plain update's drift grows with its epochs (0.36 summed over three, 0.50 over
    five) and distillation holds it, so the updates run five. The test asks for less drift, not for
    a set fraction: with distillation ignored the two sums are equal (ratio exactly 1) and it fails."""
    from kickvision.train.update import champion_targets

    champion, drop = shared_trained, loafers_drop
    replay = champion.continual.replay.as_prepared(drop.classes)
    before = champion_targets(champion.model, replay)
    plain = tiny_config.continual.model_copy(update={"epochs": 5, "batch_size": 4, "ewc_lambda": 0.0})
    distilled = plain.model_copy(
        update={"logit_replay_weight": 5.0, "distill_weight": 5.0, "bias_correction": "weight_aligning"}
    )

    def drift(cfg, seed: int) -> tuple[float, dict]:
        result = update_bundle(champion, drop, cfg, tiny_config.train, seed=seed, progress=False)
        after = champion_targets(result.bundle.model, replay)[:, : before.shape[1]]
        return float(((after - before) ** 2).mean()), result.metrics

    seeds = (42, 1, 2, 3)
    plain_runs = [drift(plain, seed) for seed in seeds]
    distilled_runs = [drift(distilled, seed) for seed in seeds]
    assert sum(d for d, _ in distilled_runs) < sum(d for d, _ in plain_runs)
    for (_, plain_metrics), (_, metrics) in zip(plain_runs, distilled_runs, strict=True):
        assert "weight_aligning_classifier" not in plain_metrics and 0 < metrics["weight_aligning_classifier"] != 1


def test_a_byte_budget_keeps_more_exemplars_as_jpeg_and_the_bundle_holds_exactly_what_training_saw(
    shared_trained, learnt_data, tiny_config, tmp_path
):
    from kickvision.train.replay import continual_state_after_training

    raw = tiny_config.continual
    budget = raw.replay_per_class * len(learnt_data.classes) * learnt_data.images[0].nbytes  # raw replay's bytes
    cfg = raw.model_copy(update={"replay_bytes": budget, "replay_jpeg_quality": 90})
    state = continual_state_after_training(shared_trained.model, learnt_data, cfg, seed=0)
    replay = state.replay
    assert replay.jpeg_quality == 90 and len(replay) > 2 * len(shared_trained.continual.replay)
    assert replay.stored_bytes() <= 1.1 * budget
    original = learnt_data.images[
        learnt_data.rows.index[learnt_data.rows["product_id"].isin(replay.rows["product_id"])]
    ]
    assert replay.images.shape[1:] == original.shape[1:] and replay.images.dtype == np.uint8

    bundle = copy.deepcopy(shared_trained)
    bundle.continual = state
    loaded = load_bundle(save_bundle(bundle, tmp_path / "b")).continual.replay
    np.testing.assert_array_equal(loaded.images, replay.images)  # the decoded JPEG, bit for bit
    assert loaded.jpeg_quality == 90 and loaded.stored_bytes() == replay.stored_bytes()
    kept = loaded.take(np.array([2, 0]))
    np.testing.assert_array_equal(kept.images, replay.images[[2, 0]])
    assert kept.stored_bytes() < loaded.stored_bytes()


def test_a_stored_exemplar_that_is_not_the_jpeg_it_claims_is_refused():
    from kickvision.model.memory import decode_jpeg_one, encode_jpeg_one, pack, unpack

    images = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3), dtype=np.uint8)
    chunks = [encode_jpeg_one(image, 90) for image in images]
    with pytest.raises(ValueError, match="not a 8x16 JPEG"):
        decode_jpeg_one(chunks[0], (16, 8, 3))
    with pytest.raises(ValueError, match="cannot be decoded"):
        decode_jpeg_one(b"\xff\xd8 not really", (8, 8, 3))
    blob, offsets = pack(chunks)
    assert unpack(blob, offsets, 2) == chunks
    for bad in (offsets[:-1], offsets[::-1], offsets + 1):
        with pytest.raises(ValueError, match="offsets"):
            unpack(blob, bad, 2)


def test_jpeg_exemplars_keep_their_bytes_through_an_update_instead_of_being_encoded_again(
    shared_trained, loafers_drop, tiny_config
):
    champion = copy.deepcopy(shared_trained)
    champion.continual.replay = champion.continual.replay.compressed(50)
    old = champion.continual.replay
    before = {old.images[i].tobytes(): chunk for i, chunk in enumerate(old.jpeg)}  # decoded pixels -> bytes
    cfg = tiny_config.continual.model_copy(update={"epochs": 1, "replay_bytes": 10**7, "replay_jpeg_quality": 50})
    replay = update_bundle(champion, loafers_drop, cfg, tiny_config.train, progress=False).bundle.continual.replay
    kept = [(image.tobytes(), chunk) for image, chunk in zip(replay.images, replay.jpeg, strict=True)]
    kept = [(pixels, chunk) for pixels, chunk in kept if pixels in before]  # the old exemplars still replayed
    assert kept and all(chunk == before[pixels] for pixels, chunk in kept)  # bit for bit: no second loss
    assert all(chunk is not None for chunk in replay.jpeg) and "Loafers" in set(replay.rows["category"])


def test_an_update_names_every_catalog_folder_it_learnt_only_when_the_champion_named_its_own(
    shared_trained, loafers_drop, tiny_config
):
    cfg = tiny_config.continual.model_copy(update={"epochs": 1})
    learnt = shared_trained.spec.lineage
    assert len(learnt.catalog_paths) == 1
    lineage = update_bundle(shared_trained, loafers_drop, cfg, tiny_config.train, progress=False).bundle.spec.lineage
    assert lineage.catalog_paths == [*learnt.catalog_paths, loafers_drop.catalog_root]
    older = copy.deepcopy(shared_trained)
    older.spec.lineage.catalog_paths = []  # trained before folders were recorded
    lineage = update_bundle(older, loafers_drop, cfg, tiny_config.train, progress=False).bundle.spec.lineage
    assert lineage.catalog_paths == []  # never a joint retrain on the drop alone


def test_an_update_trains_the_encoders_pretrained_on_generic_data_at_continual_encoder_lr_or_freezes_them(
    shared_trained, loafers_drop, tiny_config, tmp_path
):
    """A champion loaded from its bundle learns from its spec which encoders started pretrained, and the
    update gives those encoders their own learning rate (the fit's lower encoder_lr, for one), or leaves
    them exactly as they are with `pretrained_trainable_layers: 0` (EWC and weight decay included) while
    the rest of the model learns the drop; the Fisher for the next drop still covers them."""
    saved = copy.copy(shared_trained)
    saved.spec = shared_trained.spec.model_copy(deep=True)
    saved.spec.training.pretrained = {"text": True}  # as if the title encoder had started from MiniLM
    champion = load_bundle(save_bundle(saved, tmp_path / "champion"))
    assert champion.model.text_encoder.pretrained_loaded
    before = {n: p.detach().clone() for n, p in champion.model.text_encoder.named_parameters()}

    def update(**changes):
        c = tiny_config.continual.model_copy(update={"epochs": 2, "batch_size": 4, "ewc_lambda": 0.0} | changes)
        return update_bundle(champion, loafers_drop, c, tiny_config.train, progress=False).bundle

    def text_encoder_moved(model) -> float:
        return max((p.detach() - before[n]).abs().max().item() for n, p in model.text_encoder.named_parameters())

    assert text_encoder_moved(update(encoder_lr=1e-12).model) < 1e-6 < text_encoder_moved(update().model)
    frozen = update(pretrained_trainable_layers=0, ewc_lambda=1000.0)
    assert text_encoder_moved(frozen.model) == 0.0
    n_old = len(champion.classes)
    assert frozen.classes[-1] == "Loafers" and frozen.model.classifier.out_features == n_old + 1
    assert not torch.equal(frozen.model.classifier.weight[:n_old], champion.model.classifier.weight)  # it learnt
    assert any(n.startswith("text_encoder.") for n in frozen.continual.fisher)


def test_a_model_keeps_capped_old_validation_products_and_a_bundle_without_them_still_loads(
    shared_trained, learnt_data, tiny_config, tmp_path
):
    """`validation_per_class` validation products per category (never trained on, never test) travel
    in the bundle; bundles saved before the validation memory existed (format 3) load with none."""
    import json

    from kickvision.model.bundle import SPEC_FILE
    from kickvision.train.replay import continual_state_after_training

    cfg = tiny_config.continual.model_copy(update={"validation_per_class": 2})
    bundle = copy.copy(shared_trained)
    bundle.continual = continual_state_after_training(shared_trained.model, learnt_data, cfg, seed=0)
    memory = bundle.continual.validation
    val_rows = learnt_data.rows.iloc[learnt_data.indices("val")]
    assert set(memory.rows["product_id"]) <= set(val_rows["product_id"])
    counts = memory.rows["category"].value_counts()
    assert set(counts.index) == set(val_rows["category"]) and counts.max() == 2
    loaded = load_bundle(save_bundle(bundle, tmp_path / "with")).continual.validation
    assert loaded.rows["product_id"].tolist() == memory.rows["product_id"].tolist()
    np.testing.assert_array_equal(loaded.images, memory.images)

    assert shared_trained.continual.validation is None  # the demo config keeps none
    folder = save_bundle(shared_trained, tmp_path / "with")  # re-saved without one: none comes back
    assert load_bundle(folder).continual.validation is None
    document = json.loads((folder / SPEC_FILE).read_text())
    (folder / SPEC_FILE).write_text(json.dumps({**document, "format_version": 3}))
    assert load_bundle(folder).continual.validation is None

    # Stored rows that no longer match the stored photos are refused, not silently misaligned.
    folder = save_bundle(bundle, tmp_path / "corrupt")
    rows = json.loads((folder / "continual" / "validation.json").read_text())
    (folder / "continual" / "validation.json").write_text(json.dumps(rows[1:]))
    with pytest.raises(ValueError, match="do not match"):
        load_bundle(folder)


def test_an_update_keeps_the_epoch_best_on_old_and_new_validation_products_and_remembers_the_drops(
    shared_trained, learnt_data, loafers_drop, tiny_config
):
    """With a validation memory the update scores every epoch on the champion's old validation products
    plus the drop's validation split and keeps the best (the later on a tie); the next update's memory
    holds the drop's validation products too. Without one it keeps the last epoch, as before."""
    from kickvision.train.replay import continual_state_after_training

    c = tiny_config.continual.model_copy(
        update={
            "validation_per_class": 3,
            "epochs": 4,
            "lr": 0.01,
            "batch_size": 8,
            "ewc_lambda": 0.0,
            "bias_correction": "weight_aligning",
            "interpolation": [0.5, 1.0],
        }
    )
    champion = copy.copy(shared_trained)
    champion.continual = continual_state_after_training(shared_trained.model, learnt_data, c, seed=0)
    remembered = len(champion.continual.validation)
    drop_val = loafers_drop.rows.iloc[loafers_drop.indices("val")]
    assert remembered and len(drop_val)

    result = update_bundle(champion, loafers_drop, c, tiny_config.train, progress=False)
    assert result.metrics["update_validation_products"] == remembered + len(drop_val)
    scores = [h["val_top1"] for h in result.history]
    assert len(scores) == 4 and result.metrics["update_val_top1_kept"] == max(scores)
    assert result.metrics["update_kept_epoch"] == max(i + 1 for i, s in enumerate(scores) if s == max(scores))
    # A new category: the champion's own weights cannot predict it, so they do not compete.
    assert "update_val_top1_start" not in result.metrics
    # The branch heads' votes are chosen on the same old + new validation products.
    validation = update_validation(loafers_drop, champion.continual, c)
    assert validation.chooses and len(validation.indices) == remembered + len(drop_val)
    votes = choose_branch_head_weights(copy.deepcopy(result.bundle.model), validation.data, validation.indices)
    assert votes == result.bundle.spec.training.branch_head_weights
    memory = result.bundle.continual.validation.rows
    assert "Loafers" in set(memory["category"]) and memory["category"].value_counts().max() <= 3
    assert set(memory["product_id"]) <= set(champion.continual.validation.rows["product_id"]) | set(
        drop_val["product_id"]
    )

    assert result.metrics["update_interpolation"] in (0.5, 1.0)
    # The run records the validation top-1 of the weights it leaves, not only of the epoch it mixed.
    # (α 1 is among those tried and wins ties, so an α below 1 is chosen only when it validates higher).
    interpolated, kept = result.metrics["update_val_top1_interpolated"], result.metrics["update_val_top1_kept"]
    assert interpolated > kept if result.metrics["update_interpolation"] < 1 else interpolated == kept

    last = update_bundle(shared_trained, loafers_drop, c, tiny_config.train, progress=False)  # no memory kept
    assert last.metrics["update_kept_epoch"] == 4 and "update_validation_products" not in last.metrics
    # A memory without one of the categories (turned on after the base was trained) cannot choose.
    partial = copy.copy(champion)
    memory = champion.continual.validation
    first = next(c for c in memory.rows["category"] if c not in set(drop_val["category"]))
    partial.continual = copy.copy(champion.continual)
    partial.continual.validation = memory.take(np.flatnonzero(memory.rows["category"] != first))
    blind = update_bundle(partial, loafers_drop, c, tiny_config.train, progress=False)
    assert blind.metrics["update_kept_epoch"] == 4 and "update_interpolation" not in blind.metrics

    # `patience`: the same update stops after the first epoch without a better validation top-1.
    patient = update_bundle(
        champion, loafers_drop, c.model_copy(update={"patience": 1}), tiny_config.train, progress=False
    )
    expected = next((i + 1 for i in range(1, 4) if scores[i] <= max(scores[:i])), 4)
    assert [h["val_top1"] for h in patient.history] == scores[:expected]


def test_a_drop_of_known_categories_that_only_makes_the_model_worse_keeps_the_champion_weights(
    shared_trained, learnt_data, demo_data, tiny_config
):
    """With a validation memory and a drop of known categories, an update whose every epoch scores
    below the champion's own weights (here: a learning rate that wrecks the model) leaves the weights
    exactly as the champion had them, the branch heads' votes too, and says so (kept epoch 0); the
    drop still counts as learnt where the next update looks: its lineage and the capped validation
    memory."""
    from kickvision.train.replay import continual_state_after_training

    c = tiny_config.continual.model_copy(
        update={"validation_per_class": 3, "epochs": 2, "lr": 50.0, "batch_size": 8, "ewc_lambda": 0.0}
    )
    champion = copy.copy(shared_trained)
    champion.continual = continual_state_after_training(shared_trained.model, learnt_data, c, seed=0)
    assert demo_data.classes == champion.classes  # no new category
    champion.model, champion.spec = copy.deepcopy(shared_trained.model), shared_trained.spec.model_copy(deep=True)
    champion.model.branch_head_weights.fill_(0.3)  # votes off the update's grid: a re-chosen pair would differ
    champion.spec.training.branch_head_weights = dict.fromkeys(champion.model.branch_names, 0.3)
    result = update_bundle(champion, demo_data, c, tiny_config.train, progress=False)

    assert result.metrics["update_kept_epoch"] == 0
    start = result.metrics["update_val_top1_start"]
    assert result.metrics["update_val_top1_kept"] == start and all(h["val_top1"] < start for h in result.history)
    before, after = champion.model.state_dict(), result.bundle.model.state_dict()
    for name, old in before.items():  # the branch heads' votes included: they won as they were
        assert torch.equal(after[name], old), name
    assert result.bundle.spec.training.branch_head_weights == champion.spec.training.branch_head_weights
    assert result.bundle.spec.lineage.catalog_hashes[-1] == demo_data.catalog_hash
    memory = result.bundle.continual.validation.rows["category"]
    assert set(memory) == set(champion.classes) and memory.value_counts().max() <= 3


def test_weight_interpolation_mixes_shared_weights_keeps_new_classifier_rows_and_picks_the_best_alpha(tiny_config):
    """WiSE-FT between the champion and the update: α·updated + (1−α)·champion for every weight the two
    share (one the update left as it was stays bit for bit), the grown classifier's new rows as updated,
    and the α the validator scores best (ties: the larger α)."""
    from kickvision.train.update import choose_interpolation, interpolate_weights

    torch.manual_seed(0)
    champion = build_model(tiny_config.model, 3)
    updated = copy.deepcopy(champion)
    grow_classifier(updated, 4)
    with torch.no_grad():
        for p in updated.parameters():
            p.add_(torch.randn_like(p))
    old, new = champion.state_dict(), updated.state_dict()
    mixed = interpolate_weights(new, old, 0.25)
    torch.testing.assert_close(
        mixed["classifier.weight"][:3], 0.25 * new["classifier.weight"][:3] + 0.75 * old["classifier.weight"]
    )
    torch.testing.assert_close(mixed["classifier.weight"][3], new["classifier.weight"][3])
    name = next(n for n in old if n.startswith("fusion") and old[n].is_floating_point())
    torch.testing.assert_close(mixed[name], 0.25 * new[name] + 0.75 * old[name])
    integer = [n for n, v in new.items() if not v.is_floating_point()]
    assert all(torch.equal(mixed[n], new[n]) for n in integer)
    torch.testing.assert_close(interpolate_weights(new, old, 1.0)[name], new[name])
    same = dict(new, **{name: old[name].clone()})  # a weight the update left as it was (a frozen encoder)
    assert torch.equal(interpolate_weights(same, old, 0.7)[name], old[name])  # bit for bit, not re-rounded

    # A validator that prefers weights halfway between the two: α 0.5 wins over 0.25 and 1.
    target = 0.5 * new[name] + 0.5 * old[name]

    def validate(model):
        return {"val_top1": -float((model.state_dict()[name] - target).abs().sum())}

    alpha, score = choose_interpolation(updated, champion, [1.0, 0.25, 0.5], validate)
    assert alpha == 0.5 and score == validate(updated)["val_top1"] > validate(champion)["val_top1"]
    torch.testing.assert_close(updated.state_dict()[name], target)
    assert choose_interpolation(updated, champion, [0.5, 1.0], lambda m: {"val_top1": 1.0}) == (1.0, 1.0)
