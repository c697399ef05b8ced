"""The training engine: one optimizer/schedule factory, best-epoch keeping and early stopping for every loop."""

import copy
from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from kickvision.config import TextEncoderConfig, load_config
from kickvision.data.images import resolve_image_transform
from kickvision.errors import ConfigError
from kickvision.model.net import build_model
from kickvision.train import engine
from kickvision.train.augment import PhotoAugment, PhotoMix
from kickvision.train.engine import (
    classify,
    compiled,
    cpu_has_native_bf16,
    create_optimizer,
    create_scheduler,
    pick_device,
    split_validator,
    train_loop,
)
from kickvision.train.loader import make_loader
from kickvision.train.losses import ClassificationLoss
from kickvision.train.settings import LoopSettings, finetune_settings, fit_settings, pretrain_settings, update_settings


def _scripted(values, key="val_top1"):
    """A validator that reports the given scores in turn (the engine's choices are what is under test)."""
    scores = iter(values)
    return lambda model: {key: next(scores)}


def _run(tiny_config, demo_data, settings, validator, snapshots):
    torch.manual_seed(0)
    model = build_model(tiny_config.model, len(demo_data.classes))
    snapshots.append(copy.deepcopy(model.state_dict()))

    def remember(epoch, metrics):
        snapshots.append(copy.deepcopy(model.state_dict()))

    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    result = train_loop(
        model, demo_data, demo_data.indices("train"), settings, loss, validator, on_epoch_end=remember, progress=False
    )
    return model, result


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_the_best_epoch_is_kept_and_training_stops_after_patience_epochs_without_progress(tiny_config, demo_data):
    settings = LoopSettings(epochs=8, batch_size=16, lr=0.01, monitor="val_top1", patience=2)
    snapshots = []
    model, result = _run(tiny_config, demo_data, settings, _scripted([0.2, 0.5, 0.5, 0.4, 0.9]), snapshots)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]  # epochs 3 and 4 brought nothing better
    assert result.best_epoch == 2 and result.best_score == 0.5  # a tie keeps the earlier epoch
    assert _same(model.state_dict(), snapshots[2]) and not _same(model.state_dict(), snapshots[3])


def test_with_later_wins_ties_an_equal_later_epoch_replaces_the_kept_one(tiny_config, demo_data):
    settings = LoopSettings(epochs=3, batch_size=16, lr=0.01, monitor="val_top1", later_wins_ties=True)
    snapshots = []
    model, result = _run(tiny_config, demo_data, settings, _scripted([0.5, 0.5, 0.4]), snapshots)
    assert result.best_epoch == 2 and _same(model.state_dict(), snapshots[2])


def test_a_nan_validation_score_never_counts_as_progress(tiny_config, demo_data):
    settings = LoopSettings(epochs=4, batch_size=16, lr=0.01, monitor="val_loss", patience=2)
    snapshots = []
    nan = float("nan")
    model, result = _run(tiny_config, demo_data, settings, _scripted([0.7, nan, nan, 0.1], "val_loss"), snapshots)
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and result.best_epoch == 1


def test_a_loss_monitor_is_minimised(tiny_config, demo_data):
    settings = LoopSettings(epochs=3, batch_size=16, lr=0.01, monitor="val_loss")
    snapshots = []
    model, result = _run(tiny_config, demo_data, settings, _scripted([0.9, 0.4, 0.7], "val_loss"), snapshots)
    assert result.best_epoch == 2 and _same(model.state_dict(), snapshots[2])


def test_with_score_start_the_starting_weights_win_when_no_epoch_beats_them(tiny_config, demo_data):
    settings = LoopSettings(epochs=2, batch_size=16, lr=0.01, monitor="val_top1", score_start=True)
    snapshots = []
    model, result = _run(tiny_config, demo_data, settings, _scripted([0.8, 0.5, 0.7]), snapshots)
    assert result.best_epoch == 0 and result.start_metrics == {"val_top1": 0.8}
    assert _same(model.state_dict(), snapshots[0])


