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


def test_a_setting_of_an_earlier_release_names_what_replaced_it(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("continual:\n  freeze_pretrained_encoders: true\n")
    with pytest.raises(ConfigError, match=r"continual.freeze_pretrained_encoders.*pretrained_trainable_layers: 0"):
        load_config(path)


def test_a_logit_adjustment_without_class_balanced_sampling_is_refused_naming_both_settings():
    load_config("fashion", overrides={"continual": {"logit_adjustment": [0.0, 0.5], "balanced_sampling": True}})
    with pytest.raises(ConfigError, match=r"continual.*logit_adjustment.*balanced_sampling: false"):
        load_config("fashion", overrides={"continual": {"logit_adjustment": [0.0, 0.5], "balanced_sampling": False}})


def test_an_updates_sampling_reads_true_false_or_a_power_between_and_refuses_one_outside_naming_the_setting(
    tmp_path,
):
    path = tmp_path / "sampling.yaml"
    for written, read in (("true", 1.0), ("false", 0.0), ("0.5", 0.5), ("1", 1.0), ('"false"', 0.0), ('"On"', 1.0)):
        path.write_text(f"continual:\n  balanced_sampling: {written}\n")
        assert load_config(path).continual.balanced_sampling == read
    path.write_text("continual:\n  balanced_sampling: 1.5\n")
    with pytest.raises(ConfigError, match=r"continual.balanced_sampling.*less than or equal to 1"):
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


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"train": {"lr": -0.001}}, "train.lr"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"encoder_lr": 0}}, "train.encoder_lr"),
        ({"train": {"label_smoothing": 1.5}}, "train.label_smoothing"),
        ({"seed": -1}, "seed"),
        ({"validate": {"max_image_pixels": 0}}, "validate.max_image_pixels"),
        ({"validate": {"min_image_side": -5}}, "validate.min_image_side"),
        ({"validate": {"title_min_chars": 50, "title_max_chars": 10}}, "validate"),
        ({"prune": {"lr": 0}}, "prune.lr"),
        ({"prune": {"encoder_lr": -1e-4}}, "prune.encoder_lr"),
        ({"continual": {"lr": -1}}, "continual.lr"),
        ({"pretrain": {"lr": 0}}, "pretrain.lr"),
        ({"pretrain": {"method": "views+mae"}}, "pretrain.method"),
        ({"pretrain": {"method": "views+views"}}, "pretrain.method"),
        ({"pretrain": {"views_crop_scale": 0}}, "pretrain.views_crop_scale"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"model": {"embedding_dim": 0}}, "model.embedding_dim"),
    ],
)
def test_out_of_range_settings_are_one_config_error_naming_the_setting(override, named):
    with pytest.raises(ConfigError, match=rf"setting '{named}'"):
        load_config("demo", overrides=override)


def test_a_minimum_above_its_maximum_says_which_two(tmp_path):
    with pytest.raises(ConfigError, match="title_min_chars .50. is above title_max_chars .10."):
        load_config("demo", overrides={"validate": {"title_min_chars": 50, "title_max_chars": 10}})


@pytest.mark.parametrize(
    ("override", "named"), [({"seed": 2**32}, "seed"), ({"train": {"lr": float("inf")}}, "train.lr")]
)
def test_a_seed_numpy_cannot_take_or_an_infinite_rate_is_refused_up_front(override, named):
    with pytest.raises(ConfigError, match=rf"setting '{named}'"):
        load_config("demo", overrides=override)


def test_pretraining_objectives_combine_in_one_spelling():
    cfg = load_config("demo", overrides={"pretrain": {"method": "labels + title_alignment"}})
    assert cfg.pretrain.method == "title_alignment+labels" and cfg.pretrain.objectives == ("title_alignment", "labels")
