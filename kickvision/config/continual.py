"""The `continual` section: what every model carries for catalog-drop updates, and how an update trains
and is gated."""

from __future__ import annotations

import contextlib
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from kickvision.config.base import _Section

_AS_BOOL = TypeAdapter(bool)


class ContinualConfig(_Section):
    """Catalog-drop updates: what every model carries for them, and how an update trains and is gated.

    Every registered model stores the diagonal Fisher of its weights (the weights themselves are the
    EWC anchor), `replay_per_class` exemplars per category (or as many as `replay_bytes` holds as
    JPEG), up to `holdout_per_class` never-trained test products per category (the gate's forgetting) and
    up to `validation_per_class` validation products (the update's choice of epoch), so an update never
    needs the old catalog. The update recipe: EWC (`ewc_lambda`, `fisher_normalise`), replay, DER++
    logit replay (`logit_replay_weight`), LwF (`distill_weight`), weight aligning (`bias_correction`);
    `encoder_lr` for the encoders pretrained on generic data (as `train.encoder_lr` in the fit; None =
    lr; both times `new_categories_lr_scale` for a drop with a new category), `pretrained_trainable_layers`
    to train only their top layers (0: none; no backward below); with a validation memory, the epoch (or
    the champion's own weights; `patience` stops early) and the
    `interpolation` with the champion's weights chosen on it; see train/update.py.
    """

    replay_per_class: int = Field(20, ge=0, description="exemplars per category stored and replayed")
    replay_selection: Literal["herding", "random"] = "herding"
    replay_bytes: int = Field(
        0,
        ge=0,
        description="byte budget of the replay memory, photos kept as JPEG (as many exemplars per category as fit); "
        "0: replay_per_class exemplars with raw pixels",
    )
    replay_jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of exemplars under replay_bytes")
    holdout_per_class: int = Field(50, ge=1, description="old test products per category kept to measure forgetting")
    validation_per_class: int = Field(0, ge=0, description="old validation products per category to pick epochs on")
    fisher_samples: int = Field(256, ge=1, description="training products the Fisher diagonal is averaged over")
    fisher_decay: float = Field(0.9, ge=0, le=1, description="online EWC: old Fisher weight when a drop is added")
    ewc_lambda: float = Field(5000.0, ge=0, description="weight of the EWC penalty")
    use_replay: bool = True
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    encoder_lr: float | None = Field(None, gt=0, allow_inf_nan=False, description="LR of generic pretrained encoders")
    pretrained_trainable_layers: int | None = Field(
        None, ge=0, description="generic pretrained encoders train their top N stages (encoder.stages()); None: all"
    )
    new_categories_lr_scale: float = Field(
        1.0,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description="lr and encoder_lr multiplied by it when the drop brings a new category (its features are "
        "to learn; a drop of known categories only refines them)",
    )
    batch_norm_statistics: Literal["update", "keep"] = Field(
        "update",
        description="keep: the photo encoders' batch-norm running statistics stay the champion's while the update "
        "trains (their scale and shift still learn); update: they follow the drop and replay batches",
    )
    patience: int | None = Field(None, ge=1, description="with a validation memory: stop after N epochs not better")
    pct_start: float = Field(0.2, gt=0, lt=1, description="warm-up share of the update's one-cycle schedule")
    balanced_sampling: float = Field(
        1.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="how the drop and replay products are drawn: each with weight 1 / (its category's count)^x; "
        "true (1): every category equally likely; false (0): as the data come (a plain shuffle); 0.5: square-root "
        "sampling, between the two",
    )

    @field_validator("balanced_sampling", mode="before")
    @classmethod
    def _a_bool_word_is_one_or_zero(cls, value: object) -> object:
        """`true`/`false` read as 1/0 (pydantic's float does that), also written as a string (`"true"`, `"off"`: any
        word pydantic reads as a bool); anything else is left to the float check, which names the setting."""
        if isinstance(value, str):
            with contextlib.suppress(ValidationError):
                return float(_AS_BOOL.validate_python(value))
        return value

    logit_replay_weight: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="DER++: MSE to the champion's logits on the replay exemplars"
    )
    distill_weight: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="LwF: distil the champion's old-category outputs on the drop"
    )
    distill_temperature: float = Field(2.0, gt=0, allow_inf_nan=False, description="softmax temperature of LwF")
    bias_correction: Literal["none", "weight_aligning"] = Field(
        "none", description="weight_aligning: scale new categories' classifier rows to the old rows' mean norm"
    )
    new_class_init: Literal["random", "probe"] = Field(
        "random",
        description="probe: new categories' classifier rows fitted on the champion's features before training "
        "(LP-FT, train/probe.py); random: a random-normal start",
    )
    fisher_normalise: bool = Field(
        False,
        description="divide the Fisher by its mean before the penalty, so ewc_lambda means the same across models",
    )
    interpolation: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [1.0],
        min_length=1,
        description="α·updated + (1−α)·champion, the α best on the validation memory; [1.0]: the updated weights",
    )
    logit_adjustment: list[Annotated[float, Field(ge=0, le=2)]] = Field(
        [0.0],
        min_length=1,
        description="τ candidates: τ·log(the drop's class prior) added to the classifier's biases after a "
        "class-balanced update (after one at sampling power x, τ = x is the exact correction), the τ best on the "
        "validation memory (0 always competes; train/prior.py); [0.0]: none",
    )

    @model_validator(mode="after")
    def _adjusts_a_balanced_update(self) -> ContinualConfig:
        if any(self.logit_adjustment) and not self.balanced_sampling:
            raise ValueError(
                "logit_adjustment corrects class-balanced (or partly balanced) sampling's prior; with "
                "balanced_sampling: false the update already learns the drop's prior (set logit_adjustment: [0.0])"
            )
        return self

    forgetting_tolerance: float = Field(0.02, ge=0, le=1, description="max old-category top-1 drop to promote")
    refused_update: Literal["keep_champion", "joint_retrain"] = Field(
        "keep_champion",
        description="what `kickvision watch` does when the gate refuses an update: keep the champion, or retrain "
        "from scratch on every catalog the champion learnt plus the drop (the training gate then decides)",
    )