def test_without_a_monitor_the_last_epoch_is_kept(tiny_config, demo_data):
    settings = LoopSettings(epochs=2, batch_size=16, lr=0.01, monitor=None)
    snapshots = []
    model, result = _run(
        tiny_config, demo_data, settings, split_validator(demo_data, demo_data.indices("val")), snapshots
    )
    assert result.best_epoch == 2 and _same(model.state_dict(), snapshots[2])
    assert {"train_loss", "val_top1", "val_macro_f1", "val_loss"} <= set(result.history[-1])


def test_with_a_weight_average_the_average_is_what_is_validated_and_kept(tiny_config, demo_data):
    validate = split_validator(demo_data, demo_data.indices("val"))
    plain = LoopSettings(epochs=2, batch_size=16, lr=0.01, monitor=None)
    last, _ = _run(tiny_config, demo_data, plain, validate, [])
    live = []  # the weights the optimizer moves, after each epoch
    averaged, result = _run(tiny_config, demo_data, replace(plain, ema_decay=0.9), validate, live)
    # the average does not change the steps taken: the live weights end where the plain run's do
    assert all(torch.allclose(live[2][k].cpu(), v, atol=1e-6) for k, v in last.state_dict().items())
    assert not _same(averaged.state_dict(), last.state_dict())  # ... but the average is what is kept
    assert result.history[-1]["val_loss"] == pytest.approx(validate(averaged)["val_loss"])
    assert result.history[-1]["val_loss"] != pytest.approx(validate(last)["val_loss"])


def test_with_a_weight_average_the_best_epochs_average_is_kept_not_its_live_weights(tiny_config, demo_data):
    settings = LoopSettings(epochs=3, batch_size=16, lr=0.01, monitor="val_loss", ema_decay=0.9)
    live = []
    model, result = _run(tiny_config, demo_data, settings, _scripted([0.9, 0.4, 0.7], "val_loss"), live)
    assert result.best_epoch == 2
    assert not any(_same(model.state_dict(), weights) for weights in live)  # an average, not a step's weights


def test_a_model_comes_back_from_the_loop_contiguous_so_safetensors_can_save_it(tiny_config, demo_data, tmp_path):
    """On a GPU the loop keeps the weights channels-last (NHWC); what it hands back is always contiguous."""
    torch.manual_seed(0)
    model = build_model(tiny_config.model, len(demo_data.classes)).to(memory_format=torch.channels_last)
    assert not all(t.is_contiguous() for t in model.state_dict().values())
    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None)
    train_loop(model, demo_data, demo_data.indices("train")[:32], settings, loss, _scripted([0.5]), progress=False)
    assert all(t.is_contiguous() for t in model.state_dict().values())
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))


