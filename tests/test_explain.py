import numpy as np
import pytest
import torch
from PIL import Image

from kickvision.evaluate.explain import ImageOnlyInput, encode_product, explain_product, plot_explanation
from kickvision.model.bundle import BundleSpec, ModelBundle
from kickvision.model.encoders import build_tokenizer
from kickvision.model.net import build_model


@pytest.fixture(scope="module")
def tiny_bundle(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config.model, n_classes=3).eval()
    spec = BundleSpec(classes=["Boots", "Flats", "Heels"], max_title_tokens=12)
    return ModelBundle(model, build_tokenizer(tiny_config.model.text_encoder), spec)


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))


def test_wrapper_gives_the_fused_models_logits(tiny_bundle, photo):
    _, images, ids, mask = encode_product(tiny_bundle, photo, "Stride Women Black Heels")
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


def test_road_faithfulness_is_scored_per_branch_against_random_maps_on_the_same_products(shared_trained, learnt_data):
    from kickvision.evaluate.faithfulness import cam_faithfulness

    metrics = cam_faithfulness(shared_trained, learnt_data, n=3)
    assert set(metrics) == {
        f"cam_faithfulness_{family}{suffix}" for family in ("resnet", "vit", "random") for suffix in ("", "_std")
    } | {"cam_faithfulness_products"}
    assert metrics["cam_faithfulness_products"] == 3 and all(np.isfinite(v) for v in metrics.values())
    assert metrics == cam_faithfulness(shared_trained, learnt_data, n=3)  # same products, same random maps
