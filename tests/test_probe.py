"""LP-FT for catalog drops: new categories' classifier rows fitted on the champion's features before the
update trains (tiny models, no ZenML)."""

import copy

import numpy as np
import torch

from kickvision.model.net import grow_classifier
from kickvision.model.predict import predict_logits
from kickvision.train.probe import class_heads, fit_new_rows, head_inputs, probe_new_class_rows
from kickvision.train.update import update_bundle


def _new_top1(model, drop, indices, n_old) -> float:
    logits, _ = predict_logits(model, drop, indices)
    labels = drop.labels()[indices]
    new = labels >= n_old
    return float((logits[new].argmax(1) == labels[new]).mean())


def test_probing_fits_the_new_categories_rows_and_leaves_every_old_logit_exactly(shared_trained, loafers_drop):
    champion, drop, n_old = shared_trained.model, loafers_drop, len(shared_trained.classes)
    model = copy.deepcopy(champion)
    grow_classifier(model, len(drop.classes))
    train = drop.indices("train")
    random_start = _new_top1(model, drop, train, n_old)

    metrics = probe_new_class_rows(model, drop, train, n_old)

    assert set(metrics) == {f"probe_new_top1_{name}" for name, _ in class_heads(model)}
    assert metrics["probe_new_top1_classifier"] >= 0.9 > random_start
    assert _new_top1(model, drop, train, n_old) >= 0.9  # the whole model, branch votes included
    everything = np.arange(len(drop.rows))
    before, _ = predict_logits(champion, drop, everything)
    after, _ = predict_logits(model, drop, everything)
    np.testing.assert_array_equal(after[:, :n_old], before)


def test_the_fitted_rows_tell_new_categories_from_the_old_rows_logits_as_they_are():
    """Separable features, old rows five times as large as a fresh layer's: the new rows are fitted against
    the old logits, so the new categories are told apart from them (and from each other)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 5)
    with torch.no_grad():
        head.weight.mul_(5)
    labels = torch.arange(5).repeat_interleave(40)
    features = torch.randn(5, 32)[labels] * 2 + torch.randn(200, 32)
    weight, bias = fit_new_rows(features, labels, head, n_old=3)
    old = features @ head.weight[:3].detach().T + head.bias[:3].detach()
    logits = torch.cat([old, features @ weight.T + bias], 1)
    new = labels >= 3
    assert weight.shape == (2, 32) and bool((logits[new].argmax(1) == labels[new]).all())


def test_the_probed_heads_read_the_inputs_the_model_classifies_from(shared_trained, loafers_drop):
    model, indices = shared_trained.model, loafers_drop.indices("val")
    inputs = head_inputs(model, loafers_drop, indices)
    logits, _ = predict_logits(model, loafers_drop, indices)
    fused = inputs["classifier"] @ model.classifier.weight.detach().T + model.classifier.bias.detach()
    votes = sum(
        w * (inputs[f"branch_classifier_{i}"] @ h.weight.detach().T + h.bias.detach())
        for i, (w, h) in enumerate(zip(model.branch_head_weights, model.branch_classifiers, strict=True))
    )
    torch.testing.assert_close(fused + votes, torch.from_numpy(logits), rtol=1e-4, atol=1e-4)


def test_a_drop_of_known_categories_has_nothing_to_probe(shared_trained, learnt_data):
    model = copy.deepcopy(shared_trained.model)
    rows = model.classifier.weight.detach().clone()
    assert probe_new_class_rows(model, learnt_data, learnt_data.indices("train"), len(shared_trained.classes)) == {}
    torch.testing.assert_close(model.classifier.weight.detach(), rows, rtol=0, atol=0)


def test_an_update_with_new_class_init_probe_starts_from_rows_that_know_the_new_category(
    shared_trained, loafers_drop, tiny_config
):
    """With a learning rate too small to move anything, the update leaves the start as it was: the probed
    rows already classify the new category's products, the random ones do not."""
    frozen = {"epochs": 1, "lr": 1e-12, "encoder_lr": 1e-12, "bias_correction": "none", "validation_per_class": 0}
    n_old, train = len(shared_trained.classes), loafers_drop.indices("train")

    def updated(init: str):
        cfg = tiny_config.continual.model_copy(update=frozen | {"new_class_init": init})
        return update_bundle(shared_trained, loafers_drop, cfg, tiny_config.train, progress=False)

    probed, random = updated("probe"), updated("random")
    assert probed.metrics["update_seconds_probe"] > 0 and "update_seconds_probe" not in random.metrics
    assert _new_top1(probed.bundle.model, loafers_drop, train, n_old) >= 0.9
    assert _new_top1(random.bundle.model, loafers_drop, train, n_old) < 0.5