def test_the_optimizer_is_torchs_fused_adamw_and_steps_as_the_per_tensor_one_does(tiny_config, demo_data):
    """The fused kernel takes every tensor in one pass (on a CPU torch does not pick it by itself); its
    steps are AdamW's, the same as the per-tensor loop's to float rounding."""
    torch.manual_seed(0)
    fused_model = build_model(tiny_config.model, len(demo_data.classes)).eval()  # eval: no dropout draws
    per_tensor_model = copy.deepcopy(fused_model)
    start = copy.deepcopy(fused_model.state_dict())
    fused = create_optimizer(fused_model, LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None))
    assert fused.defaults["fused"]
    twin = dict(zip(fused_model.parameters(), per_tensor_model.parameters(), strict=True))
    groups = [
        g | {"params": [twin[p] for p in g["params"]], "fused": False, "foreach": False} for g in fused.param_groups
    ]
    per_tensor = torch.optim.AdamW(groups)
    loss_fn = ClassificationLoss.from_config(tiny_config.train, tiny_config.model)
    batch = next(iter(make_loader(demo_data, demo_data.indices("train")[:16], 16, 0, balanced=False)))
    transform = resolve_image_transform(tiny_config.model)
    batch["image"] = transform.standardise(transform.to_unit(batch["image"]))
    for model, optimizer in ((fused_model, fused), (per_tensor_model, per_tensor)):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(batch, classify(model, batch)).backward()
            optimizer.step()
    assert not _same(start, fused_model.state_dict())
    # Rounding, not another rule: the two differ by under 2% of the furthest any weight moved (~0.03 in
    # three steps at lr 0.01; 1.1e-4 measured on a CPU without AVX-512). Another beta, epsilon or weight
    # decay moves weights by a sizeable share of a step.
    moved = max((p - start[n]).abs().max().item() for n, p in fused_model.named_parameters())
    assert max((p - twin[p]).abs().max().item() for p in twin) < 0.02 * moved


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="needs a machine without CUDA or MPS"
)
def test_training_on_a_device_this_machine_lacks_is_a_config_error_naming_train_device(tiny_config, demo_data):
    model = build_model(tiny_config.model, len(demo_data.classes))
    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None, device="cuda")
    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    with pytest.raises(ConfigError, match=r"train.device: 'cuda', but this machine has no CUDA device"):
        train_loop(model, demo_data, demo_data.indices("train")[:32], settings, loss, _scripted([0.5]), progress=False)
    with pytest.raises(ConfigError, match="train.device: 'mps'"):
        pick_device("mps")
    assert pick_device("cpu") == pick_device("auto") == torch.device("cpu")


def test_a_cuda_index_past_the_machines_devices_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with two GPUs, as torch reports it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"train.device: 'cuda:2', but this machine has 2 CUDA device\(s\)"):
        pick_device("cuda:2")


def test_compiling_on_a_machine_without_a_cpp_compiler_is_a_config_error_naming_train_compile(
    tiny_config, demo_data, tmp_path
):
    import torch._inductor.config as inductor

    model = build_model(tiny_config.model, len(demo_data.classes))
    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None, device="cpu", compile=True)
    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    assert isinstance(compiled(model, torch.device("cpu")), torch._dynamo.eval_frame.OptimizedModule)  # g++ here
    # where $CXX named a compiler this machine does not have (torch reads it into this setting at import);
    # torch's own patch, since its config module hides a setting that monkeypatch deletes on undo
    missing = inductor.patch({"cpp.cxx": (str(tmp_path / "no-such-g++"),)})
    with (
        missing,
        pytest.raises(
            ConfigError, match="train.compile: torch.compile on the CPU builds C\\+\\+, and no C\\+\\+ compiler"
        ),
    ):
        train_loop(model, demo_data, demo_data.indices("train")[:32], settings, loss, _scripted([0.5]), progress=False)
    assert inductor.cpp.cxx != (str(tmp_path / "no-such-g++"),)  # the setting is back for the tests after


def _precisions(tiny_config, demo_data, cpu_amp: bool) -> tuple[set, set, set]:
    """The fused head's output dtypes in training steps and in validation, and the weights' dtypes after."""
    torch.manual_seed(0)
    model = build_model(tiny_config.model, len(demo_data.classes))
    seen, phase = {"train": set(), "validate": set()}, ["train"]
    model.classifier.register_forward_hook(lambda module, args, out: seen[phase[0]].add(out.dtype))
    validate = split_validator(demo_data, demo_data.indices("val"))

    def validated(m):
        phase[0] = "validate"
        scores = validate(m)
        phase[0] = "train"
        return scores

    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor="val_top1", device="cpu", cpu_amp=cpu_amp)
    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    train_loop(model, demo_data, demo_data.indices("train")[:64], settings, loss, validated, progress=False)
    return seen["train"], seen["validate"], {p.dtype for p in model.parameters()}


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16, AMX)")
def test_with_cpu_amp_a_cpu_trains_in_bf16_and_validates_and_keeps_float32_weights(tiny_config, demo_data):
    assert _precisions(tiny_config, demo_data, cpu_amp=True) == ({torch.bfloat16}, {torch.float32}, {torch.float32})
    assert _precisions(tiny_config, demo_data, cpu_amp=False) == ({torch.float32},) * 3


