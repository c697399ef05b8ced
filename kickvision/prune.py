"""Structured pruning that really shrinks the model: Torch-Pruning (DepGraph) on every encoder.

What is pruned, to `prune.ratio` by L2 group magnitude: CNN channels (residual couplings resolved
by DepGraph), ViT attention heads (`head_ratio`) and MLP widths and its embedding width, the text
encoder's heads, FFN widths and hidden width (its token-embedding table included, often the
largest single tensor), and the fusion MLP. Kept whole: the per-branch projections (their outputs
are concatenated), the class head's outputs and the embedding width (the index depends on it).

A pruned model is saved as ordinary safetensors plus `info["pruned_shapes"]`, a JSON map of module
path -> the shape attributes that changed (out_channels, in_features, num_heads, ...). Loading
builds the architecture from its config, applies that map, resizes the affected tensors and loads
the weights: no pickled module (Torch-Pruning's own serialisation pickles) ever touches disk.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kickvision.config import PruneConfig, TrainConfig
from kickvision.data import PreparedData

log = logging.getLogger(__name__)

# Module attributes that describe a tensor shape (or a count derived from one).
SHAPE_ATTRIBUTES = (
    "in_features",
    "out_features",
    "in_channels",
    "out_channels",
    "num_features",
    "normalized_shape",
    "num_embeddings",
    "embedding_dim",
    "num_heads",
    "n_heads",
    "head_dim",
    "attn_dim",
    "attention_head_size",
    "dim",
    "out_dim",
    "embed_dim",
)


@dataclass
class PruneResult:
    bundle: object  # ModelBundle: the pruned one, or the input one when pruning was refused
    kept_pruned: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------- shapes, portable
def _shape_attributes(module: nn.Module) -> dict:
    found = {}
    for name in SHAPE_ATTRIBUTES:
        value = getattr(module, name, None)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) or (isinstance(value, tuple) and all(isinstance(v, int) for v in value)):
            found[name] = value
    return found


def changed_shapes(pruned: nn.Module, reference: nn.Module) -> dict[str, dict]:
    """module path -> {attribute: new value} for every shape attribute pruning changed (JSON-able)."""
    reference_modules = dict(reference.named_modules())
    plan = {}
    for name, module in pruned.named_modules():
        before = _shape_attributes(reference_modules[name]) if name in reference_modules else {}
        after = _shape_attributes(module)
        diff = {k: list(v) if isinstance(v, tuple) else v for k, v in after.items() if before.get(k) != v}
        if diff:
            plan[name] = diff
    return plan


def apply_pruned_shapes(model: nn.Module, plan: dict[str, dict], state: dict[str, torch.Tensor]) -> None:
    """Reshape a freshly built model so `state` (a pruned model's weights) loads into it strictly."""
    modules = dict(model.named_modules())
    for name, attributes in plan.items():
        for attribute, value in attributes.items():
            setattr(modules[name], attribute, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        module = modules[owner]
        if leaf in module._parameters and module._parameters[leaf] is not None:
            if module._parameters[leaf].shape != tensor.shape:
                module._parameters[leaf] = nn.Parameter(torch.empty(tensor.shape, dtype=tensor.dtype))
        elif leaf in module._buffers and module._buffers[leaf] is not None:
            if module._buffers[leaf].shape != tensor.shape:
                module._buffers[leaf] = torch.empty(tensor.shape, dtype=tensor.dtype)


# ---------------------------------------------------------------- measuring
def example_inputs(model, batch: int = 1, tokens: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    size = model.cfg.image_size
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, 3, size, size, generator=generator),
        torch.randint(1000, 2000, (batch, tokens), generator=generator),
        torch.ones(batch, tokens, dtype=torch.long),
    )


def weights_file_bytes(model: nn.Module) -> int:
    """Size of the model's weights as the bundle stores them (model.safetensors)."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
        return path.stat().st_size


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, batch: int, tokens: int = 16, repeats: int = 15) -> float:
    """Median CPU forward time of `model` at `batch` (after warm-up)."""
    model = model.eval().cpu()
    inputs = example_inputs(model, batch, tokens)
    for _ in range(3):
        model(*inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model(*inputs)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def model_costs(model: nn.Module, tokens: int = 16, latency: bool = True) -> dict[str, float]:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model.eval(), example_inputs(model, 1, tokens))
    costs = {"params": float(params), "macs": float(macs), "file_bytes": float(weights_file_bytes(model))}
    if latency:
        costs["latency_b1_ms"] = cpu_latency_ms(model, 1, tokens)
        costs["latency_b32_ms"] = cpu_latency_ms(model, 32, tokens)
    return costs


# ---------------------------------------------------------------- pruning
def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """qkv projection -> head count, for Torch-Pruning's head-aware grouping (timm ViT, DistilBERT/BERT)."""
    heads = {}
    for module in model.modules():
        if hasattr(module, "qkv") and hasattr(module, "num_heads"):  # timm Attention: fused qkv
            heads[module.qkv] = module.num_heads
        for q, k, v, count in (
            ("q_lin", "k_lin", "v_lin", "n_heads"),
            ("query", "key", "value", "num_attention_heads"),
        ):
            if all(hasattr(module, a) for a in (q, k, v)) and hasattr(module, count):
                for linear in (getattr(module, q), getattr(module, k), getattr(module, v)):
                    heads[linear] = getattr(module, count)
    return heads


def prune_structured(model: nn.Module, ratio: float, head_ratio: float, round_to: int | None, tokens: int = 16) -> None:
    """Prune `model` in place (see the module docstring for what is pruned and what is kept)."""
    import torch_pruning as tp

    model.eval()
    heads = attention_heads(model)
    ignored = [model.classifier, model.embedding_head, *[projection[0] for projection in model.projections]]
    if model.gate is not None:
        ignored.append(model.gate)
    if model.branch_classifiers is not None:
        ignored.extend(model.branch_classifiers)
    # ViT tokens and position table are bare Parameters: their width (last dim) follows the embedding.
    loose = [
        (getattr(module, name), getattr(module, name).dim() - 1)
        for module in model.modules()
        for name in ("cls_token", "reg_token", "pos_embed")
        if isinstance(getattr(module, name, None), nn.Parameter)
    ]
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs(model, 2, tokens),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=ignored,
        num_heads=heads,
        prune_num_heads=bool(heads) and head_ratio > 0,
        prune_head_dims=False,  # whole heads go; head size stays, so attention code needs no change
        head_pruning_ratio=head_ratio,
        round_to=round_to,
        unwrapped_parameters=loose,
        output_transform=lambda out: [out.logits, out.embedding],
    )
    pruner.step()
    # timm's Attention reshapes by its own head count: tell it how many heads are left.
    for module in model.modules():
        if hasattr(module, "qkv") and hasattr(module, "num_heads") and module.qkv in pruner.num_heads:
            module.num_heads = pruner.num_heads[module.qkv]
            module.attn_dim = module.num_heads * module.head_dim


