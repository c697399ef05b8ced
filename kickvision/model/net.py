"""MultimodalShoeNet: image and text encoders -> shared-width projections -> fusion -> two heads.

The class head gives logits; the embedding head an L2-normalised vector for recommendations.
Modality dropout (training only) hides the whole photo side or the title per sample, so a product
with a missing photo or title still gets a prediction. Optional per-branch heads make each branch
learn to classify alone (a training loss) and, outside training, add their logits to the fused
head's with weights chosen on validation (train/fusion.py). `grow_classifier` adds classes for catalog-drop updates
without changing the old classes' logits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kickvision.config import ModelConfig
from kickvision.errors import ConfigError
from kickvision.model.encoders import ImageEncoder, TextEncoder

log = logging.getLogger(__name__)


@dataclass
class ShoeNetOutput:
    logits: torch.Tensor  # [B, n_classes]
    embedding: torch.Tensor  # [B, embedding_dim], L2-normalised
    branch_logits: list[torch.Tensor] | None = None  # per branch [B, n_classes] (unmasked), when branch heads exist


class MultimodalShoeNet(nn.Module):
    """Image and text branches -> shared-width projections -> fusion -> class logits + embedding."""

    def __init__(
        self, cfg: ModelConfig, n_classes: int, text_hf_config: dict[str, Any] | None = None, load_weights: bool = True
    ):
        super().__init__()
        if not cfg.image_encoders and cfg.text_encoder is None:
            raise ConfigError("model: configure at least one image encoder or a text encoder")
        self.cfg = cfg
        self.image_encoders = nn.ModuleList(ImageEncoder(s, cfg.image_size, load_weights) for s in cfg.image_encoders)
        self.text_encoder = (
            TextEncoder(cfg.text_encoder, text_hf_config, load_weights) if cfg.text_encoder is not None else None
        )
        branches = [e.out_dim for e in self.image_encoders] + ([self.text_encoder.out_dim] if self.text_encoder else [])
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(d, cfg.projection_dim), nn.LayerNorm(cfg.projection_dim), nn.GELU())
            for d in branches
        )
        n = len(branches)
        if cfg.fusion == "gated":  # per-sample softmax weights over branches
            self.gate = nn.Linear(n * cfg.projection_dim, n)
            fused_in = cfg.projection_dim
        else:
            self.gate = None
            fused_in = n * cfg.projection_dim
        self.fusion = nn.Sequential(
            nn.Dropout(cfg.dropout), nn.Linear(fused_in, cfg.fusion_hidden), nn.GELU(), nn.Dropout(cfg.dropout)
        )
        self.classifier = nn.Linear(cfg.fusion_hidden, n_classes)
        self.embedding_head = nn.Linear(cfg.fusion_hidden, cfg.embedding_dim)
        # Training-only heads (one per branch): a fused model trained on cross-entropy alone leans on
        # the title, which fits the training set fast, and its photo branches stay weak (modality
        # competition, Wang et al. 2020); a loss on each branch alone makes every branch learn.
        self.branch_classifiers = (
            nn.ModuleList(nn.Linear(cfg.projection_dim, n_classes) for _ in branches)
            if cfg.branch_loss_weight > 0 and n > 1
            else None
        )
        # Outside training the branch heads also vote: logits = fused head + sum_b w_b * branch head b
        # (a present branch only). The weights are chosen on validation after training
        # (train/fusion.py); zero until then, so an untuned model is the fused head alone.
        if self.branch_classifiers is not None:
            self.register_buffer("branch_head_weights", torch.zeros(n))

    @property
    def n_image_branches(self) -> int:
        return len(self.image_encoders)

    @property
    def branch_names(self) -> list[str]:
        """`<index>_<encoder>` per image branch, then `text`: the order of branch heads and their weights."""
        names = [f"{i}_{e.name}" for i, e in enumerate(self.image_encoders)]
        return names + (["text"] if self.text_encoder is not None else [])

    def branch_vectors(
        self,
        images: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        text_features: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        vectors = [enc(images) for enc in self.image_encoders] if self.image_encoders else []
        if self.text_encoder is not None:
            vectors.append(self.text_encoder(input_ids, attention_mask) if text_features is None else text_features)
        return [proj(v) for proj, v in zip(self.projections, vectors, strict=True)]

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_present: torch.Tensor | None = None,
        text_present: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
    ) -> ShoeNetOutput:
        """`image_present` / `text_present` ([B] bools) zero a missing modality's branches. `text_features`
        ([B, text encoder width]): the text encoder's output for these titles, already computed (an
        explainer holds one title fixed over many photos); the encoder is then not run."""
        vectors = self.branch_vectors(images, input_ids, attention_mask, text_features)
        branch_logits = (
            [head(v) for head, v in zip(self.branch_classifiers, vectors, strict=True)]
            if self.branch_classifiers is not None
            else None
        )
        masks = self._branch_masks(vectors[0], image_present, text_present)
        if self.training and self.cfg.modality_dropout > 0 and len(vectors) > 1:
            masks = self._modality_dropout(masks)
        vectors = [v * m.unsqueeze(1) for v, m in zip(vectors, masks, strict=True)]
        if self.gate is not None:
            weights = self.gate(torch.cat(vectors, 1)).masked_fill(torch.stack(masks, 1) == 0, -1e4).softmax(1)
            fused = (torch.stack(vectors, 1) * weights.unsqueeze(-1)).sum(1)
        else:
            fused = torch.cat(vectors, 1)
        hidden = self.fusion(fused)
        logits = self.classifier(hidden)
        if branch_logits is not None and not self.training:
            for weight, mask, branch in zip(self.branch_head_weights, masks, branch_logits, strict=True):
                logits = logits + weight * mask.unsqueeze(1) * branch
        return ShoeNetOutput(logits, F.normalize(self.embedding_head(hidden), dim=1), branch_logits)

    def _branch_masks(self, like: torch.Tensor, image_present, text_present) -> list[torch.Tensor]:
        ones = torch.ones(like.shape[0], device=like.device, dtype=like.dtype)
        img = ones if image_present is None else image_present.to(like.dtype)
        txt = ones if text_present is None else text_present.to(like.dtype)
        return [img] * self.n_image_branches + ([txt] if self.text_encoder is not None else [])

    def _modality_dropout(self, masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Drop the whole image side or the text side per sample, never both."""
        if self.text_encoder is None or not self.image_encoders:
            return masks
        batch = masks[0].shape[0]
        roll = torch.rand(batch, device=masks[0].device)
        p = self.cfg.modality_dropout
        keep_img = (roll >= p / 2).to(masks[0].dtype)
        keep_txt = ((roll < p / 2) | (roll >= p)).to(masks[0].dtype)
        return [m * keep_img for m in masks[:-1]] + [masks[-1] * keep_txt]

    def pretrained_report(self) -> dict[str, bool]:
        report = {f"image_{i}_{e.name}": e.pretrained_loaded for i, e in enumerate(self.image_encoders)}
        if self.text_encoder is not None:
            report["text"] = self.text_encoder.pretrained_loaded
        return report

    def mark_pretrained(self, report: dict[str, bool], catalog_photos: bool) -> None:
        """The inverse of `pretrained_report` for a model rebuilt without weights: which encoders started
        from pretrained weights (and whether the photo encoders' were pretrained on the catalog's own
        photos), so that a later fine-tune gives them the learning rates the fit gave them."""
        for i, encoder in enumerate(self.image_encoders):
            encoder.pretrained_loaded = bool(report.get(f"image_{i}_{encoder.name}", False))
            encoder.catalog_pretrained = catalog_photos
        if self.text_encoder is not None:
            self.text_encoder.pretrained_loaded = bool(report.get("text", False))


