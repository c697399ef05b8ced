"""The model bundle: one folder that the pipeline, the CLI and the MLflow pyfunc all load alike.

Layout (after transformers' save_pretrained): `kickvision_model.json` (architecture spec, label
map, input settings, provenance), `model.safetensors` (weights), `tokenizer/` (tokenizer files),
`index/` (catalog embeddings for recommendations), `continual/` (Fisher diagonal, replay exemplars
and old-test holdout for catalog-drop updates; see continual.py).
Loading rebuilds the architecture from the JSON spec and reads tensors with safetensors: nothing
is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from kickvision.config import ModelConfig
from kickvision.continual import ContinualState
from kickvision.model import MultimodalShoeNet
from kickvision.recommend import EmbeddingIndex

SPEC_FILE = "kickvision_model.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
INDEX_DIR = "index"
CONTINUAL_DIR = "continual"
FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """A trained model with everything needed to use it on raw products."""

    model: MultimodalShoeNet
    tokenizer: Any
    classes: list[str]
    max_title_tokens: int
    info: dict[str, Any] = field(default_factory=dict)  # provenance: catalog hash, history, ...
    index: EmbeddingIndex | None = None  # the catalog's embeddings, for recommendations
    continual: ContinualState | None = None  # what the next catalog-drop update needs

    @property
    def model_config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def text_columns(self) -> list[str]:
        """Catalog columns the text encoder reads after the title (DataConfig.text_columns at training)."""
        return list(self.info.get("text_columns", []))


def save_bundle(bundle: ModelBundle, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "format_version": FORMAT_VERSION,
        "model_config": bundle.model.cfg.model_dump(mode="json"),
        "text_hf_config": bundle.model.text_encoder.hf_config() if bundle.model.text_encoder else None,
        "classes": list(bundle.classes),
        "max_title_tokens": bundle.max_title_tokens,
        "info": bundle.info,
    }
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2, default=str))
    state = {k: v.detach().cpu().contiguous() for k, v in bundle.model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    bundle.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    if bundle.index is not None:
        bundle.index.save(folder / INDEX_DIR)
    if bundle.continual is not None:
        bundle.continual.save(folder / CONTINUAL_DIR)
    return folder


def load_bundle(folder: str | Path) -> ModelBundle:
    from transformers import AutoTokenizer

    folder = Path(folder)
    spec = json.loads((folder / SPEC_FILE).read_text())
    if spec.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder}: unsupported bundle format {spec.get('format_version')}")
    cfg = ModelConfig.model_validate(spec["model_config"])
    model = MultimodalShoeNet(cfg, len(spec["classes"]), text_hf_config=spec["text_hf_config"], load_weights=False)
    state = load_file(str(folder / WEIGHTS_FILE))
    state = {k: v for k, v in state.items() if ".pooler." not in k}  # bundles saved before the pooler was dropped
    if spec.get("info", {}).get("pruned_shapes"):  # a pruned model: reshape the fresh one to fit (prune.py)
        from kickvision.prune import apply_pruned_shapes

        apply_pruned_shapes(model, spec["info"]["pruned_shapes"], state)
    model.load_state_dict(state)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR))
    index = EmbeddingIndex.load(folder / INDEX_DIR) if (folder / INDEX_DIR).is_dir() else None
    continual = ContinualState.load(folder / CONTINUAL_DIR) if (folder / CONTINUAL_DIR).is_dir() else None
    info = spec.get("info", {})
    return ModelBundle(model, tokenizer, spec["classes"], spec["max_title_tokens"], info, index, continual)
