import pytest

from kickvision.config import load_config
from kickvision.errors import ConfigError


@pytest.mark.parametrize("name", ["demo", "fashion", "gpu"])
def test_shipped_configs_load(name):
    assert load_config(name).name == name


def test_unknown_setting_names_the_setting(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="train.epochz"):
        load_config(path)


def test_wrong_type_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(path)


def test_dotted_overrides_build_nested_sections():
    from kickvision.config import dotted_overrides

    assert dotted_overrides(["train.epochs=3", "model.fusion=gated", "model.branch_loss_weight=0.5"]) == {
        "train": {"epochs": 3},
        "model": {"fusion": "gated", "branch_loss_weight": 0.5},
    }
    with pytest.raises(ConfigError):
        dotted_overrides(["train.epochs"])


def test_the_same_settings_in_another_order_are_the_same_config():
    # ZenML's cache key is the parameters' text: key order must not turn a cache hit into a miss.
    from kickvision.config import ImageEncoderConfig, TextEncoderConfig

    a = ImageEncoderConfig(name="vit_tiny_patch16_224", overrides={"patch_size": 8, "depth": 1})
    b = ImageEncoderConfig(name="vit_tiny_patch16_224", overrides={"depth": 1, "patch_size": 8})
    assert str(a) == str(b) and a == b
    assert str(TextEncoderConfig(overrides={"n_layers": 1, "dim": 32})) == str(
        TextEncoderConfig(overrides={"dim": 32, "n_layers": 1})
    )


def test_image_size_is_a_side_or_height_and_width(tmp_path):
    assert load_config("demo", overrides={"model": {"image_size": 40}}).model.image_hw == (40, 40)
    assert load_config("demo", overrides={"model": {"image_size": [80, 64]}}).model.image_hw == (80, 64)
    for bad in ([8, 64], 12, [80, 64, 3]):
        with pytest.raises(ConfigError, match="model.image_size"):
            load_config("demo", overrides={"model": {"image_size": bad}})