def build_model(cfg: ModelConfig, n_classes: int) -> MultimodalShoeNet:
    """The factory: a MultimodalShoeNet from config, with offline pretrained weights where allowed."""
    model = MultimodalShoeNet(cfg, n_classes)
    log.info(
        "built MultimodalShoeNet: %.2fM parameters, pretrained %s",
        count_parameters(model) / 1e6,
        model.pretrained_report(),
    )
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _grown_linear(old: nn.Linear, n_classes: int) -> nn.Linear:
    grown = nn.Linear(old.in_features, n_classes, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        nn.init.normal_(grown.weight, std=old.weight.std().item() if old.weight.numel() > 1 else 0.02)
        grown.bias.fill_(old.bias.mean().item())  # new classes start at the old classes' mean prior
        grown.weight[: old.out_features] = old.weight
        grown.bias[: old.out_features] = old.bias
    return grown


def grow_classifier(model: MultimodalShoeNet, n_classes: int) -> None:
    """Give the class head (and the per-branch heads) `n_classes` outputs, keeping the old rows
    (and so the old logits) exactly."""
    old = model.classifier
    if n_classes == old.out_features:
        return
    if n_classes < old.out_features:
        raise ValueError(f"cannot shrink the classifier from {old.out_features} to {n_classes} classes")
    model.classifier = _grown_linear(old, n_classes)
    if model.branch_classifiers is not None:
        model.branch_classifiers = nn.ModuleList(_grown_linear(h, n_classes) for h in model.branch_classifiers)
