"""Structured pruning that really shrinks the model: Torch-Pruning (DepGraph) on every encoder.

What is pruned, to `prune.ratio` by L2 group magnitude: CNN channels (residual couplings resolved
by DepGraph), ViT attention heads (`head_ratio`) and MLP widths and its embedding width, the text
encoder's heads, FFN widths and hidden width (its token-embedding table included, often the
largest single tensor; kept with `prune.keep_text_width`), and the fusion MLP. Kept whole: the
per-branch projections (their outputs are concatenated), the class head's outputs and the
embedding width (the index depends on it).

The fine-tune is one more loop of the training engine (optionally distilling from the unpruned
model; encoders pretrained on generic data, such as MiniLM, at `prune.encoder_lr` where set) that
keeps the best validation top-1 among the pruned start and each epoch; the branch heads' votes are
then chosen again for the pruned model (train/fusion.py). The pruned model is kept only if it lost
at most `prune.tolerance` of validation top-1 and, where `prune.macro_f1_tolerance` is set, at most
that of validation macro-F1 (`prune_gate`, a pure function). A pruned model is saved as ordinary
safetensors plus `BundleSpec.pruned_shapes` (model/shapes.py): no pickled module.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

from torch import nn

from kickvision.config import PruneConfig, TrainConfig
from kickvision.data.prepare import PreparedData
from kickvision.model.bundle import ModelBundle, PruningRecord
from kickvision.model.costs import example_inputs, model_costs
from kickvision.model.net import MultimodalShoeNet
from kickvision.model.shapes import changed_shapes
from kickvision.train.engine import (
    EpochCallback,
    pick_device,
    seed_everything,
    split_validator,
    train_loop,
)
from kickvision.train.fusion import choose_branch_head_weights
from kickvision.train.losses import ClassificationLoss, Distillation, LossTerm
from kickvision.train.settings import finetune_settings

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    bundle: ModelBundle  # the pruned one, or the input one when pruning was refused
    kept_pruned: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


_ROUNDING = 1e-9  # a loss of exactly the tolerance (180/200 -> 179/200 at 0.005) is within it


def prune_gate(
    before: dict[str, float], after: dict[str, float], tolerance: float, macro_f1_tolerance: float | None
) -> tuple[bool, str]:
    """Keep the pruned model only if validation top-1 fell by at most `tolerance` and, unless
    `macro_f1_tolerance` is None, validation macro-F1 by at most that (`before`/`after`: `val_top1`,
    `val_macro_f1`)."""
    summary = f"validation top-1 {before['val_top1']:.4f} -> {after['val_top1']:.4f} (tolerance {tolerance:.4f})"
    lost = before["val_top1"] - after["val_top1"]
    if macro_f1_tolerance is not None:
        summary += (
            f", macro-F1 {before['val_macro_f1']:.4f} -> {after['val_macro_f1']:.4f} "
            f"(tolerance {macro_f1_tolerance:.4f})"
        )
    if not lost <= tolerance + _ROUNDING:  # (NaN fails too)
        return False, "lost too much accuracy: " + summary
    lost_f1 = before["val_macro_f1"] - after["val_macro_f1"]
    if macro_f1_tolerance is not None and not lost_f1 <= macro_f1_tolerance + _ROUNDING:
        return False, "lost too much on the smaller categories (macro-F1): " + summary
    return True, summary


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


def prune_structured(
    model: MultimodalShoeNet,
    ratio: float,
    head_ratio: float,
    round_to: int | None,
    tokens: int = 16,
    keep_text_width: bool = False,
) -> None:
    """Prune `model` in place (see the module docstring for what is pruned and what is kept). With
    `keep_text_width`, the text encoder's token-embedding table is left whole, and with it every group that
    would narrow it (Torch-Pruning skips a group that reaches an ignored layer): its hidden width."""
    import torch_pruning as tp

    model.eval()
    heads = attention_heads(model)
    ignored = [model.classifier, model.embedding_head, *[projection[0] for projection in model.projections]]
    if keep_text_width and model.text_encoder is not None:
        ignored.append(model.text_encoder.model.get_input_embeddings())  # the token table: its width is the stream's
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
    bundle: ModelBundle,
    data: PreparedData,
    cfg: PruneConfig,
    train_cfg: TrainConfig,
    seed: int = 42,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
) -> PruneResult:
    """Prune a trained bundle, fine-tune it briefly, and keep it only within `cfg.tolerance` of
    validation top-1 (and `cfg.macro_f1_tolerance` of validation macro-F1, where set).

    Returns the pruned bundle (weights, pruned-shape map and provenance; its index, calibration
    and continual state must be recomputed by the caller) or the input bundle with the reason.
    """
    if bundle.spec.pruned_shapes:
        return PruneResult(bundle, True, "already pruned (a catalog-drop update keeps its champion's structure)")
    tokens = bundle.max_title_tokens
    validate = split_validator(data, data.indices("val"))
    scored = ("val_top1", "val_macro_f1")  # what the gate reads
    before = model_costs(bundle.model, tokens) | {k: v for k, v in validate(bundle.model).items() if k in scored}

    seed_everything(seed)
    model = copy.deepcopy(bundle.model).cpu()
    head_ratio = cfg.head_ratio if cfg.head_ratio is not None else cfg.ratio
    prune_structured(model, cfg.ratio, head_ratio, cfg.round_to, tokens, keep_text_width=cfg.keep_text_width)
    if model.branch_classifiers is not None:  # fine-tune and keep epochs on the fused head; votes chosen after
        model.branch_head_weights.zero_()
    settings = finetune_settings(cfg, train_cfg)
    terms: list[LossTerm] = [ClassificationLoss.from_config(train_cfg, model.cfg)]
    if cfg.distill_weight > 0:  # the unpruned model teaches the pruned one what it lost
        teacher = copy.deepcopy(bundle.model).to(pick_device(settings.device))
        terms.append(Distillation(teacher, cfg.distill_weight, cfg.distill_temperature))
    loop = train_loop(
        model,
        data,
        data.indices("train"),
        settings,
        terms,
        validate,
        seed=seed,
        desc="prune fine-tune",
        on_epoch_end=on_epoch_end,
        progress=progress,
    )

    head_weights = choose_branch_head_weights(model, data, data.indices("val"))  # the pruned heads' own votes
    after = model_costs(model, tokens) | {k: v for k, v in validate(model).items() if k in scored}
    metrics = {f"prune_{k}_before": v for k, v in before.items()} | {f"prune_{k}_after": v for k, v in after.items()}
    metrics["prune_val_top1_pruned_no_finetune"] = loop.start_metrics["val_top1"]
    fewer = 1 - after["params"] / before["params"]
    size = f"params {before['params']:,.0f} -> {after['params']:,.0f} ({fewer:.0%} fewer)"
    kept, verdict = prune_gate(before, after, cfg.tolerance, cfg.macro_f1_tolerance)
    if not kept:
        reason = f"kept the unpruned model, pruning {verdict}; {size}"
        return PruneResult(bundle, False, reason, metrics, loop.history)

    spec = bundle.spec.model_copy(deep=True)
    spec.pruned_shapes = changed_shapes(model, bundle.model)
    spec.pruning = PruningRecord(ratio=cfg.ratio, finetune_epochs=cfg.finetune_epochs, metrics=metrics)
    spec.training.parameters = int(after["params"])
    spec.training.branch_head_weights = head_weights
    pruned = ModelBundle(model, bundle.tokenizer, spec)
    return PruneResult(pruned, True, f"pruned: {size}, {verdict}", metrics, loop.history)