def prune_bundle(
    bundle,
    data: PreparedData,
    cfg: PruneConfig,
    train_cfg: TrainConfig,
    seed: int = 42,
    on_epoch_end=None,
    progress: bool = True,
    force_refuse: bool = False,
) -> PruneResult:
    """Prune a trained bundle, fine-tune it briefly, and keep it only within `cfg.tolerance`.

    Returns the pruned bundle (weights, pruned-shape map and provenance; its index, calibration
    and continual state must be recomputed by the caller) or the input bundle with the reason.
    """
    from kickvision.bundle import ModelBundle
    from kickvision.training import (
        _loader,
        classification_scores,
        distillation_loss,
        pick_device,
        predict_logits,
        seed_everything,
        train_one_epoch,
    )

    if bundle.info.get("pruned_shapes"):
        return PruneResult(bundle, True, "already pruned (a catalog-drop update keeps its champion's structure)")
    tokens = bundle.max_title_tokens
    val_idx = data.indices("val")
    labels = data.labels()

    def val_top1(model) -> float:
        logits, _ = predict_logits(model, data, val_idx)
        return classification_scores(labels[val_idx], logits.argmax(1))["top1"]

    before = model_costs(bundle.model, tokens)
    before["val_top1"] = val_top1(bundle.model)

    seed_everything(seed)
    model = copy.deepcopy(bundle.model).cpu()
    prune_structured(
        model, cfg.ratio, cfg.head_ratio if cfg.head_ratio is not None else cfg.ratio, cfg.round_to, tokens
    )
    pruned_top1 = val_top1(model)

    device = pick_device(train_cfg.device)
    model.to(device)
    tune_cfg = train_cfg.model_copy(update={"epochs": cfg.finetune_epochs, "lr": cfg.lr})
    loader = _loader(data, data.indices("train"), tune_cfg, train=True, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=max(1, cfg.finetune_epochs * len(loader)), pct_start=0.2
    )
    teacher_loss = None
    if cfg.distill_weight > 0:  # the unpruned model teaches the pruned one what it lost
        teacher = copy.deepcopy(bundle.model).to(device)
        teacher_loss = distillation_loss(teacher, cfg.distill_weight, cfg.distill_temperature)
    # Keep the fine-tune epoch with the best validation top-1, as training keeps its best epoch.
    history, best_top1, best_state = [], pruned_top1, copy.deepcopy(model.state_dict())
    for epoch in range(1, cfg.finetune_epochs + 1):
        stats = train_one_epoch(
            model,
            loader,
            optimizer,
            scheduler,
            tune_cfg,
            device,
            desc=f"prune fine-tune {epoch}",
            progress=progress,
            extra_loss=teacher_loss,
        )
        stats["val_top1"] = val_top1(model)
        history.append({"epoch": epoch, **stats})
        if on_epoch_end:
            on_epoch_end(epoch, stats)
        if stats["val_top1"] >= best_top1:
            best_top1, best_state = stats["val_top1"], copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.to("cpu").eval()

    after = model_costs(model, tokens)
    after["val_top1"] = val_top1(model)
    metrics = {f"prune_{k}_before": v for k, v in before.items()} | {f"prune_{k}_after": v for k, v in after.items()}
    metrics["prune_val_top1_pruned_no_finetune"] = pruned_top1
    loss = before["val_top1"] - after["val_top1"]
    fewer = 1 - after["params"] / before["params"]
    summary = (
        f"params {before['params']:,.0f} -> {after['params']:,.0f} ({fewer:.0%} fewer), "
        f"validation top-1 {before['val_top1']:.4f} -> {after['val_top1']:.4f} (tolerance {cfg.tolerance:.4f})"
    )
    if force_refuse or loss > cfg.tolerance:
        why = "forced by the caller" if force_refuse else "lost too much accuracy"
        return PruneResult(bundle, False, f"kept the unpruned model, pruning {why}: {summary}", metrics, history)

    info = {
        **bundle.info,
        "pruned_shapes": changed_shapes(model, bundle.model),
        "pruning": {"ratio": cfg.ratio, "finetune_epochs": cfg.finetune_epochs, **metrics},
        "parameters": int(after["params"]),
    }
    pruned = ModelBundle(model, bundle.tokenizer, list(bundle.classes), bundle.max_title_tokens, info)
    return PruneResult(pruned, True, f"pruned: {summary}", metrics, history)
