"""Photo augmentation: flips exactly, crops and shifts keep the shoe and fill with the background,
colour jitter stays modest, mixup and CutMix blend photos and targets alike; the train section's
knobs reach the engine."""

import numpy as np
import pytest
import torch

from kickvision.train.augment import PhotoAugment, PhotoMix
from kickvision.train.settings import finetune_settings, fit_settings, pretrain_settings, update_settings


def _shoe_on_white(n: int = 64, height: int = 20, width: int = 16) -> torch.Tensor:
    images = torch.ones(n, 3, height, width)
    images[:, :, 6:14, 2:10] = torch.tensor([0.8, 0.1, 0.1]).view(1, 3, 1, 1)  # a red shoe, left of centre
    return images


def test_the_default_only_flips_and_flips_exactly():
    torch.manual_seed(0)
    images = torch.rand(200, 3, 8, 6)
    out = PhotoAugment()(images)
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all()) and 60 < int(flipped.sum()) < 140
    assert torch.equal(PhotoAugment(hflip=0.0)(images), images)


def test_crops_and_shifts_move_the_shoe_but_keep_it_whole_and_fill_with_white():
    torch.manual_seed(0)
    images = _shoe_on_white()
    out = PhotoAugment(hflip=0.0, crop_scale=0.8, shift=0.1)(images)
    assert out.shape == images.shape and not torch.allclose(out, images)
    shoe = (1 - out[:, 1]).flatten(1).sum(1)  # how much "not white" (bilinear resampling keeps it)
    original = float((1 - images[0, 1]).sum())
    assert bool((shoe >= 0.85 * original).all()) and bool((shoe <= original / 0.8 * 1.05).all())  # zoom <= 1/0.8
    red = (out[:, 0] > 0.6) & (out[:, 1] < 0.3)
    assert bool((out[:, :, 0, :] > 0.95).all())  # what moved in is the white border, not black
    centres = torch.stack([red[i].nonzero().float().mean(0) for i in range(len(out))])
    assert float(centres.std(0).min()) > 0.3  # the shoe is not always in the same place


def test_colour_jitter_is_bounded_and_keeps_pixels_in_range():
    torch.manual_seed(0)
    images = _shoe_on_white()
    out = PhotoAugment(hflip=0.0, color_jitter=0.1)(images)
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, images)
    shoe = out[:, :, 6:14, 2:10].mean((2, 3))
    assert bool((shoe[:, 0] > shoe[:, 1] + 0.4).all())  # still clearly red
    assert float((out - images).abs().max()) < 0.35


def test_the_train_section_sets_the_augmentation(tiny_config):
    train = tiny_config.train.model_copy(update={"crop_scale": 0.75, "shift": 0.05, "color_jitter": 0.2})
    assert fit_settings(train).augment == PhotoAugment(crop_scale=0.75, shift=0.05, color_jitter=0.2)
    assert fit_settings(train.model_copy(update={"augment": False})).augment is None


@pytest.mark.parametrize("setting", [{"crop_scale": 0.0}, {"shift": 0.6}, {"color_jitter": 1.0}])
def test_out_of_range_augmentation_is_a_config_error_naming_it(setting):
    from kickvision.config import load_config
    from kickvision.errors import ConfigError

    with pytest.raises(ConfigError, match=f"train.{next(iter(setting))}"):
        load_config("demo", overrides={"train": setting})


def _black_and_white(height: int = 16, width: int = 12) -> torch.Tensor:
    return torch.stack([torch.zeros(3, height, width), torch.ones(3, height, width)])


def test_mixup_blends_two_photos_and_their_labels_with_the_same_weight():
    np.random.seed(0)  # timm draws the blend weight from numpy's generator
    images, labels = _black_and_white(), torch.tensor([0, 2])
    mixed, target = PhotoMix(mixup_alpha=0.4)(images, labels, 3)
    white_in_first = float(mixed[0].mean())  # the black photo's share of the white one
    assert 0 < white_in_first < 1 and torch.equal(images, _black_and_white())  # the batch itself is untouched
    assert target[0].tolist() == pytest.approx([1 - white_in_first, 0.0, white_in_first])
    assert target[1].tolist() == pytest.approx([1 - float(mixed[1].mean()), 0.0, float(mixed[1].mean())])


