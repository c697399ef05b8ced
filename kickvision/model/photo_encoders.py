"""Photo encoders pretrained on a catalog's own photos: what pretraining produces and training starts from.

`PhotoEncoders` holds one timm backbone state per image encoder of the model configuration it was
pretrained for (matched by position and name) and how it was made (`PhotoPretrainingRecord`:
method, epochs, the catalog's content hash, the k-NN and linear-probe quality of its embeddings). Saved as
safetensors + JSON, never pickled; `apply_to(model)` loads the weights into a freshly built model's
image encoders, which then count as pretrained (their own learning rate, the model card says so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kickvision.errors import ConfigError
from kickvision.model.bundle import PhotoPretrainingRecord
from kickvision.model.net import MultimodalShoeNet

WEIGHTS_FILE = "photo_encoders.safetensors"
RECORD_FILE = "photo_encoders.json"


@dataclass
class PhotoEncoders:
    """Backbone weights of each image encoder, and their provenance (None: nothing was pretrained)."""

    record: PhotoPretrainingRecord | None = None
    names: list[str] = field(default_factory=list)  # the encoders' timm names, in model order
    states: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.states)

    def apply_to(self, model: MultimodalShoeNet) -> None:
        """Load the pretrained backbones into `model`'s image encoders (same names, same order)."""
        if not self.states:
            return
        names = [encoder.name for encoder in model.image_encoders]
        if names != self.names:
            raise ConfigError(
                f"pretrained photo encoders are for {self.names}, the model has {names}: pretrain again "
                "with the model's image_encoders"
            )
        for encoder, state in zip(model.image_encoders, self.states, strict=True):
            try:
                encoder.backbone.load_state_dict(state)
            except RuntimeError as exc:  # e.g. pretrained at another image_size (a ViT's position table)
                first = str(exc).strip().splitlines()[-1].strip()
                raise ConfigError(
                    f"pretrained photo encoder {encoder.name} does not fit the model ({first}): pretrain again "
                    "with the model's image_encoders and image_size"
                ) from None
            encoder.pretrained_loaded = encoder.catalog_pretrained = True

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in enumerate(self.states) for k, v in s.items()}
        save_file(tensors, str(folder / WEIGHTS_FILE))
        record = self.record.model_dump(mode="json") if self.record else None
        (folder / RECORD_FILE).write_text(json.dumps({"names": self.names, "record": record}, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> PhotoEncoders:
        folder = Path(folder)
        meta = json.loads((folder / RECORD_FILE).read_text())
        tensors = load_file(str(folder / WEIGHTS_FILE))
        states: list[dict[str, torch.Tensor]] = [{} for _ in meta["names"]]
        for key, value in tensors.items():
            index, _, name = key.partition(".")
            states[int(index)][name] = value
        record = PhotoPretrainingRecord.model_validate(meta["record"]) if meta["record"] else None
        return cls(record, meta["names"], states)
