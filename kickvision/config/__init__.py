"""Run configuration: the YAML files in configs/ are the only knobs of a run.

Each section is a pydantic model, so a typo or a wrong type in a YAML file is one clear error
naming the setting, and each pipeline step receives exactly the section it needs. The sections
live here, the catalog-drop update's in continual.py; `RunConfig` holds them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from kickvision.config.base import RENAMED, _Section
from kickvision.config.continual import ContinualConfig
from kickvision.errors import ConfigError

# `pretrained` accepts auto | true | false | <path to weights or a model folder>.
Pretrained = bool | Literal["auto"] | str
# Validation metrics a training loop can keep its best epoch by (a loss is minimised, the rest maximised).
Monitor = Literal["val_macro_f1", "val_top1", "val_loss"]


def image_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(height, width) of an `image_size` setting: one side means a square."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _sorted_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Constructor overrides in key order: the same settings written in another order are the same
    config (and the same pipeline cache key, which ZenML takes from the parameters' text)."""
    return dict(sorted(overrides.items()))


class ValidateConfig(_Section):
    """Row rules of the validate step and when a drop counts as unusable."""

    min_good_rows: int = Field(20, ge=1, description="fail the run below this many good rows")
    min_good_fraction: float = Field(0.5, ge=0, le=1, description="... or below this fraction")
    min_rows_per_class: int = Field(3, ge=1, description="rarer categories are quarantined")
    title_min_chars: int = Field(2, ge=0)
    title_max_chars: int = Field(300, ge=1)
    max_image_bytes: int = Field(20_000_000, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)  # decompression-bomb guard, checked before decoding
    min_image_side: int = Field(8, ge=1)
    allowed_categories: list[str] | None = None

    @model_validator(mode="after")
    def _title_bounds_in_order(self) -> ValidateConfig:
        if self.title_min_chars > self.title_max_chars:
            raise ValueError(
                f"title_min_chars ({self.title_min_chars}) is above title_max_chars ({self.title_max_chars})"
            )
        return self


class DataConfig(_Section):
    """Splitting and input encoding."""

    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    max_title_tokens: int = Field(32, ge=4)
    text_columns: list[str] = Field(
        default_factory=list,
        description="catalog columns appended to the title as 'column: value' (empty = title only)",
    )


class ImageEncoderConfig(_Section):
    """A timm image encoder, by name, with constructor overrides (timm's **kwargs)."""

    name: str = "resnet18"
    pretrained: Pretrained = "auto"
    overrides: dict[str, Any] = Field(default_factory=dict)

    _canonical = field_validator("overrides")(_sorted_overrides)


class TextEncoderConfig(_Section):
    """A transformers encoder: a hub id, a local folder, or the alias `all-minilm-l6-v2`."""

    name: str = "distilbert-base-uncased"
    model_type: str = "distilbert"  # architecture used when no weights/config are found offline
    pretrained: Pretrained = "auto"
    overrides: dict[str, Any] = Field(default_factory=dict)  # applied only when built from scratch

    _canonical = field_validator("overrides")(_sorted_overrides)


class ModelConfig(_Section):
    """MultimodalShoeNet: encoders -> projections -> fusion -> class and embedding heads."""

    image_size: int | tuple[int, int] = Field(
        96, description="input pixels: a side (square) or [height, width] (e.g. [80, 64] for portrait photos)"
    )
    image_mean: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="per-channel pixel mean (0..1)")
    image_std: tuple[float, float, float] = Field((0.5, 0.5, 0.5), description="per-channel pixel std (0..1)")
    image_encoders: list[ImageEncoderConfig] = Field(default_factory=lambda: [ImageEncoderConfig(name="resnet18")])
    text_encoder: TextEncoderConfig | None = Field(default_factory=TextEncoderConfig)
    projection_dim: int = Field(256, ge=1)
    fusion: Literal["concat", "gated"] = "concat"
    fusion_hidden: int = Field(512, ge=1)
    embedding_dim: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    modality_dropout: float = Field(0.15, ge=0, lt=1, description="per-sample branch drop in training")
    branch_loss_weight: float = Field(
        0.0,
        ge=0,
        description="weight of a cross-entropy loss on a linear classifier per branch (0 = no branch heads); "
        "makes every modality learn to classify on its own instead of leaning on the title",
    )

    @field_validator("image_size")
    @classmethod
    def _at_least_16_px(cls, size: int | tuple[int, int]) -> int | tuple[int, int]:
        sides = (size, size) if isinstance(size, int) else size
        if min(sides) < 16:
            raise ValueError(f"every side must be at least 16 px, got {size}")
        return size

    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) of the model's photo input."""
        return image_hw(self.image_size)


