"""Photo augmentation: flips exactly, crops and shifts keep the shoe and fill with the background,
colour jitter stays modest; the train section's knobs reach the engine."""

import pytest
import torch

from kickvision.train.augment import PhotoAugment
from kickvision.train.engine import fit_settings


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
