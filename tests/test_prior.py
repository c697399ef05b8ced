"""Post-hoc logit adjustment (train/prior.py): the catalog's class prior told to a class-balanced model."""

import copy

import numpy as np
import pytest
import torch

from kickvision.model.net import build_model
from kickvision.train.engine import split_validator
from kickvision.train.prior import choose_logit_adjustment, class_prior
from kickvision.train.update import update_bundle, update_validation


def test_the_class_prior_is_add_one_smoothed_so_a_category_the_labels_lack_stays_possible():
    prior = class_prior(np.array([0, 0, 0, 2]), n_classes=4)
    np.testing.assert_allclose(prior, [4 / 8, 1 / 8, 2 / 8, 1 / 8])
    assert prior.sum() == pytest.approx(1.0) and prior.min() > 0


def test_the_prior_shift_wins_only_when_it_validates_better_and_then_sits_in_the_classifier_bias(
    tiny_config, learnt_data
):
    """A model with no preference (every logit 0: argmax says the first category) validated on products
    mostly of a later category: any τ > 0 makes every prediction the most common category, so the
    smallest such τ wins the tie and its τ·log π is added to the classifier's biases, and the model then
    predicts what the returned top-1 says. When the prior cannot help, τ 0 stays and nothing changes."""
    n = len(learnt_data.classes)
    model = build_model(tiny_config.model, n_classes=n).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    labels = learnt_data.labels()
    common = 1
    indices = np.concatenate([np.flatnonzero(labels == common), np.flatnonzero(labels == 0)[:2]])
    prior = class_prior(labels[indices], n)
    validate = split_validator(learnt_data, indices)
    before = validate(model)["val_top1"]
    assert before == pytest.approx(2 / len(indices))

    tau, top1 = choose_logit_adjustment(model, prior, [1.0, 0.5, 2.0], learnt_data, indices)
    assert tau == 0.5 and top1 == pytest.approx(1 - 2 / len(indices)) and top1 > before
    torch.testing.assert_close(model.classifier.bias, torch.as_tensor(0.5 * np.log(prior), dtype=torch.float32))
    assert validate(model)["val_top1"] == pytest.approx(top1)

    only_first = np.flatnonzero(labels == 0)
    unchanged = copy.deepcopy(model)
    with torch.no_grad():
        unchanged.classifier.bias.zero_()
    tau, top1 = choose_logit_adjustment(unchanged, prior, [0.5, 1.0], learnt_data, only_first)
    assert (tau, top1) == (0.0, 1.0) and torch.equal(unchanged.classifier.bias, torch.zeros(n))


def test_an_update_that_adjusts_its_logits_differs_from_the_same_update_without_only_by_the_chosen_shift(
    shared_trained, learnt_data, loafers_drop, tiny_config
):
    """Same champion, drop and seed: the update with `logit_adjustment` ends with the weights of the one
    without, except the classifier's biases, moved by τ·log(the drop's training prior) for the τ it
    records; the top-1 it records is the validation memory's on the model it leaves, no lower than
    without the shift."""
    from kickvision.train.replay import continual_state_after_training

    plain = tiny_config.continual.model_copy(
        update={"validation_per_class": 3, "epochs": 2, "lr": 0.01, "batch_size": 8, "ewc_lambda": 0.0}
    )
    adjusting = plain.model_copy(update={"logit_adjustment": [0.5, 1.0, 2.0]})
    champion = copy.copy(shared_trained)
    champion.continual = continual_state_after_training(shared_trained.model, learnt_data, plain, seed=0)
    without = update_bundle(champion, loafers_drop, plain, tiny_config.train, progress=False)
    result = update_bundle(champion, loafers_drop, adjusting, tiny_config.train, progress=False)
    assert "update_logit_adjustment" not in without.metrics

    tau = result.metrics["update_logit_adjustment"]
    assert tau in (0.0, 0.5, 1.0, 2.0)
    prior = class_prior(loafers_drop.labels()[loafers_drop.indices("train")], len(loafers_drop.classes))
    shifted, unshifted = result.bundle.model.state_dict(), without.bundle.model.state_dict()
    for name, value in unshifted.items():
        expected = (
            value + torch.as_tensor(tau * np.log(prior), dtype=value.dtype) if name == "classifier.bias" else value
        )
        torch.testing.assert_close(shifted[name], expected, msg=name)
    validation = update_validation(loafers_drop, champion.continual, adjusting)
    validate = split_validator(validation.data, validation.indices)
    adjusted = validate(result.bundle.model)["val_top1"]
    assert result.metrics["update_val_top1_adjusted"] == pytest.approx(adjusted)
    assert adjusted >= validate(without.bundle.model)["val_top1"]
