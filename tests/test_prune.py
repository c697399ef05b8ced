"""Structured pruning: smaller files and models, identical outputs after a save/load, the tolerance gates."""

import copy

import numpy as np
import pytest
import torch

from kickvision.model.bundle import BundleSpec, ModelBundle, load_bundle, save_bundle
from kickvision.model.costs import weights_file_bytes
from kickvision.model.encoders import build_tokenizer
from kickvision.model.net import build_model, count_parameters
from kickvision.model.predict import predict_logits
from kickvision.model.shapes import changed_shapes
from kickvision.serve.release import equip_for_release
from kickvision.train.losses import Distillation
from kickvision.train.prune import prune_bundle, prune_gate, prune_structured
from kickvision.train.update import update_bundle
from tests.conftest import prepare_drop

TINY_BERT = {  # BERT family (MiniLM in configs/fashion.yaml): query/key/value heads, no pooler
    "name": "bert-tiny",
    "model_type": "bert",
    "pretrained": False,
    "overrides": {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
}


@pytest.mark.parametrize("fusion,text", [("concat", None), ("gated", None), ("concat", TINY_BERT)])
def test_pruned_model_is_smaller_and_reloads_to_identical_outputs(tiny_config, tmp_path, fusion, text):
    from kickvision.config import TextEncoderConfig

    cfg = tiny_config.model.model_copy(update={"fusion": fusion})
    if text is not None:
        cfg = cfg.model_copy(update={"text_encoder": TextEncoderConfig.model_validate(text)})
    model = build_model(cfg, n_classes=5).eval()
    pruned = copy.deepcopy(model)
    prune_structured(pruned, ratio=0.5, head_ratio=0.5, round_to=None)
    assert count_parameters(pruned) < 0.6 * count_parameters(model)
    assert weights_file_bytes(pruned) < 0.6 * weights_file_bytes(model)
    heads = {m.num_heads for m in pruned.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads")}
    assert heads == {1}  # the tiny ViT had 2 heads per block

    tokenizer = build_tokenizer(cfg.text_encoder)
    spec = BundleSpec(
        classes=[f"c{i}" for i in range(5)], max_title_tokens=12, pruned_shapes=changed_shapes(pruned, model)
    )
    folder = save_bundle(ModelBundle(pruned, tokenizer, spec), tmp_path / "b")
    assert (folder / "model.safetensors").stat().st_size < 0.6 * weights_file_bytes(model)
    loaded = load_bundle(folder).model
    inputs = (torch.randn(3, 3, 32, 32), torch.randint(1000, 2000, (3, 12)), torch.ones(3, 12, dtype=torch.long))
    torch.testing.assert_close(loaded(*inputs).logits, pruned(*inputs).logits, rtol=0, atol=0)
    torch.testing.assert_close(loaded(*inputs).embedding, pruned(*inputs).embedding, rtol=0, atol=0)


TINY_DISTILBERT = {  # the demo config's family: q_lin/k_lin/v_lin heads, ffn.lin1
    "name": "distilbert-tiny",
    "model_type": "distilbert",
    "pretrained": False,
    "overrides": {"n_layers": 1, "dim": 32, "hidden_dim": 64, "n_heads": 4},
}


def _text_shapes(net) -> dict[str, int]:
    """The text encoder's hidden width, attention heads and feed-forward width (first layer)."""
    text = net.text_encoder.model
    width = text.get_input_embeddings().weight.shape[1]
    if text.config.model_type == "bert":
        attention, ffn = text.encoder.layer[0].attention.self, text.encoder.layer[0].intermediate.dense
        return {
            "width": width,
            "heads": attention.query.out_features // attention.attention_head_size,
            "ffn": ffn.out_features,
        }
    layer = text.transformer.layer[0]
    head_size = text.config.dim // text.config.n_heads
    return {
        "width": width,
        "heads": layer.attention.q_lin.out_features // head_size,
        "ffn": layer.ffn.lin1.out_features,
    }


@pytest.mark.parametrize(
    "text",
    [TINY_BERT | {"overrides": TINY_BERT["overrides"] | {"num_attention_heads": 4}}, TINY_DISTILBERT],
    ids=["bert", "distilbert"],
)
def test_keeping_the_text_width_prunes_the_text_encoders_heads_and_feed_forward_but_not_its_hidden_width(
    tiny_config, tmp_path, text
):
    from kickvision.config import TextEncoderConfig

    cfg = tiny_config.model.model_copy(update={"text_encoder": TextEncoderConfig.model_validate(text)})
    model = build_model(cfg, n_classes=5).eval()
    narrowed, kept = copy.deepcopy(model), copy.deepcopy(model)
    prune_structured(narrowed, ratio=0.5, head_ratio=0.5, round_to=None)
    prune_structured(kept, ratio=0.5, head_ratio=0.5, round_to=None, keep_text_width=True)

    assert _text_shapes(model) == {"width": 32, "heads": 4, "ffn": 64}
    assert _text_shapes(narrowed) == {"width": 16, "heads": 2, "ffn": 32}
    assert _text_shapes(kept) == {"width": 32, "heads": 2, "ffn": 32}
    assert count_parameters(narrowed) < count_parameters(kept) < count_parameters(model)
    # the photo branches are pruned as before: the knob is the text encoder's alone
    photo = lambda net: [p.shape for p in net.image_encoders.parameters()]  # noqa: E731
    assert photo(kept) == photo(narrowed) != photo(model)

    spec = BundleSpec(
        classes=[f"c{i}" for i in range(5)], max_title_tokens=12, pruned_shapes=changed_shapes(kept, model)
    )
    loaded = load_bundle(save_bundle(ModelBundle(kept, build_tokenizer(cfg.text_encoder), spec), tmp_path / "b")).model
    inputs = (torch.randn(3, 3, 32, 32), torch.randint(1000, 2000, (3, 12)), torch.ones(3, 12, dtype=torch.long))
    torch.testing.assert_close(loaded(*inputs).logits, kept(*inputs).logits, rtol=0, atol=0)


def test_a_trained_model_loaded_from_disk_fine_tunes_its_generic_pretrained_text_encoder_at_prune_encoder_lr(
    shared_trained, learnt_data, tiny_config, tmp_path
):
    """The prune step reads its model from the train step's artifact: rebuilt without weights, its encoders
    learn from the spec that the title encoder started from MiniLM, and the fine-tune gives it `prune.encoder_lr`."""
    champion = copy.copy(shared_trained)
    champion.spec = shared_trained.spec.model_copy(deep=True)
    champion.spec.training.pretrained = {"text": True}  # as if the title encoder had started from MiniLM
    loaded = load_bundle(save_bundle(champion, tmp_path / "trained"))
    assert loaded.model.text_encoder.pretrained_loaded
    assert not any(e.pretrained_loaded for e in loaded.model.image_encoders)  # the spec says they started at random
    before = {n: p.detach().clone() for n, p in loaded.model.text_encoder.model.embeddings.named_parameters()}

    def embeddings_moved(**changes) -> float:
        """The largest change of the embeddings seen by any forward of the fine-tune: the kept epoch may be the
        pruned starting point (when no fine-tune epoch validates higher), so the final weights cannot tell."""
        cfg = tiny_config.prune.model_copy(
            update={"keep_text_width": True, "tolerance": 1.0, "lr": 0.01, "finetune_epochs": 2} | changes
        )
        moved = [0.0]

        def watch(module, args, output):  # travels with the module into prune_bundle's copy of the model
            now = dict(module.named_parameters())
            moved[0] = max([moved[0]] + [(now[n].detach() - before[n]).abs().max().item() for n in before])

        handle = loaded.model.text_encoder.model.embeddings.register_forward_hook(watch)
        try:
            result = prune_bundle(loaded, learnt_data, cfg, tiny_config.train, progress=False)
        finally:
            handle.remove()
        assert result.kept_pruned and result.metrics["prune_val_top1_after"] > 0
        return moved[0]

    assert embeddings_moved(encoder_lr=1e-12) < 1e-6 < embeddings_moved()


def test_prune_bundle_reports_the_metrics_and_keeps_the_pruned_model_within_tolerance(
    shared_trained, learnt_data, tiny_config
):
    result = prune_bundle(shared_trained, learnt_data, tiny_config.prune, tiny_config.train, progress=False)
    assert result.kept_pruned and result.bundle is not shared_trained and result.reason.startswith("pruned")
    m = result.metrics
    for name in ("params", "file_bytes", "val_top1", "macs", "latency_b1_ms", "latency_b32_ms"):
        assert f"prune_{name}_before" in m and f"prune_{name}_after" in m
    assert m["prune_params_after"] < m["prune_params_before"] and m["prune_macs_after"] < m["prune_macs_before"]
    spec = result.bundle.spec
    assert spec.pruned_shapes and spec.pruning.ratio == tiny_config.prune.ratio
    assert spec.training.parameters == m["prune_params_after"] and spec.lineage == shared_trained.spec.lineage
    model = result.bundle.model  # the pruned model votes with weights chosen for it, and says so
    votes = dict(zip(model.branch_names, model.branch_head_weights.tolist(), strict=True))
    assert spec.training.branch_head_weights == votes
    assert len(result.history) == tiny_config.prune.finetune_epochs
    again = prune_bundle(result.bundle, learnt_data, tiny_config.prune, tiny_config.train, progress=False)
    assert again.bundle is result.bundle and "already pruned" in again.reason


def test_distillation_loss_is_zero_for_the_teacher_itself_and_grows_with_disagreement(tiny_config):
    teacher = build_model(tiny_config.model, n_classes=5).eval()
    batch = {
        "image": torch.randn(4, 3, 32, 32),
        "input_ids": torch.randint(1000, 2000, (4, 12)),
        "attention_mask": torch.ones(4, 12, dtype=torch.long),
    }
    out = teacher(batch["image"], batch["input_ids"], batch["attention_mask"])  # the fused head alone
    teacher.branch_head_weights.fill_(1.0)  # a teacher whose branch heads vote when it is served
    loss = Distillation(teacher, weight=1.0, temperature=2.0)  # teaches with its fused head
    assert loss(batch, out).item() == pytest.approx(0.0, abs=1e-6)
    shifted = type(out)(**{**vars(out), "logits": out.logits + torch.randn_like(out.logits) * 3})
    assert loss(batch, shifted).item() > 0.01


def test_the_tolerance_gate_keeps_the_unpruned_model_when_pruning_costs_accuracy(
    shared_trained, learnt_data, tiny_config
):
    # Nine in ten channels and heads gone and no fine-tune: the model forgets what it learnt.
    brutal = tiny_config.prune.model_copy(
        update={"ratio": 0.9, "head_ratio": 0.5, "round_to": None, "finetune_epochs": 0, "tolerance": 0.0}
    )
    result = prune_bundle(shared_trained, learnt_data, brutal, tiny_config.train, progress=False)
    assert not result.kept_pruned and result.bundle is shared_trained and "lost too much accuracy" in result.reason
    m = result.metrics
    assert m["prune_params_after"] < m["prune_params_before"]  # measured, then refused
    assert m["prune_val_top1_after"] < m["prune_val_top1_before"]
    # nothing to fine-tune; the pruned model's own branch-head votes (chosen on validation) can only add
    assert m["prune_val_top1_after"] >= m["prune_val_top1_pruned_no_finetune"]


@pytest.mark.parametrize(
    ("top1_after", "macro_f1_after", "macro_f1_tolerance", "kept", "words"),
    [
        (0.90, 0.80, None, True, "validation top-1 0.9000 -> 0.9000"),  # macro-F1 not checked: not in the reason
        (0.90, 0.85, 0.01, False, "lost too much on the smaller categories (macro-F1)"),
        (0.90, 0.865, 0.01, True, "macro-F1 0.8700 -> 0.8650"),
        (0.89, 0.87, 0.01, False, "lost too much accuracy"),
        (float("nan"), 0.87, None, False, "lost too much accuracy"),
        (0.895, 0.77, 0.1, True, "0.9000 -> 0.8950 (tolerance 0.0050)"),  # exactly the tolerances: within them
    ],
)
def test_the_prune_gate_reads_top1_and_where_set_macro_f1(top1_after, macro_f1_after, macro_f1_tolerance, kept, words):
    before = {"val_top1": 0.90, "val_macro_f1": 0.87}
    after = {"val_top1": top1_after, "val_macro_f1": macro_f1_after}
    decision, reason = prune_gate(before, after, tolerance=0.005, macro_f1_tolerance=macro_f1_tolerance)
    assert decision is kept and words in reason
    assert ("macro-F1" in reason) is (macro_f1_tolerance is not None)


def test_a_macro_f1_tolerance_keeps_the_unpruned_model_when_pruning_costs_the_smaller_categories(
    shared_trained, learnt_data, tiny_config
):
    # Top-1's gate wide open: the pruned model would be kept but for what it lost in macro-F1.
    brutal = tiny_config.prune.model_copy(
        update={"ratio": 0.9, "head_ratio": 0.5, "round_to": None, "finetune_epochs": 0, "tolerance": 1.0}
    )
    lenient = prune_bundle(shared_trained, learnt_data, brutal, tiny_config.train, progress=False)
    m = lenient.metrics
    assert lenient.kept_pruned and m["prune_val_macro_f1_after"] < m["prune_val_macro_f1_before"]
    strict = brutal.model_copy(update={"macro_f1_tolerance": 0.0})
    result = prune_bundle(shared_trained, learnt_data, strict, tiny_config.train, progress=False)
    assert not result.kept_pruned and result.bundle is shared_trained
    assert result.reason.startswith("kept the unpruned model, pruning lost too much on the smaller categories")
    same = [k for k in m if "_val_" in k or "params" in k]  # the same pruning, scored alike: only the gate differs
    assert len(same) >= 6 and {k: result.metrics[k] for k in same} == pytest.approx({k: m[k] for k in same})


def test_a_pruned_champion_can_be_updated(trained_bundle, learnt_data, tiny_config, tmp_path):
    from kickvision.data.demo import write_demo_drop

    pruned = prune_bundle(trained_bundle, learnt_data, tiny_config.prune, tiny_config.train, progress=False).bundle
    equip_for_release(pruned, learnt_data, tiny_config.continual, seed=0)
    pruned = load_bundle(save_bundle(pruned, tmp_path / "pruned"))  # as the registry would hand it over
    params = dict(pruned.model.named_parameters())
    assert all(pruned.continual.fisher[n].shape == p.shape for n, p in params.items())

    drop_dir = write_demo_drop(tmp_path / "drop", n_per_class=3, new_per_class=12, image_size=32)
    drop = prepare_drop(drop_dir, tiny_config, pruned.tokenizer, known_classes=pruned.classes)
    cfg = tiny_config.continual.model_copy(update={"epochs": 1})
    updated = update_bundle(pruned, drop, cfg, tiny_config.train, progress=False).bundle
    # One new category: one more row (+ bias) in the classifier and in each branch head.
    heads = [updated.model.classifier, *(updated.model.branch_classifiers or [])]
    assert count_parameters(updated.model) - count_parameters(pruned.model) == sum(h.in_features + 1 for h in heads)
    reloaded = load_bundle(save_bundle(updated, tmp_path / "updated"))
    assert reloaded.spec.pruned_shapes == pruned.spec.pruned_shapes
    a, _ = predict_logits(updated.model, drop, np.arange(4))
    b, _ = predict_logits(reloaded.model, drop, np.arange(4))
    np.testing.assert_allclose(a, b, rtol=0, atol=0)
