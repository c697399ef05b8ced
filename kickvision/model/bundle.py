"""The model bundle: one folder that the pipeline, the CLI and the MLflow pyfunc all load alike.

Layout (after transformers' save_pretrained): `kickvision_model.json` (the architecture config, the
text encoder's exact HF config, and the typed `BundleSpec`: label map, input settings, structure
such as the pruned shapes, provenance), `model.safetensors` (weights), `tokenizer/` (tokenizer
files), `index/` (catalog embeddings for recommendations), `continual/` (Fisher diagonal, replay
exemplars, old-test holdout and validation memory for catalog-drop updates).
Loading rebuilds the architecture from the JSON, reshapes it where the model was pruned and reads
tensors with safetensors: nothing is ever unpickled. Bundles of format 1 (an untyped `info` dict)
still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from kickvision.config import ModelConfig
from kickvision.data.images import DEFAULT_MAX_PIXELS, ImageTransform, resolve_image_transform
from kickvision.model.index import EmbeddingIndex
from kickvision.model.memory import ContinualState
from kickvision.model.net import MultimodalShoeNet
from kickvision.model.shapes import apply_pruned_shapes

SPEC_FILE = "kickvision_model.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
INDEX_DIR = "index"
CONTINUAL_DIR = "continual"
# 4: validation memory in the continual state; 3: catalog folders and timings in the spec, JPEG
# replay exemplars (2 and 3 still load)
FORMAT_VERSION = 4


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingRecord(_Record):
    """How the weights were fitted."""

    best_epoch: int = 0
    monitor: str | None = "val_macro_f1"  # the validation metric that picked best_epoch
    best_score: float | None = None
    parameters: int = 0
    pretrained: dict[str, bool] = Field(default_factory=dict)  # encoder -> started from pretrained weights
    branch_head_weights: dict[str, float] = Field(default_factory=dict)  # branch -> its head's vote (train/fusion.py)
    seconds: float | None = None  # wall time of the fit (None: saved before it was recorded)
    catalog_rows: int | None = None  # products of the prepared catalog it was fitted on (all splits)


class PruningRecord(_Record):
    """What structured pruning did (see train/prune.py)."""

    ratio: float
    finetune_epochs: int
    metrics: dict[str, float] = Field(default_factory=dict)


class PhotoPretrainingRecord(_Record):
    """The photo encoders a model started from (train/pretrain.py)."""

    method: str
    catalog_hash: str  # the prepared catalog whose photos (and titles) they learnt from
    epochs: int
    metrics: dict[str, float] = Field(default_factory=dict)  # e.g. k-NN top-1 of the photo embeddings
    seconds: float | None = None  # wall time of the pretraining


class Lineage(_Record):
    """Where the model came from."""

    catalog_hash: str = ""  # the catalog (or drop) it last learned
    catalog_hashes: list[str] = Field(default_factory=list)  # every catalog and drop it learned, oldest first
    catalog_paths: list[str] = Field(default_factory=list)  # their folders, as given (for a joint retrain)
    updated_from: str | None = None  # the registry version a catalog-drop update started from
    new_classes: list[str] = Field(default_factory=list)  # categories that update added
    registered_version: str | None = None  # its own version, when loaded from the registry
    photo_pretraining: PhotoPretrainingRecord | None = None  # None: the image encoders started from scratch


class BundleSpec(_Record):
    """The structure and provenance of a saved model, as transformers' PretrainedConfig carries
    `pruned_heads`: fields, not dict keys."""

    classes: list[str]
    max_title_tokens: int
    text_columns: list[str] = Field(default_factory=list)  # read after the title (DataConfig.text_columns)
    temperature: float = 1.0  # fitted on validation (evaluate/calibration.py)
    # Calibrated confidence below which a prediction needs a person (evaluate/calibration.py
    # `review_threshold`, chosen on validation); None: saved before it was chosen.
    review_threshold: float | None = None
    val_top1: float | None = None  # validation top-1 at release: what agreement with a drop's labels to expect
    pruned_shapes: dict[str, dict[str, Any]] = Field(default_factory=dict)  # module -> changed shape attributes
    pruning: PruningRecord | None = None
    training: TrainingRecord = Field(default_factory=TrainingRecord)
    lineage: Lineage = Field(default_factory=Lineage)


@dataclass
class ModelBundle:
    """A trained model with everything needed to use it on raw products."""

    model: MultimodalShoeNet
    tokenizer: Any
    spec: BundleSpec
    index: EmbeddingIndex | None = None  # the catalog's embeddings, for recommendations
    continual: ContinualState | None = None  # what the next catalog-drop update needs

    # Shorthands for what every consumer reads (the spec holds them).
    classes = property(lambda self: self.spec.classes, doc="the label map, in class-index order")
    max_title_tokens = property(lambda self: self.spec.max_title_tokens, doc="token length of every text")
    text_columns = property(lambda self: self.spec.text_columns, doc="columns read after the title")

    @property
    def model_config(self) -> ModelConfig:
        return self.model.cfg

    def joint_retrain_estimate_s(self, catalog_rows: int) -> float | None:
        """Seconds a fresh training on `catalog_rows` products would take on the machine that trained
        this model (its pretraining and fit time per product, scaled); None when not recorded."""
        training, pretraining = self.spec.training, self.spec.lineage.photo_pretraining
        if not training.seconds or not training.catalog_rows:
            return None
        seconds = training.seconds + ((pretraining.seconds or 0.0) if pretraining else 0.0)
        return seconds * catalog_rows / training.catalog_rows

    def image_transform(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageTransform:
        return resolve_image_transform(self.model.cfg, max_pixels)


def save_bundle(bundle: ModelBundle, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "format_version": FORMAT_VERSION,
        "model_config": bundle.model.cfg.model_dump(mode="json"),
        "text_hf_config": bundle.model.text_encoder.hf_config() if bundle.model.text_encoder else None,
        "spec": bundle.spec.model_dump(mode="json"),
    }
    (folder / SPEC_FILE).write_text(json.dumps(document, indent=2, default=str))
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
    document = json.loads((folder / SPEC_FILE).read_text())
    version = document.get("format_version")
    if version == 1:
        spec = spec_from_v1(document)
    elif version in (2, 3, FORMAT_VERSION):
        spec = BundleSpec.model_validate(document["spec"])
    else:
        raise ValueError(f"{folder}: unsupported bundle format {version}")
    cfg = ModelConfig.model_validate(document["model_config"])
    model = MultimodalShoeNet(cfg, len(spec.classes), text_hf_config=document["text_hf_config"], load_weights=False)
    state = load_file(str(folder / WEIGHTS_FILE))
    state = {k: v for k, v in state.items() if ".pooler." not in k}  # bundles saved before the pooler was dropped
    if "branch_head_weights" in model.state_dict():  # saved before the branch heads voted: they do not
        state.setdefault("branch_head_weights", torch.zeros_like(model.branch_head_weights))
    if spec.pruned_shapes:  # a pruned model: reshape the fresh one to fit
        apply_pruned_shapes(model, spec.pruned_shapes, state)
    model.load_state_dict(state)
    model.mark_pretrained(spec.training.pretrained, catalog_photos=spec.lineage.photo_pretraining is not None)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR))
    index = EmbeddingIndex.load(folder / INDEX_DIR) if (folder / INDEX_DIR).is_dir() else None
    continual = ContinualState.load(folder / CONTINUAL_DIR) if (folder / CONTINUAL_DIR).is_dir() else None
    return ModelBundle(model, tokenizer, spec, index, continual)


def spec_from_v1(document: dict[str, Any]) -> BundleSpec:
    """The typed spec of a format-1 bundle, whose provenance was an untyped `info` dict."""
    info = document.get("info") or {}
    pruning = dict(info.get("pruning") or {})
    record = (
        PruningRecord(
            ratio=pruning.pop("ratio", 0.0),
            finetune_epochs=pruning.pop("finetune_epochs", 0),
            metrics={k: float(v) for k, v in pruning.items()},
        )
        if pruning
        else None
    )
    return BundleSpec(
        classes=document["classes"],
        max_title_tokens=document["max_title_tokens"],
        text_columns=info.get("text_columns", []),
        temperature=info.get("temperature", 1.0),
        pruned_shapes=info.get("pruned_shapes") or {},
        pruning=record,
        training=TrainingRecord(
            best_epoch=info.get("best_epoch", 0),
            best_score=info.get("best_val_macro_f1"),
            parameters=info.get("parameters", 0),
            pretrained=info.get("pretrained", {}),
        ),
        lineage=Lineage(
            catalog_hash=info.get("catalog_hash") or "",
            catalog_hashes=[h for h in info.get("catalog_hashes", []) if h],
            updated_from=info.get("updated_from"),
            new_classes=info.get("new_classes", []),
            registered_version=info.get("registered_version"),
        ),
    )