def test_cpu_amp_on_a_cpu_without_native_bf16_trains_in_float32_and_says_so(
    tiny_config, demo_data, monkeypatch, caplog
):
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)  # what oneDNN reports on such a CPU
    with caplog.at_level("WARNING", logger="kickvision.train.engine"):
        assert _precisions(tiny_config, demo_data, cpu_amp=True) == ({torch.float32},) * 3
    assert "train.cpu_amp: this CPU has no native bf16" in caplog.text


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:-1", " cuda", "cpu:0"])
def test_a_device_name_outside_auto_cpu_cuda_mps_fails_at_load_naming_train_device(name):
    with pytest.raises(ConfigError, match="setting 'train.device'"):
        load_config("demo", overrides={"train": {"device": name}})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_loop_steps_with_the_fused_adamw_on_channels_last_weights_and_photos(tiny_config, demo_data):
    torch.manual_seed(0)
    model = build_model(tiny_config.model, len(demo_data.classes))
    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None, device="cuda")
    assert create_optimizer(model.cuda(), settings).defaults["fused"]
    seen = []

    def forward(model, batch):
        stem = model.image_encoders[0].backbone.conv1.weight
        seen.append((batch["image"], stem))
        return classify(model, batch)

    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    rows = demo_data.indices("train")[:32]
    train_loop(model, demo_data, rows, settings, loss, _scripted([0.5]), progress=False, forward=forward)
    assert seen and all(t.is_contiguous(memory_format=torch.channels_last) for pair in seen for t in pair)
    no_nhwc, seen[:] = replace(settings, channels_last=False), []
    train_loop(model, demo_data, rows, no_nhwc, loss, _scripted([0.5]), progress=False, forward=forward)
    assert seen and all(t.is_contiguous() for pair in seen for t in pair)


def test_the_loop_trains_on_mixed_photos_with_the_targets_the_mix_made(tiny_config, demo_data):
    seen = []

    class Recorded(PhotoMix):
        def __call__(self, images, labels, n_classes):
            mixed, target = super().__call__(images, labels, n_classes)
            seen.append((images.shape[0], n_classes, target))
            return mixed, target

    def loss(batch, out):
        assert batch["target"] is seen[-1][2]  # the loss reads what the mix made
        return ClassificationLoss(0.0)(batch, out)

    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None, mix=Recorded(mixup_alpha=0.4))
    model = build_model(tiny_config.model, len(demo_data.classes))
    train = demo_data.indices("train")
    result = train_loop(model, demo_data, train, settings, [loss], lambda m: {}, progress=False)
    assert [(n, c) for n, c, _ in seen] == [(16, len(demo_data.classes))] * (len(train) // 16)
    assert result.history[0]["train_loss"] > 0


def test_pretrained_encoders_get_encoder_lr_and_the_schedule_warms_up_each_group(tiny_config):
    minilm = TextEncoderConfig(name="all-minilm-l6-v2", pretrained="auto")
    model = build_model(tiny_config.model.model_copy(update={"text_encoder": minilm}), n_classes=3)
    assert model.text_encoder.pretrained_loaded
    settings = LoopSettings(epochs=2, batch_size=8, lr=1e-3, encoder_lr=1e-5, pct_start=0.25)
    optimizer = create_optimizer(model, settings)
    encoder, rest = optimizer.param_groups
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.text_encoder.parameters()}
    assert len(encoder["params"]) + len(rest["params"]) == len(list(model.parameters()))
    scheduler = create_scheduler(optimizer, settings, steps_per_epoch=4)  # 8 steps, the peak a quarter in
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-5 / 25, 1e-3 / 25])  # warming up
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-5, 1e-3])
    scratch = build_model(tiny_config.model, n_classes=3)
    assert len(create_optimizer(scratch, settings).param_groups) == 1  # nothing pretrained: one group at lr
    for encoder in model.image_encoders:  # pretrained on the catalog's own photos (PhotoEncoders.apply_to)
        encoder.pretrained_loaded = encoder.catalog_pretrained = True
    encoder, rest = create_optimizer(model, settings).param_groups
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.text_encoder.parameters()}  # MiniLM only


