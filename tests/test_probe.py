"""LP-FT for catalog drops: new categories' classifier rows fitted on the champion's features before the
update trains (tiny models, no ZenML)."""

import copy

import numpy as np
import pytest
import torch

from kickvision.model.net import grow_classifier
from kickvision.model.predict import predict_logits
from kickvision.train.probe import class_heads, fit_new_rows, head_inputs, probe_new_class_rows
from kickvision.train.update import align_new_class_weights, update_bundle


def _new_top1(model, drop, indices, n_old) -> float:
    logits, _ = predict_logits(model, drop, indices)
    labels = drop.labels()[indices]
    new = labels >= n_old
    return float((logits[new].argmax(1) == labels[new]).mean())


def _new_cross_entropy(model, drop, indices, n_old) -> float:
    """Mean cross-entropy of the whole model (branch votes included) on the new categories' products."""
    logits, _ = predict_logits(model, drop, indices)
    labels = torch.as_tensor(drop.labels()[indices])
    new = labels >= n_old
    return torch.nn.functional.cross_entropy(torch.from_numpy(logits)[new], labels[new]).item()


def _row_norms(head, n_old) -> tuple[float, list[float]]:
    norms = head.weight.detach().norm(dim=1)
    return norms[:n_old].mean().item(), norms[n_old:].tolist()


def test_probing_fits_the_new_categories_rows_and_leaves_every_old_logit_as_it_was(shared_trained, loafers_drop):
    """On a tiny champion (7 Loafers among 21 training products) the rows held at the old rows' norm cannot
    separate Loafers as a free fit would (the norm is the constraint that keeps weight aligning from undoing
    them), but they fit it better than the random rows do, and no old logit moves."""
    champion, drop, n_old = shared_trained.model, loafers_drop, len(shared_trained.classes)
    model = copy.deepcopy(champion)
    grow_classifier(model, len(drop.classes))
    train = drop.indices("train")
    random_start = _new_cross_entropy(model, drop, train, n_old), _new_top1(model, drop, train, n_old)

    metrics = probe_new_class_rows(model, drop, train, n_old)

    assert set(metrics) == {f"probe_new_top1_{name}" for name, _ in class_heads(model)}
    assert _new_cross_entropy(model, drop, train, n_old) < random_start[0]  # the whole model, branch votes included
    assert _new_top1(model, drop, train, n_old) >= random_start[1]
    everything = np.arange(len(drop.rows))
    before, _ = predict_logits(champion, drop, everything)
    after, _ = predict_logits(model, drop, everything)
    np.testing.assert_allclose(after[:, :n_old], before, rtol=1e-5, atol=1e-5)  # a wider matmul rounds apart
    # weight aligning, after training, finds nothing to undo in the rows the probe started from
    for _, head in class_heads(model):
        old_norm, new_norms = _row_norms(head, n_old)
        assert new_norms == pytest.approx([old_norm] * (head.out_features - n_old), rel=1e-5)
    scales = align_new_class_weights(copy.deepcopy(model), n_old)
    assert list(scales.values()) == pytest.approx([1.0] * len(class_heads(model)), rel=1e-5)


def test_the_fitted_rows_tell_new_categories_from_the_old_rows_logits_as_they_are():
    """Separable features, old rows five times as large as a fresh layer's: the new rows are fitted against
    the old logits at the old rows' mean norm, so the new categories are told apart from them (and from each
    other) by rows that weight aligning leaves as they are."""
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
    old_norm = head.weight[:3].detach().norm(dim=1).mean().item()
    assert weight.norm(dim=1).tolist() == pytest.approx([old_norm] * 2, rel=1e-5)


def test_a_new_category_without_training_products_keeps_its_row_while_the_others_are_fitted():
    """All of one new category went to validation and test: it has nothing to be fitted to, so its row stays as
    it was (fitted, its logit would only be pushed down), and the other new category is still told apart."""
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 5)
    labels = torch.tensor([0, 1, 2, 4]).repeat_interleave(40)  # category 3 is new and has no training products
    features = torch.randn(5, 32)[labels] * 2 + torch.randn(160, 32)
    weight, bias = fit_new_rows(features, labels, head, n_old=3)
    torch.testing.assert_close(weight[0], head.weight[3].detach(), rtol=0, atol=0)
    torch.testing.assert_close(bias[0], head.bias[3].detach(), rtol=0, atol=0)
    logits = torch.cat(
        [features @ head.weight[:3].detach().T + head.bias[:3].detach(), features @ weight[1:].T + bias[1:]], 1
    )
    new = labels == 4
    assert bool((logits[new].argmax(1) == 3).all())  # column 3 here is category 4's fitted row
    assert weight[1].norm().item() == pytest.approx(head.weight[:3].detach().norm(dim=1).mean().item(), rel=1e-5)


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
    rows, at the old rows' norm, fit the new category's products better than the random ones do."""
    frozen = {"epochs": 1, "lr": 1e-12, "encoder_lr": 1e-12, "bias_correction": "none", "validation_per_class": 0}
    n_old, train = len(shared_trained.classes), loafers_drop.indices("train")

    def updated(init: str):
        cfg = tiny_config.continual.model_copy(update=frozen | {"new_class_init": init})
        return update_bundle(shared_trained, loafers_drop, cfg, tiny_config.train, progress=False)

    probed, random = updated("probe"), updated("random")
    assert probed.metrics["update_seconds_probe"] > 0 and "update_seconds_probe" not in random.metrics
    probed_model, random_model = probed.bundle.model, random.bundle.model
    old_norm, new_norms = _row_norms(probed_model.classifier, n_old)
    assert new_norms == pytest.approx([old_norm], rel=1e-3)
    assert _row_norms(random_model.classifier, n_old)[1] != pytest.approx([old_norm], rel=1e-3)
    assert _new_cross_entropy(probed_model, loafers_drop, train, n_old) < _new_cross_entropy(
        random_model, loafers_drop, train, n_old
    )
