"""What every config section is: a frozen pydantic model that refuses unknown settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# settings a config of an earlier release may still carry -> what replaced them (named in the error)
RENAMED = {"continual.freeze_pretrained_encoders": "continual.pretrained_trainable_layers: 0 (true) or null (false)"}