def test_a_loop_can_freeze_the_encoders_pretrained_on_generic_data_and_train_the_rest(tiny_config, demo_data):
    """`pretrained_trainable_layers=0`: no gradient reaches the generic pretrained encoder (autograd
    skips its backward pass), it computes in eval mode and ends bit-identical; afterwards (a failed
    loop too) it is trainable again."""
    torch.manual_seed(0)
    model = build_model(tiny_config.model, len(demo_data.classes))
    model.text_encoder.pretrained_loaded = True  # as if it had started from MiniLM
    before = copy.deepcopy(model.state_dict())
    seen = []  # (training mode, any weight trainable) of the text encoder at each forward
    model.text_encoder.register_forward_hook(
        lambda module, args, out: seen.append((module.training, any(p.requires_grad for p in module.parameters())))
    )
    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None, pretrained_trainable_layers=0)
    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    train_loop(model, demo_data, demo_data.indices("train"), settings, loss, lambda m: {}, progress=False)
    assert seen and set(seen) == {(False, False)}
    after = model.state_dict()
    text = {k for k in after if k.startswith("text_encoder.")}
    assert text and all(torch.equal(after[k], before[k]) for k in text)
    assert not all(torch.equal(after[k], before[k]) for k in after if k not in text)  # the rest learnt
    assert all(p.requires_grad for p in model.parameters())

    def broken(model):
        raise RuntimeError("validation failed")

    with pytest.raises(RuntimeError, match="validation failed"):
        train_loop(model, demo_data, demo_data.indices("train"), settings, loss, broken, progress=False)
    assert all(p.requires_grad for p in model.parameters())  # trainable again after a failed loop too


def test_a_loop_can_train_only_the_top_layers_of_the_encoders_pretrained_on_generic_data(tiny_config, demo_data):
    """`pretrained_trainable_layers=N`: the encoder's embeddings and lower layers end bit-identical
    (no gradient reaches them), its top N layers and the rest of the model learn, and every weight is
    trainable again afterwards."""
    torch.manual_seed(0)
    text = tiny_config.model.text_encoder
    two_layers = text.model_copy(update={"overrides": {**text.overrides, "n_layers": 2}})
    model = build_model(tiny_config.model.model_copy(update={"text_encoder": two_layers}), len(demo_data.classes))
    model.text_encoder.pretrained_loaded = True  # as if it had started from MiniLM
    before = copy.deepcopy(model.state_dict())
    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None, pretrained_trainable_layers=1)
    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    train_loop(model, demo_data, demo_data.indices("train"), settings, loss, lambda m: {}, progress=False)
    after = model.state_dict()

    def moved(prefix: str) -> bool:
        names = [k for k in after if k.startswith(prefix)]
        assert names, prefix
        return any(not torch.equal(after[k], before[k]) for k in names)

    assert model.text_encoder.model.config.n_layers == 2
    assert not moved("text_encoder.model.embeddings.") and not moved("text_encoder.model.transformer.layer.0.")
    assert moved("text_encoder.model.transformer.layer.1.") and moved("classifier.")
    assert all(p.requires_grad for p in model.parameters())


