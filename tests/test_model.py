"""MultimodalShoeNet: shapes, gradients to every branch, missing modalities, per-branch heads."""

import pytest
import torch
import torch.nn.functional as F

from kickvision.config import ModelConfig
from kickvision.errors import ConfigError
from kickvision.model.bundle import BundleSpec, ModelBundle, load_bundle, save_bundle
from kickvision.model.encoders import build_tokenizer
from kickvision.model.net import MultimodalShoeNet, build_model
from kickvision.train.fit import fit
from kickvision.train.losses import ClassificationLoss


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


def test_the_text_encoder_reads_only_the_token_columns_some_title_in_the_batch_uses(tiny_config):
    """Titles are padded to max_title_tokens; columns that are padding in every row are dropped
    before the transformer (its cost grows with them) and the title vectors stay the same."""
    encoder = build_model(tiny_config.model, n_classes=3).text_encoder.eval()
    ids = torch.randint(1000, 2000, (3, 40))
    mask = torch.zeros(3, 40, dtype=torch.long)
    for row, length in enumerate((5, 9, 2)):
        mask[row, :length] = 1
    ids = ids * mask  # 0 = [PAD]
    widths = []
    encoder.model.register_forward_pre_hook(
        lambda _module, _args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    with torch.no_grad():
        padded_to_40 = encoder(ids, mask)
        padded_to_12 = encoder(ids[:, :12], mask[:, :12])
        no_padding = encoder(ids[:, :9], mask[:, :9])
    assert widths == [9, 9, 9]  # the longest title's tokens, however far the batch was padded
    assert torch.allclose(padded_to_40, no_padding, atol=1e-5)
    assert torch.allclose(padded_to_12, no_padding, atol=1e-5)


def test_single_modality_models_build(tiny_config):
    image_only = tiny_config.model.model_copy(update={"text_encoder": None})
    text_only = tiny_config.model.model_copy(update={"image_encoders": []})
    assert build_model(image_only, 3)(*_inputs(image_only)).logits.shape == (4, 3)
    assert build_model(text_only, 3)(*_inputs(text_only)).logits.shape == (4, 3)
    with pytest.raises(ConfigError):
        MultimodalShoeNet(tiny_config.model.model_copy(update={"text_encoder": None, "image_encoders": []}), 3)


def test_branch_heads_train_every_branch_alone_and_vote_outside_training_only_by_their_weights(tiny_config):
    cfg = tiny_config.model.model_copy(update={"branch_loss_weight": 0.5})
    model = build_model(cfg, n_classes=5).train()
    out = model(*_inputs(cfg))
    assert len(out.branch_logits) == 3 and all(b.shape == (4, 5) for b in out.branch_logits)
    # A branch head's loss reaches its own encoder only.
    out.branch_logits[0].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image_encoders[0].parameters())
    assert all(p.grad is None for p in model.text_encoder.parameters())
    model.eval()
    assert model.branch_head_weights.tolist() == [0.0, 0.0, 0.0]  # untuned: the fused head alone
    images, ids, mask = _inputs(cfg)
    with torch.no_grad():
        alone = model(images, ids, mask)
        model.branch_head_weights.copy_(torch.tensor([0.0, 0.0, 0.5]))
        voted = model(images, ids, mask)
        no_title = model(images, ids, mask, text_present=torch.zeros(4))
        model.branch_head_weights.zero_()
        no_title_alone = model(images, ids, mask, text_present=torch.zeros(4))
    torch.testing.assert_close(voted.logits, alone.logits + 0.5 * alone.branch_logits[2])
    torch.testing.assert_close(no_title.logits, no_title_alone.logits)  # a missing title's head does not vote
    no_heads = tiny_config.model.model_copy(update={"branch_loss_weight": 0.0})
    assert build_model(no_heads, 5).branch_classifiers is None  # weight 0: no heads at all


