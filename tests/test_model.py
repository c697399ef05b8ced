import numpy as np
import pandas as pd
import pytest
import torch

from kickvision.config import ModelConfig
from kickvision.data.catalog import read_catalog
from kickvision.data.prepare import prepare_catalog
from kickvision.data.validation import quarantine_bad_rows
from kickvision.errors import ConfigError
from kickvision.model.bundle import load_bundle, save_bundle
from kickvision.model.encoders import build_tokenizer
from kickvision.model.net import MultimodalShoeNet, build_model
from kickvision.model.predict import predict_logits
from kickvision.serve.predictor import ShoePredictor
from kickvision.train.fit import fit


def _inputs(cfg: ModelConfig, batch=4, tokens=8):
    return (
        torch.randn(batch, 3, cfg.image_size, cfg.image_size),
        torch.randint(1000, 2000, (batch, tokens)),
        torch.ones(batch, tokens, dtype=torch.long),
    )


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_forward_backward_tiny(tiny_config, fusion):
    cfg = tiny_config.model.model_copy(update={"fusion": fusion})
    model = build_model(cfg, n_classes=5)
    out = model(*_inputs(cfg))
    assert out.logits.shape == (4, 5) and out.embedding.shape == (4, cfg.embedding_dim)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(4), atol=1e-5)
    out.logits.sum().backward()
    for name in ("image_encoders.0", "image_encoders.1", "text_encoder"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"no gradient reaches {name}"


def test_missing_modality_still_predicts_and_changes_output(tiny_config):
    model = build_model(tiny_config.model, n_classes=3).eval()
    images, ids, mask = _inputs(tiny_config.model)
    full = model(images, ids, mask).logits
    no_image = model(images, ids, mask, image_present=torch.zeros(4)).logits
    no_image_other_pixels = model(torch.randn_like(images), ids, mask, image_present=torch.zeros(4)).logits
    assert not torch.allclose(full, no_image)
    assert torch.allclose(no_image, no_image_other_pixels, atol=1e-5)  # pixels of a missing photo are ignored


def test_single_modality_models_build(tiny_config):
    image_only = tiny_config.model.model_copy(update={"text_encoder": None})
    text_only = tiny_config.model.model_copy(update={"image_encoders": []})
    assert build_model(image_only, 3)(*_inputs(image_only)).logits.shape == (4, 3)
    assert build_model(text_only, 3)(*_inputs(text_only)).logits.shape == (4, 3)
    with pytest.raises(ConfigError):
        MultimodalShoeNet(tiny_config.model.model_copy(update={"text_encoder": None, "image_encoders": []}), 3)


def test_bundle_round_trip_gives_identical_outputs(tiny_config, demo_drop, tmp_path):
    catalog = quarantine_bad_rows(read_catalog(demo_drop), tiny_config.validate_).catalog
    tokenizer = build_tokenizer(tiny_config.model.text_encoder)
    data = prepare_catalog(catalog, tokenizer, tiny_config.model.image_size, tiny_config.data, seed=1)
    result = fit(
        data, tiny_config.model, tiny_config.train, tokenizer, tiny_config.data.max_title_tokens, progress=False
    )
    save_bundle(result.bundle, tmp_path / "bundle")
    assert not list((tmp_path / "bundle").rglob("*.pt*")) and not list((tmp_path / "bundle").rglob("*.bin"))
    loaded = load_bundle(tmp_path / "bundle")
    idx = data.indices("test")
    before, _ = predict_logits(result.bundle.model, data, idx)
    after, _ = predict_logits(loaded.model, data, idx)
    np.testing.assert_allclose(before, after, atol=1e-5)

    rows = catalog.rows.head(3)
    frame = pd.DataFrame({"image": [str(demo_drop / p) for p in rows["image"]], "title": rows["title"]})
    predicted = ShoePredictor(loaded).predict_frame(frame)
    assert predicted["category"].isin(loaded.classes).all()
    assert np.allclose([sum(p.values()) for p in predicted["probabilities"]], 1, atol=1e-4)
    title_only = ShoePredictor(loaded).predict_frame(pd.DataFrame({"title": ["Stride Women Black Heels"]}))
    assert len(title_only) == 1


def test_branch_heads_train_every_branch_alone_and_stay_out_of_inference(tiny_config):
    cfg = tiny_config.model.model_copy(update={"branch_loss_weight": 0.5})
    model = build_model(cfg, n_classes=5).train()
    out = model(*_inputs(cfg))
    assert len(out.branch_logits) == 3 and all(b.shape == (4, 5) for b in out.branch_logits)
    # A branch head's loss reaches its own encoder only.
    out.branch_logits[0].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image_encoders[0].parameters())
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model.eval()(*_inputs(cfg)).branch_logits is None
    no_heads = tiny_config.model.model_copy(update={"branch_loss_weight": 0.0})
    assert build_model(no_heads, 5).branch_classifiers is None  # weight 0: no heads at all


def test_branch_loss_is_part_of_training_and_survives_save_load(tiny_config, demo_drop, tmp_path):
    cfg = tiny_config.model_copy(update={"model": tiny_config.model.model_copy(update={"branch_loss_weight": 1.0})})
    catalog = quarantine_bad_rows(read_catalog(demo_drop), cfg.validate_).catalog
    tokenizer = build_tokenizer(cfg.model.text_encoder)
    data = prepare_catalog(catalog, tokenizer, cfg.model.image_size, cfg.data, seed=1)
    result = fit(data, cfg.model, cfg.train, tokenizer, cfg.data.max_title_tokens, progress=False)
    save_bundle(result.bundle, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.model.branch_classifiers is not None
    for name, tensor in result.bundle.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)