def test_a_frozen_image_stem_keeps_its_batch_statistics_while_the_stages_above_learn(tiny_config, demo_data):
    """An ImageNet-style backbone with `pretrained_trainable_layers=4` (ResNet: stem + 4 stages): the
    stem's weights and its batch-norm running statistics stay as they were; layer1 learns and its
    statistics move."""
    torch.manual_seed(0)
    model = build_model(tiny_config.model, len(demo_data.classes))
    resnet = model.image_encoders[0]
    resnet.pretrained_loaded = True  # as if it had started from ImageNet weights
    before = copy.deepcopy(model.state_dict())
    settings = LoopSettings(epochs=1, batch_size=16, lr=0.01, monitor=None, pretrained_trainable_layers=4)
    loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
    train_loop(model, demo_data, demo_data.indices("train"), settings, loss, lambda m: {}, progress=False)
    after = model.state_dict()
    stem = [k for k in after if k.startswith(("image_encoders.0.backbone.conv1.", "image_encoders.0.backbone.bn1."))]
    assert any(k.endswith("bn1.running_mean") for k in stem)
    assert all(torch.equal(after[k], before[k]) for k in stem)
    moved = "image_encoders.0.backbone.layer1.0.bn1.running_mean", "image_encoders.0.backbone.layer1.0.conv1.weight"
    assert all(not torch.equal(after[k], before[k]) for k in moved)


