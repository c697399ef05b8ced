"""The one training engine: every loop that changes weights runs through `train_loop`.

Fitting a fresh model, a catalog-drop update, a pruning fine-tune and photo pretraining differ in
data, not in code:

- `LoopSettings` (settings.py), built from the run config's sections (`fit_settings`,
  `update_settings`, `finetune_settings`, `pretrain_settings`): epochs, batch size, learning rates,
  warm-up share, gradient clipping, sampling, photo augmentation and mixing, weight averaging, which
  validation metric keeps the best epoch and how long to wait for it. No literal lives in a loop.
- loss terms `(batch, output) -> tensor`, summed (losses.py), and gradient hooks that act between
  backward and the optimizer step (the EWC penalty, ewc.py).

Per epoch: one pass of AdamW over parameter groups (generic pretrained encoders at `encoder_lr`, only their
top `pretrained_trainable_layers` layers if set: no gradient below, so no backward pass through them; 0
freezes them whole, in eval mode; the rest at `lr`, after timm's create_optimizer_v2; with
`keep_norm_statistics` every batch norm also stays in eval mode, so its running statistics hold while its
scale and shift learn) under a one-cycle schedule, gradients clipped to `grad_clip`, bf16 autocast on CUDA
(`amp`) and, with `cpu_amp`, on a CPU with native bf16 (1.41x the training samples/s of float32 for the
fashion model on 2 cores of an AVX512-BF16 EPYC, benchmarks/throughput.py --compare amp); photos augmented
and, with `mix`, mixed (augment.py; the loss terms then read the soft targets in `batch["target"]`); then
validation (float32). With `ema_decay` a moving average of the weights (timm's ModelEmaV3) follows every
optimizer step, and the average is what is validated and kept; its decay warms up from 0 as min(ema_decay, 1 -
(1 + step)^(-2/3)), so `ema_decay` is a ceiling (0.99 is reached after ~1,000 steps). The epoch with the best
`monitor` value is kept (on a tie the earlier one, or the later with `later_wins_ties`); training stops after
`patience` epochs without a strictly better value. Batches come from a host loader or, with `data_on_device`,
are cut from tensors on the training device (loader.py); with `compile` the training forward runs through
torch.compile (the model's own weights; validation and what is kept are the plain model). Callers seed
(`seed_everything`) before building what the loop trains, since model initialisation draws from the same
generator as dropout.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import PreparedData
from kickvision.errors import ConfigError
from kickvision.model.net import MultimodalShoeNet, ShoeNetOutput
from kickvision.model.predict import predict_logits
from kickvision.train.freeze import frozen, frozen_parameters, hold_frozen_modes, hold_norm_statistics
from kickvision.train.loader import DeviceBatches, make_loader
from kickvision.train.losses import LossTerm
from kickvision.train.settings import LoopSettings

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
Validator = Callable[[MultimodalShoeNet], dict[str, float]]
Forward = Callable[[torch.nn.Module, dict[str, torch.Tensor]], Any]


def classify(model: MultimodalShoeNet, batch: dict[str, torch.Tensor]) -> ShoeNetOutput:
    """The default forward: the fused model on the batch's photos and titles."""
    return model(batch["image"], batch["input_ids"], batch["attention_mask"])


class GradientHook(Protocol):
    """Acts on `.grad` between backward and the optimizer step (e.g. adds a penalty's gradient)."""

    def after_backward(self) -> None: ...

    def epoch_metrics(self) -> dict[str, float]: ...


@dataclass
class LoopResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0  # 0: the starting weights (score_start)
    best_score: float | None = None
    start_metrics: dict[str, float] = field(default_factory=dict)  # validation before the first epoch


def pick_device(name: str = "auto") -> torch.device:
    """`train.device` as a torch device: `auto` is CUDA where there is one, else the CPU. A device
    this machine lacks, or a name torch does not know, is a ConfigError (one `error:` line), not a
    traceback from deep inside the first `.to(...)`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device: {name!r} is not a device name (auto, cpu, cuda, cuda:N, mps)") from exc
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}.get(device.type)
    if available is not None and not available():
        kind = device.type.upper()
        raise ConfigError(f"train.device: {name!r}, but this machine has no {kind} device (use auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device: {name!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def compiled(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`torch.compile(model)` (`train.compile`), once the compiler inductor will call is known to be there:
    a C++ compiler on the CPU (torch's own search: `$CXX`, else g++), a C compiler for Triton's launcher on
    CUDA (`$CC`, else gcc or clang, as Triton looks). Without one, the first training step would fail deep
    inside inductor; here it is a ConfigError naming the setting."""
    if device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler

        try:
            get_cpp_compiler()
        except InvalidCxxCompiler as exc:
            raise ConfigError(
                "train.compile: torch.compile on the CPU builds C++, and no C++ compiler was found "
                "(install g++ or point CXX at one, or set train.compile: false)"
            ) from exc
    elif device.type == "cuda" and not any(shutil.which(c) for c in (os.environ.get("CC"), "gcc", "clang") if c):
        raise ConfigError(
            "train.compile: torch.compile on CUDA needs a C compiler for Triton, and none was found "
            "(install gcc or point CC at one, or set train.compile: false)"
        )
    return torch.compile(model)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def generic_pretrained_encoders(model: MultimodalShoeNet) -> list[torch.nn.Module]:
    """The encoders that started from weights pretrained on generic data (MiniLM). Photo encoders
    pretrained on the catalog's own photos (train/pretrain.py) are not among them: they start far
    from done (k-NN ~0.75), unlike weights pretrained on large generic data."""
    encoders = [*model.image_encoders, model.text_encoder]
    return [e for e in encoders if e is not None and e.pretrained_loaded and not getattr(e, "catalog_pretrained", 0)]