def test_cutmix_pastes_a_box_and_the_target_is_the_share_of_area_each_photo_keeps():
    np.random.seed(1)
    shares = []
    for _ in range(6):
        mixed, target = PhotoMix(cutmix_alpha=1.0)(_black_and_white(), torch.tensor([0, 2]), 3)
        assert set(mixed.unique().tolist()) <= {0.0, 1.0}  # whole pixels of one photo or the other
        pasted = float(mixed[0].mean())  # the box of white in the black photo
        assert target[0].tolist() == pytest.approx([1 - pasted, 0.0, pasted])
        shares.append(pasted)
    assert sum(0 < share < 1 for share in shares) >= 3  # boxes of many sizes (an empty one, drawn at the edge)


def test_mixed_targets_fold_in_label_smoothing_and_an_odd_batch_mixes_all_but_its_last_photo():
    np.random.seed(0)
    smoothed = torch.full((3, 3), 0.1) + 0.7 * torch.eye(3)  # smoothing 0.3 over 3 categories
    images, labels = torch.rand(3, 3, 8, 6), torch.tensor([0, 1, 2])
    mix = PhotoMix(mixup_alpha=0.4, label_smoothing=0.3)
    alone, target = mix(images[:1], labels[:1], 3)
    assert torch.equal(alone, images[:1]) and torch.allclose(target, smoothed[:1])
    mixed, target = mix(images, labels, 3)
    assert not torch.equal(mixed[:2], images[:2]) and torch.equal(mixed[2], images[2])
    assert torch.allclose(target[2], smoothed[2]) and not torch.allclose(target[:2], smoothed[:2])
    assert target.sum(1).tolist() == pytest.approx([1.0, 1.0, 1.0]) and float(target.min()) >= 0.1 - 1e-6


def test_mixing_is_set_by_its_own_section_and_never_reaches_updates_or_fine_tunes(tiny_config):
    train = tiny_config.train.model_copy(update={"cutmix_alpha": 1.0, "ema_decay": 0.99})
    assert fit_settings(train).mix == PhotoMix(cutmix_alpha=1.0, label_smoothing=train.label_smoothing)
    assert fit_settings(train).ema_decay == 0.99 and fit_settings(tiny_config.train).mix is None
    for loop in (update_settings(tiny_config.continual, train), finetune_settings(tiny_config.prune, train)):
        assert loop.mix is None and loop.ema_decay is None
    pretrain = tiny_config.pretrain.model_copy(update={"method": "labels", "mixup_alpha": 0.2, "ema_decay": 0.9})
    assert pretrain_settings(pretrain, train).mix == PhotoMix(mixup_alpha=0.2)
    assert pretrain_settings(pretrain, train).ema_decay == 0.9
    assert pretrain_settings(tiny_config.pretrain, train).mix is None  # train's mixing is not pretraining's


def test_mixing_photos_in_pretraining_needs_the_labels_objective_alone():
    from kickvision.config import load_config
    from kickvision.errors import ConfigError

    with pytest.raises(ConfigError, match="pretrain.mixup_alpha.*'labels' alone.*title_alignment"):
        load_config("demo", overrides={"pretrain": {"method": "title_alignment+labels", "mixup_alpha": 0.2}})
    assert load_config("demo", overrides={"pretrain": {"method": "labels", "cutmix_alpha": 1.0}}).pretrain.cutmix_alpha


def test_a_model_that_reads_titles_refuses_mixed_photos(tiny_config, demo_data):
    from kickvision.config import load_config
    from kickvision.errors import ConfigError
    from kickvision.train.fit import fit

    with pytest.raises(ConfigError, match=r"demo.yaml: train.mixup_alpha .* \(model.text_encoder: null\)"):
        load_config("demo", overrides={"train": {"mixup_alpha": 0.2}})  # before any pipeline starts
    image_only = load_config("demo", overrides={"train": {"cutmix_alpha": 1.0}, "model": {"text_encoder": None}})
    assert image_only.train.cutmix_alpha == 1.0
    train = tiny_config.train.model_copy(update={"mixup_alpha": 0.2})
    with pytest.raises(ConfigError, match="train.mixup_alpha.*reads titles"):
        fit(demo_data, tiny_config.model, train, None, tiny_config.data.max_title_tokens, progress=False)
