import numpy as np
import pytest
import torch
from PIL import Image

from kickvision.data.prepare import images_to_tensor
from kickvision.evaluate.explain import ImageOnlyInput, _encode, explain_product, plot_explanation
from kickvision.model.bundle import ModelBundle
from kickvision.model.encoders import build_tokenizer
from kickvision.model.net import build_model


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


def test_road_faithfulness_is_scored_per_branch_and_for_random_maps(tiny_config, demo_drop):
    from kickvision.data.catalog import read_catalog
    from kickvision.data.prepare import prepare_catalog
    from kickvision.data.validation import quarantine_bad_rows
    from kickvision.evaluate.faithfulness import cam_faithfulness
    from kickvision.train.fit import fit

    tokenizer = build_tokenizer(tiny_config.model.text_encoder)
    catalog = quarantine_bad_rows(read_catalog(demo_drop), tiny_config.validate_).catalog
    data = prepare_catalog(catalog, tokenizer, tiny_config.model.image_size, tiny_config.data, seed=0)
    bundle = fit(data, tiny_config.model, tiny_config.train, tokenizer, 12, progress=False).bundle
    metrics = cam_faithfulness(bundle, data, n=3)
    for family in ("resnet", "vit", "random"):
        # a difference of class probabilities: |score| <= 1
        assert -1 <= metrics[f"cam_faithfulness_{family}"] <= 1 and metrics[f"cam_faithfulness_{family}_std"] >= 0
    assert metrics["cam_faithfulness_products"] == 3