class TrainConfig(_Section):
    """Optimisation of the train step."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    encoder_lr: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="lower LR for pretrained encoders; None = same as lr"
    )
    pretrained_trainable_layers: int | None = Field(
        None,
        ge=0,
        description="encoders pretrained on generic data (MiniLM; ImageNet photo encoders where their weights are "
        "on the machine) train their top N stages in the fit and its pruning fine-tune, no backward below "
        "(0: left as they are); None: all. Photo pretraining trains them all",
    )
    weight_decay: float = Field(0.05, ge=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    contrastive_weight: float = Field(0.2, ge=0, description="supervised contrastive loss on the embedding head")
    contrastive_temperature: float = Field(0.1, gt=0)
    pct_start: float = Field(0.15, gt=0, lt=1, description="share of the one-cycle schedule spent warming up")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; None = no clipping")
    balanced_sampling: bool = False
    monitor: Monitor = Field("val_macro_f1", description="validation metric that keeps the best epoch")
    patience: int = Field(3, ge=1, description="early stopping: epochs without a better `monitor`")
    augment: bool = Field(True, description="augment training photos (random horizontal flips, and the next three)")
    crop_scale: float = Field(1.0, gt=0, le=1, description="random crops keep at least this share of the area")
    shift: float = Field(0.0, ge=0, le=0.5, description="random shifts of up to this share of each side")
    color_jitter: float = Field(0.0, ge=0, lt=1, description="brightness/contrast/saturation factors in 1 ± this")
    mixup_alpha: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="mixup of the photos, Beta(α, α) (0 = off); image-only models"
    )
    cutmix_alpha: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="CutMix of the photos, Beta(α, α) (0 = off); image-only models"
    )
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="validate and keep a moving average of the weights (timm ModelEmaV3; "
        "the decay warms up to this ceiling: 1 - (1 + step)^(-2/3))",
    )
    num_threads: int = Field(0, ge=0, description="torch CPU threads; 0 = torch default")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:(0|[1-9][0-9]*))?)$",
        description="auto (CUDA where there is one, else the CPU), cpu, cuda, cuda:N or mps",
    )
    amp: bool = True  # bf16 autocast on CUDA
    cpu_amp: bool = False  # bf16 autocast on the CPU too, where it has native bf16 (AVX512-BF16, AMX); else float32
    channels_last: bool = True  # on CUDA only: the weights and photos in NHWC, what cuDNN's fast convolutions read
    data_on_device: bool = Field(
        False,
        description="keep the training split's pixels and tokens on the training device, cut batches there "
        "(no per-product loader, no copy per step; on a GPU the split must fit its memory)",
    )
    compile: bool = Field(False, description="torch.compile the training forward (pays on a GPU; first steps compile)")


class PruneConfig(_Section):
    """The prune step: structured pruning of every encoder, a short fine-tune, an accuracy gate."""

    enabled: bool = True
    ratio: float = Field(0.5, ge=0, lt=1, description="share of channels / widths removed per prunable group")
    head_ratio: float | None = Field(None, ge=0, lt=1, description="share of attention heads removed; None = ratio")
    round_to: int | None = Field(8, ge=1, description="keep widths multiples of this (fast kernels)")
    keep_text_width: bool = Field(False, description="prune the text encoder's heads and FFNs, not its hidden width")
    finetune_epochs: int = Field(3, ge=0)
    lr: float = Field(5e-4, gt=0, allow_inf_nan=False)
    encoder_lr: float | None = Field(None, gt=0, allow_inf_nan=False, description="generic encoders' LR; None = lr")
    pct_start: float = Field(0.2, gt=0, lt=1, description="warm-up share of the fine-tune's one-cycle schedule")
    distill_weight: float = Field(
        0.0, ge=0, description="weight of distillation from the unpruned model during the fine-tune (0 = off)"
    )
    distill_temperature: float = Field(2.0, gt=0)
    tolerance: float = Field(0.005, ge=0, le=1, description="max validation top-1 loss to keep the pruned model")
    macro_f1_tolerance: float | None = Field(
        None,
        ge=0,
        le=1,
        description="max validation macro-F1 loss to keep the pruned model, as well (pruning costs the rarest "
        "categories first, which top-1 hardly sees); None = not checked",
    )


PRETRAIN_OBJECTIVES = ("title_alignment", "views", "labels", "label_contrast")


class PretrainConfig(_Section):
    """Photo pretraining before the train step: the image encoders learn from the catalog's own photos.

    `method` is one objective or several joined by "+" (their losses add up): `title_alignment` (CLIP-style,
    text side frozen as in LiT), `views` (SimCLR), `labels` (a supervised warm start on the train split's
    categories), `label_contrast` (SupCon on the pooled photo vectors). Cached on the prepared catalog;
    kickvision.train.pretrain has the details.
    """

    enabled: bool = False
    method: str = Field("title_alignment", description=f"one of {PRETRAIN_OBJECTIVES} or several joined by '+'")
    text_encoder: str = Field("all-minilm-l6-v2", description="frozen pretrained encoder of the title side")
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    temperature: float = Field(0.07, gt=0, description="initial softmax temperature (learnt)")
    views_temperature: float = Field(0.2, gt=0, allow_inf_nan=False, description="NT-Xent temperature of `views`")
    views_crop_scale: float = Field(0.35, gt=0, le=1, description="smallest area share a `views` crop keeps")
    views_color_jitter: float = Field(0.4, ge=0, lt=1, description="brightness/contrast/saturation change of `views`")
    contrast_temperature: float = Field(0.1, gt=0, allow_inf_nan=False, description="temperature of `label_contrast`")
    knn_k: int = Field(20, ge=1, description="neighbours of the k-NN probe that reports embedding quality")
    probe_cs: tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)], ...] = Field(
        (0.01, 0.1, 1.0, 10.0), min_length=1, description="inverse L2 strengths the linear probe picks among"
    )
    mixup_alpha: float = Field(0.0, ge=0, allow_inf_nan=False, description="mixup of the photos (`labels` only)")
    cutmix_alpha: float = Field(0.0, ge=0, allow_inf_nan=False, description="CutMix of the photos (`labels` only)")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="keep a moving average of the weights")

    @field_validator("method")
    @classmethod
    def _known_objectives(cls, value: str) -> str:
        parts = [part.strip() for part in value.split("+")]
        unknown = [part for part in parts if part not in PRETRAIN_OBJECTIVES]
        if unknown or len(set(parts)) != len(parts):
            raise ValueError(
                f"objectives are {', '.join(PRETRAIN_OBJECTIVES)}, each once, joined by '+'; got {value!r}"
            )
        return "+".join(o for o in PRETRAIN_OBJECTIVES if o in parts)  # one spelling per combination

    @model_validator(mode="after")
    def _mixing_needs_labels_alone(self) -> PretrainConfig:
        if (self.mixup_alpha or self.cutmix_alpha) and self.objectives != ("labels",):
            raise ValueError(
                f"pretrain.mixup_alpha and pretrain.cutmix_alpha need method 'labels' alone, got {self.method!r}: "
                "a mixed photo's target is a blend of two labels, but it has no title or twin view of its own"
            )
        return self

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(self.method.split("+"))


class EvaluateConfig(_Section):
    """The evaluate step's explanation work (the metrics themselves are always computed)."""

    faithfulness_products: int = Field(16, ge=0, description="test products ROAD-scored per run; 0 = skip")
    gallery_per_class: int = Field(1, ge=0, description="correct and wrong products per class in the gallery")
    audit: bool = Field(True, description="audit the catalog's labels (evaluate/catalog_audit.py) and log it")
    audit_folds: int = Field(5, ge=2, le=20, description="folds of the out-of-fold text judge of the training rows")


