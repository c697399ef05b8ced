import numpy as np
import pytest
import torch
from PIL import Image

from kickvision.bundle import ModelBundle
from kickvision.data import images_to_tensor
from kickvision.explain import ImageOnlyInput, _encode, explain_product, plot_explanation
from kickvision.model import build_model, build_tokenizer


@pytest.fixture(scope="module")
def tiny_bundle():
    from kickvision.config import load_config
    from tests.conftest import REPO, TINY_RUN

    cfg = load_config(REPO / "configs" / "demo.yaml", overrides=TINY_RUN)
    torch.manual_seed(0)
    model = build_model(cfg.model, n_classes=3).eval()
    return ModelBundle(model, build_tokenizer(cfg.model.text_encoder), ["Boots", "Flats", "Heels"], 12)


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))


def test_wrapper_gives_the_fused_models_logits(tiny_bundle, photo):
    pixels, ids, mask = _encode(tiny_bundle, photo, "Stride Women Black Heels")
    images = images_to_tensor(pixels[None])
    with torch.no_grad():
        direct = tiny_bundle.model(images, ids, mask).logits
        wrapped = ImageOnlyInput(tiny_bundle.model, ids, mask)(images)
    torch.testing.assert_close(direct, wrapped)


def test_gradcam_plus_plus_maps_for_both_image_branches(tiny_bundle, photo):
    explanation = explain_product(tiny_bundle, photo, "Stride Women Black Party Heels")
    size = tiny_bundle.model_config.image_size
    assert set(explanation.cams) == {"0_resnet18", "1_vit_tiny_patch16_224"}
    for cam in explanation.cams.values():
        assert cam.shape == (size, size)
        assert cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert [w for w, _ in explanation.words] == ["Stride", "Women", "Black", "Party", "Heels"]
    assert explanation.target == max(explanation.probabilities, key=explanation.probabilities.get)


def test_explain_a_chosen_class_and_missing_inputs(tiny_bundle, photo, tmp_path):
    chosen = explain_product(tiny_bundle, photo, None, target="Boots")
    assert chosen.target == "Boots" and chosen.words == []
    no_photo = explain_product(tiny_bundle, None, "Canvas Shoes")
    assert no_photo.cams == {} and len(no_photo.words) == 2
    with pytest.raises(ValueError, match="unknown class"):
        explain_product(tiny_bundle, photo, "x", target="Sandals")
    assert plot_explanation(chosen, tmp_path / "e.png").stat().st_size > 0
    assert plot_explanation(no_photo, tmp_path / "n.png").stat().st_size > 0