def create_optimizer(model: MultimodalShoeNet, settings: LoopSettings) -> torch.optim.Optimizer:
    """AdamW with two parameter groups: generic pretrained encoders at `encoder_lr`, everything else
    at `lr`; parameters that do not require a gradient (frozen) are left out."""
    pretrained_ids = {id(p) for e in generic_pretrained_encoders(model) for p in e.parameters()}
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trained if id(p) in pretrained_ids], "lr": settings.encoder_lr or settings.lr},
        {"params": [p for p in trained if id(p) not in pretrained_ids], "lr": settings.lr},
    ]
    # torch's fused kernel (CPU and CUDA): one pass per step over every tensor; left to itself torch
    # steps each tensor in turn on a CPU (benchmarks/throughput.py --compare optimizer)
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=settings.weight_decay, fused=True)


def create_scheduler(optimizer: torch.optim.Optimizer, settings: LoopSettings, steps_per_epoch: int):
    """One-cycle: warm up for `pct_start` of all steps to each group's lr, then anneal."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=max(1, settings.epochs * steps_per_epoch),
        pct_start=settings.pct_start,
    )


def classification_scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {
        "top1": float(accuracy_score(labels, predictions)) if len(labels) else 0.0,
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)) if len(labels) else 0.0,
    }


def split_validator(data: PreparedData, indices: np.ndarray) -> Validator:
    """Validation on rows `indices` of `data`: val_top1, val_macro_f1 and val_loss (cross-entropy)."""
    labels = data.labels()[indices]

    def validate(model: MultimodalShoeNet) -> dict[str, float]:
        if not len(indices):
            return {"val_top1": 0.0, "val_macro_f1": 0.0, "val_loss": float("nan")}
        logits, _ = predict_logits(model, data, indices)
        scores = classification_scores(labels, logits.argmax(1))
        loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
        return {"val_top1": scores["top1"], "val_macro_f1": scores["macro_f1"], "val_loss": loss}

    return validate


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), as oneDNN sees it. Where it does
    not, bf16 autocast on the CPU is emulated and slower than float32."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def trains_in_bf16(device: torch.device, settings: LoopSettings) -> bool:
    """Whether a loop on `device` runs its forward and loss under bf16 autocast: on CUDA with `amp`; on
    the CPU with `cpu_amp`, where the CPU has native bf16 (weights, gradients and the optimizer stay
    float32 either way)."""
    if device.type == "cuda":
        return settings.amp
    return device.type == "cpu" and settings.cpu_amp and cpu_has_native_bf16()


def _autocast(device: torch.device, settings: LoopSettings):
    if trains_in_bf16(device, settings):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _compare(score: float, best: float | None, monitor: str) -> tuple[bool, bool]:
    """(as good as the best so far, strictly better) for `monitor` (losses are minimised; NaN never wins)."""
    if np.isnan(score):
        return False, False
    if best is None:
        return True, True
    if monitor.endswith("loss"):
        return score <= best, score < best
    return score >= best, score > best


def train_loop(
    model: MultimodalShoeNet,
    data: PreparedData,
    train_indices: np.ndarray,
    settings: LoopSettings,
    loss_terms: Sequence[LossTerm],
    validate: Validator,
    hooks: Sequence[GradientHook] = (),
    seed: int = 42,
    desc: str = "epoch",
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    forward: Forward = classify,
) -> LoopResult:
    """Train `model` in place on `train_indices` of `data`; it ends on the kept epoch, on the CPU, in eval mode.

    `forward(model, batch)` gives what the loss terms read (default: the fused model's output);
    `model` needs `cfg` (its ModelConfig: the image transform), `image_encoders` and `text_encoder`
    (parameter groups)."""
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    device = pick_device(settings.device)
    if device.type == "cpu" and settings.cpu_amp and not cpu_has_native_bf16():
        log.warning("train.cpu_amp: this CPU has no native bf16 (AVX512-BF16, AMX); training in float32")
    channels_last = device.type == "cuda" and settings.channels_last
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    transform = resolve_image_transform(model.cfg)
    batching = (data, train_indices, settings.batch_size, seed, settings.balanced_sampling)
    loader = DeviceBatches(*batching, device) if settings.data_on_device else make_loader(*batching)
    runner = compiled(model, device) if settings.compile else model  # the training forward; shares the weights
    encoders = generic_pretrained_encoders(model)
    with frozen(frozen_parameters(encoders, settings.pretrained_trainable_layers)):  # trainable again afterwards
        optimizer = create_optimizer(model, settings)
        scheduler = create_scheduler(optimizer, settings, len(loader))
        ema = ModelEmaV3(model, decay=settings.ema_decay, use_warmup=True) if settings.ema_decay else None
        scored = ema.module if ema is not None else model  # what is validated and kept
        fixed = (forward, model, runner, loader, optimizer, scheduler, loss_terms, hooks, transform, settings, device)
        steps = _Steps(*fixed, encoders, len(data.classes), ema, progress, channels_last)

        result, best_state, stale = LoopResult(), None, 0
        if settings.score_start and settings.monitor is not None:
            result.start_metrics = validate(scored)
            result.best_score = result.start_metrics[settings.monitor]
            best_state = copy.deepcopy(scored.state_dict())
        for epoch in range(1, settings.epochs + 1):
            metrics = _one_epoch(steps, f"{desc} {epoch}/{settings.epochs}")
            for hook in hooks:
                metrics.update(hook.epoch_metrics())
            metrics.update(validate(scored))
            result.history.append({"epoch": epoch, **metrics})
            log.info("%s %d: %s", desc, epoch, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if on_epoch_end:
                on_epoch_end(epoch, metrics)
            if settings.monitor is None:
                result.best_epoch = epoch
                continue
            as_good, improved = _compare(metrics[settings.monitor], result.best_score, settings.monitor)
            if improved or (as_good and settings.later_wins_ties):
                result.best_score, result.best_epoch = metrics[settings.monitor], epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in scored.state_dict().items()})
            stale = 0 if improved else stale + 1
            if settings.patience is not None and stale >= settings.patience:
                log.info(
                    "early stop after epoch %d (best %d, %s %.4f)",
                    epoch,
                    result.best_epoch,
                    settings.monitor,
                    result.best_score,
                )
                break
        if best_state is None and ema is not None:  # no monitor: the last epoch's average
            best_state = ema.module.state_dict()
        if best_state is not None:
            model.load_state_dict(best_state)
    model.to("cpu", memory_format=torch.contiguous_format).eval()  # safetensors saves contiguous tensors only
    return result


@dataclass
class _Steps:
    """What every epoch of one `train_loop` call works with, set up once."""

    forward: Forward
    model: MultimodalShoeNet
    runner: torch.nn.Module  # what the forward calls: the model, or its compiled wrapper
    loader: Iterable[dict[str, torch.Tensor]]  # a DataLoader or DeviceBatches
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_terms: Sequence[LossTerm]
    hooks: Sequence[GradientHook]
    transform: Any  # the model's ImageTransform
    settings: LoopSettings
    device: torch.device
    encoders: list[torch.nn.Module]  # generic pretrained encoders (frozen ones stay in eval mode)
    n_classes: int
    ema: ModelEmaV3 | None
    progress: bool
    channels_last: bool  # photos in NHWC, as the weights


def _one_epoch(steps: _Steps, desc: str) -> dict[str, float]:
    forward, model, settings, device, transform = (
        steps.forward,
        steps.model,
        steps.settings,
        steps.device,
        steps.transform,
    )
    model.train()
    hold_frozen_modes(steps.encoders, settings.pretrained_trainable_layers)
    if settings.keep_norm_statistics:
        hold_norm_statistics(model)
    started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    bar = tqdm(steps.loader, desc=desc, leave=False, disable=None if steps.progress else True)
    for batch in bar:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        images = transform.to_unit(batch["image"])
        batch["pixels"] = images  # [0, 1], before augmentation: for forwards that draw views of their own
        images = settings.augment(images) if settings.augment else images
        if settings.mix is not None:
            images, batch["target"] = settings.mix(images, batch["label"], steps.n_classes)
        batch["image"] = transform.standardise(images)
        if steps.channels_last:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        with _autocast(device, settings):
            out = forward(steps.runner, batch)
            loss = steps.loss_terms[0](batch, out)
            for term in steps.loss_terms[1:]:
                loss = loss + term(batch, out)
        steps.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for hook in steps.hooks:
            hook.after_backward()
        if settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        steps.optimizer.step()
        steps.scheduler.step()
        if steps.ema is not None:
            steps.ema.update(model, step=steps.scheduler.last_epoch)
        n = batch["label"].shape[0]
        seen += n
        loss_sum += loss.item() * n
        if forward is classify:  # on mixed photos: the larger share
            truth = batch["target"].argmax(1) if "target" in batch else batch["label"]
            correct += (out.logits.argmax(1) == truth).sum().item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    elapsed = time.perf_counter() - started
    metrics = {"train_loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1)}
    if forward is not classify:  # no class logits to count hits on
        del metrics["train_top1"]
    return {**metrics, "train_samples_per_s": seen / max(elapsed, 1e-9), "epoch_seconds": elapsed}