def test_an_update_that_keeps_batch_norm_statistics_trains_the_weights_and_leaves_every_running_statistic(
    tiny_config, demo_data
):
    """`continual.batch_norm_statistics: keep`: the ResNet's convolutions and batch-norm scales learn
    (the blocks' last scale starts at zero, so one step moves it before the convolutions under it),
    its running means and variances (and batch counts) stay the champion's; `update` moves them."""
    states = {}
    for choice in ("keep", "update"):
        torch.manual_seed(0)
        model = build_model(tiny_config.model, len(demo_data.classes))
        before = copy.deepcopy(model.state_dict())
        continual = tiny_config.continual.model_copy(update={"batch_norm_statistics": choice, "epochs": 1})
        settings = update_settings(continual, tiny_config.train)
        assert settings.keep_norm_statistics == (choice == "keep")
        loss = [ClassificationLoss.from_config(tiny_config.train, tiny_config.model)]
        train_loop(model, demo_data, demo_data.indices("train"), settings, loss, lambda m: {}, progress=False)
        states[choice] = before, model.state_dict()
    before, kept = states["keep"]
    statistics = [k for k in kept if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert any(k.startswith("image_encoders.0.") for k in statistics)
    assert all(torch.equal(kept[k], before[k]) for k in statistics)
    learnt = "image_encoders.0.backbone.conv1.weight", "image_encoders.0.backbone.layer1.0.bn2.weight"
    assert [k for k in learnt if torch.equal(kept[k], before[k])] == []
    before, updated = states["update"]
    assert all(not torch.equal(updated[k], before[k]) for k in statistics if "running_mean" in k)
    with pytest.raises(ValidationError, match="batch_norm_statistics"):
        type(continual).model_validate(continual.model_dump() | {"batch_norm_statistics": "freeze"})


def test_encoder_stages_cover_every_weight_once_from_the_bottom_up(tiny_config):
    """The stages the engine freezes from: every parameter in exactly one stage, the input side first
    (a BERT-family text encoder: embeddings, then its layers; timm backbones: stem, then stages)."""
    model = build_model(tiny_config.model, 3)
    for encoder in [*model.image_encoders, model.text_encoder]:
        stages = encoder.stages()
        flat = [id(p) for stage in stages for p in stage]
        assert len(flat) == len(set(flat)) == len(list(encoder.parameters())), encoder
        assert len(stages) >= 2
    stem = model.image_encoders[0].backbone.conv1.weight
    assert any(p is stem for p in model.image_encoders[0].stages()[0])  # the stem first
    first = {id(p) for p in model.text_encoder.stages()[0]}
    assert first == {id(p) for p in model.text_encoder.model.embeddings.parameters()}
    last = {id(p) for p in model.text_encoder.stages()[-1]}
    assert last == {id(p) for p in model.text_encoder.model.transformer.layer[-1].parameters()}


def test_an_update_with_new_categories_trains_at_the_scaled_rates_and_one_of_known_categories_at_the_set_ones(
    tiny_config,
):
    continual = tiny_config.continual.model_copy(
        update={"lr": 0.0005, "encoder_lr": 0.00005, "new_categories_lr_scale": 2.0}
    )
    learning = update_settings(continual, tiny_config.train, True, new_categories=True)
    refining = update_settings(continual, tiny_config.train, True, new_categories=False)
    assert (learning.lr, learning.encoder_lr) == (0.001, 0.0001)
    assert (refining.lr, refining.encoder_lr) == (0.0005, 0.00005)
    one_rate = continual.model_copy(update={"encoder_lr": None})  # None: every parameter at lr, scaled too
    single = update_settings(one_rate, tiny_config.train, True, new_categories=True)
    assert single.encoder_lr is None and single.lr == 0.001
    with pytest.raises(ValidationError, match="new_categories_lr_scale"):
        type(continual).model_validate(continual.model_dump() | {"new_categories_lr_scale": 0})


def test_each_loop_takes_its_knobs_from_its_own_config_section(tiny_config):
    train, continual, prune = tiny_config.train, tiny_config.continual, tiny_config.prune
    fit = fit_settings(train)
    assert (fit.epochs, fit.lr, fit.pct_start, fit.monitor, fit.patience) == (
        train.epochs,
        train.lr,
        train.pct_start,
        train.monitor,
        train.patience,
    )
    assert (fit.device, fit.amp, fit.num_threads, fit.augment) == (
        train.device,
        train.amp,
        train.num_threads,
        PhotoAugment(),
    )
    no_nhwc = train.model_copy(update={"channels_last": False})
    assert (
        fit.channels_last
        and not fit_settings(no_nhwc).channels_last
        and not update_settings(continual, no_nhwc).channels_last
    )
    update = update_settings(continual, train)
    assert (update.epochs, update.batch_size, update.lr, update.pct_start) == (
        continual.epochs,
        continual.batch_size,
        continual.lr,
        continual.pct_start,
    )
    assert update.balanced_sampling is continual.balanced_sampling and update.monitor is None
    assert update.patience is None and not update.score_start  # no validation memory: the last epoch
    assert update.pretrained_trainable_layers is None and fit.pretrained_trainable_layers is None
    top_two = continual.model_copy(update={"pretrained_trainable_layers": 2})
    assert update_settings(top_two, train).pretrained_trainable_layers == 2
    fit_top_two = train.model_copy(update={"pretrained_trainable_layers": 2})
    assert fit_settings(fit_top_two).pretrained_trainable_layers == 2
    assert finetune_settings(prune, fit_top_two).pretrained_trainable_layers == 2  # the fine-tune of that fit
    assert update_settings(continual, fit_top_two).pretrained_trainable_layers is None  # the update's own knob
    assert pretrain_settings(tiny_config.pretrain, fit_top_two).pretrained_trainable_layers is None
    on_gpu = train.model_copy(update={"data_on_device": True, "compile": True})
    assert not (fit.data_on_device or fit.compile)
    assert fit_settings(on_gpu).data_on_device and update_settings(continual, on_gpu).compile
    chosen = update_settings(continual.model_copy(update={"patience": 2}), train, True, new_categories=False)
    assert chosen.monitor == "val_top1" and chosen.score_start and chosen.later_wins_ties and chosen.patience == 2
    assert not update_settings(continual, train, True, new_categories=True).score_start  # they cannot predict it
    tune = finetune_settings(prune, train)
    assert (tune.epochs, tune.lr, tune.pct_start, tune.batch_size) == (
        prune.finetune_epochs,
        prune.lr,
        prune.pct_start,
        train.batch_size,
    )
    assert tune.monitor == "val_top1" and tune.score_start and tune.later_wins_ties and not fit.later_wins_ties
    assert tune.grad_clip == train.grad_clip
    assert tune.encoder_lr is None  # MiniLM fine-tunes at prune.lr, not the fit's encoder_lr ...
    assert finetune_settings(prune.model_copy(update={"encoder_lr": 2e-5}), train).encoder_lr == 2e-5  # ... unless set
    assert tune.weight_decay == update.weight_decay == train.weight_decay