def test_the_training_objective_adds_each_branch_heads_cross_entropy(tiny_config):
    model_cfg = tiny_config.model.model_copy(update={"branch_loss_weight": 0.5})
    model = build_model(model_cfg, n_classes=5).train()
    images, ids, mask = _inputs(model_cfg)
    batch = {"image": images, "input_ids": ids, "attention_mask": mask, "label": torch.tensor([0, 1, 2, 3])}
    out = model(images, ids, mask)
    train = tiny_config.train.model_copy(update={"contrastive_weight": 0.0, "label_smoothing": 0.0})
    loss = ClassificationLoss.from_config(train, model_cfg)(batch, out)
    branches = torch.stack([F.cross_entropy(b, batch["label"]) for b in out.branch_logits]).mean()
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, batch["label"]) + 0.5 * branches)


def test_on_mixed_photos_the_objective_reads_the_blended_targets_and_leaves_out_the_contrastive_term(tiny_config):
    model_cfg = tiny_config.model.model_copy(update={"branch_loss_weight": 0.5})
    model = build_model(model_cfg, n_classes=5).train()
    images, ids, mask = _inputs(model_cfg)
    labels = torch.tensor([0, 1, 2, 3])
    target = torch.tensor([[0.0, 0.0, 0.0, 0.7, 0.3]]).repeat(4, 1)  # nothing like the labels
    batch = {"image": images, "input_ids": ids, "attention_mask": mask, "label": labels, "target": target}
    out = model(images, ids, mask)
    train = tiny_config.train.model_copy(update={"contrastive_weight": 5.0, "label_smoothing": 0.2})
    loss = ClassificationLoss.from_config(train, model_cfg)(batch, out)
    branches = torch.stack([F.cross_entropy(b, target) for b in out.branch_logits]).mean()
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, target) + 0.5 * branches)


def test_a_model_with_branch_heads_survives_save_load(tiny_config, demo_data, tmp_path):
    model_cfg = tiny_config.model.model_copy(update={"branch_loss_weight": 1.0})
    tokenizer = build_tokenizer(model_cfg.text_encoder)
    trained = fit(demo_data, model_cfg, tiny_config.train, tokenizer, 12, progress=False).bundle
    loaded = load_bundle(save_bundle(trained, tmp_path / "bundle"))
    assert loaded.model.branch_classifiers is not None
    for name, tensor in trained.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_branch_head_weights_are_chosen_on_validation_and_rescue_a_broken_fused_head(trained_bundle, learnt_data):
    from kickvision.model.predict import predict_logits
    from kickvision.train.fusion import GRID, choose_branch_head_weights

    model, val = trained_bundle.model, learnt_data.indices("val")
    labels = learnt_data.labels()[val]
    chosen = trained_bundle.spec.training.branch_head_weights
    assert set(chosen) == {"0_resnet18", "1_vit_tiny_patch16_224", "text"} and set(chosen.values()) <= set(GRID)
    assert chosen == dict(zip(chosen, model.branch_head_weights.tolist(), strict=True))

    def val_top1() -> float:
        return float((predict_logits(model, learnt_data, val)[0].argmax(1) == labels).mean())

    tuned = val_top1()
    model.branch_head_weights.zero_()
    assert tuned >= val_top1()  # (0, 0) competed: the vote never costs validation accuracy
    with torch.no_grad():  # a fused head that knows nothing: the branch heads must carry the prediction
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    broken = val_top1()
    rescued = choose_branch_head_weights(model, learnt_data, val)
    assert max(rescued.values()) > 0 and val_top1() > broken + 0.2


def test_a_bundle_saved_before_the_branch_heads_voted_loads_with_them_silent(tiny_config, tmp_path):
    from safetensors.torch import load_file, save_file

    model_cfg = tiny_config.model.model_copy(update={"branch_loss_weight": 1.0})
    model = build_model(model_cfg, 3).eval()
    model.branch_head_weights.fill_(0.5)
    spec = BundleSpec(classes=["a", "b", "c"], max_title_tokens=12)
    folder = save_bundle(ModelBundle(model, build_tokenizer(model_cfg.text_encoder), spec), tmp_path / "old")
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    del state["branch_head_weights"]
    save_file(state, str(weights))
    assert load_bundle(folder).model.branch_head_weights.tolist() == [0.0, 0.0, 0.0]