class RegisterConfig(_Section):
    """MLflow registry settings of the register step."""

    model_name: str = "kickvision"
    recommendations: int = Field(5, ge=1, description="similar products the served model returns")
    promotion_metric: Literal["top1", "macro_f1"] = "top1"
    replace_unloadable_champion: bool = Field(
        False,
        description="replace a champion that cannot be loaded and scored (default: refuse, the new version stays "
        "challenger and the run exits 2)",
    )


class RunConfig(_Section):
    """One whole run: what `kickvision train --config FILE` reads."""

    name: str = "custom"
    seed: int = Field(42, ge=0, lt=2**32, description="seeds the split and every loop (numpy takes 0..2**32-1)")
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    continual: ContinualConfig = Field(default_factory=ContinualConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegisterConfig = Field(default_factory=RegisterConfig)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _mixed_photos_need_an_image_only_model(self) -> RunConfig:
        if (self.train.mixup_alpha or self.train.cutmix_alpha) and self.model.text_encoder is not None:
            raise ValueError(
                "train.mixup_alpha and train.cutmix_alpha mix photos, which only an image-only model can learn from "
                "(model.text_encoder: null); this model reads titles too, and a title cannot be mixed with its "
                "photo (for the photo encoders alone: pretrain.mixup_alpha with pretrain.method: labels)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class ScheduleConfig(_Section):
    """configs/schedule.yaml: retrain on a cron schedule where the orchestrator supports schedules."""

    name: str = "kickvision-nightly"
    cron_expression: str = "0 3 * * *"
    catalog: str  # the catalog folder as the orchestrator's pods see it (e.g. a mounted volume)
    config: str = "fashion"  # the run config to train with
    watch_cron_line: str = ""  # what to put in crontab where the orchestrator has no schedules


def load_schedule(path_or_name: str | Path = "schedule") -> ScheduleConfig:
    path = resolve_config_path(path_or_name)
    try:
        return ScheduleConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def resolve_config_path(path_or_name: str | Path) -> Path:
    """A config file path, or the name of one in configs/ (`demo` -> configs/demo.yaml)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    named = CONFIG_DIR / f"{path_or_name}.yaml"
    if named.is_file():
        return named
    raise ConfigError(f"config file not found: {path_or_name} (nor {named})")


def load_config(path_or_name: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config; `overrides` is merged section-wise on top (used by tests/benchmarks)."""
    path = resolve_config_path(path_or_name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    raw = deep_merge(raw, overrides or {})
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden" and where in RENAMED:
            message = f"no longer a setting; replaced by {RENAMED[where]}"
        if not where:  # a rule across sections names its settings itself
            raise ConfigError(f"{path}: {message}") from None
        raise ConfigError(f"{path}: setting '{where}': {message}") from None


def dotted_overrides(assignments: list[str]) -> dict[str, Any]:
    """`["train.epochs=3", "model.fusion=gated"]` -> `{"train": {"epochs": 3}, "model": {"fusion": "gated"}}`
    (values parsed as YAML scalars)."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{assignment}' is not KEY=VALUE (e.g. train.epochs=3)")
        *parents, leaf = key.split(".")
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return overrides


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `update` into a copy of `base` (lists are replaced, not merged)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
