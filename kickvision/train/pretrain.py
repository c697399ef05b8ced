"""Photo pretraining: the image encoders learn from the catalog's own photos before fusion.

Objectives (`pretrain.method`, one or several joined by "+", their losses added):

- `title_alignment` (CLIP, Radford et al. 2021, with the text tower pretrained and frozen as in LiT,
  Zhai et al. 2022): every product's title is embedded once by a frozen pretrained text encoder
  (MiniLM: the masked mean of its token states, L2-normalised); each image encoder gets a linear
  projection to that width, and a symmetric InfoNCE loss with a learnt temperature makes each photo
  pick its own title among the batch's titles and each title its own photo.
- `views` (SimCLR, Chen et al. 2020): each photo is seen twice, through independent random crops,
  flips and colour changes (`kickvision.train.augment`); an MLP head per encoder maps both views to
  a unit sphere where NT-Xent makes each view find its twin among the batch's 2B views. With `views`
  the other objectives read both views too (no third forward pass).
- `labels`: a linear classifier per encoder learns the train split's categories from the photo
  alone: the supervised warm start, where labels exist. It alone may mix photos
  (`pretrain.mixup_alpha`, `pretrain.cutmix_alpha`: a mixed photo's target is the same blend of
  its two labels).
- `label_contrast` (SupCon, Khosla et al. 2020): each encoder's pooled photo vectors, L2-normalised, are
  pulled towards the batch's photos of the same category and pushed from the others (temperature
  `pretrain.contrast_temperature`; with `views` both views of every photo take part). No head: the
  vectors the k-NN readout and the fused model use are the ones shaped, for their neighbourhoods.

It is one more user of the training engine, with a forward (`pretrain_forward`) and loss terms of
its own; it trains on the train split's photos only (no validation or test photo is seen) and keeps
the epoch with the lowest validation loss (the same objectives on validation photos, with views
drawn from a fixed seed so that epochs compare). The quality report is the standard
self-supervised one, on each encoder's pooled photo vector and the catalog's labels, validation photos
against training photos, beside the same for the untrained encoders:
- k-NN top-1: cosine similarity, k neighbours voting with their similarity;
- linear-probe top-1: a multinomial logistic regression fitted on the training photos' frozen vectors
  (standardised with their mean and spread), its L2 strength chosen among `pretrain.probe_cs` on a
  held-out fifth of the training photos (as CLIP's linear probes sweep it; the validation photos
  choose nothing), then refitted on all of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kickvision.config import ModelConfig, PretrainConfig, TextEncoderConfig, TrainConfig
from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import PreparedData
from kickvision.data.text import tokenize_titles
from kickvision.errors import ConfigError
from kickvision.model.bundle import PhotoPretrainingRecord
from kickvision.model.encoders import ImageEncoder, TextEncoder, build_tokenizer
from kickvision.model.photo_encoders import PhotoEncoders
from kickvision.train.augment import PhotoAugment
from kickvision.train.engine import EpochCallback, pick_device, seed_everything, train_loop
from kickvision.train.losses import supervised_contrastive_loss
from kickvision.train.settings import pretrain_settings

TITLE_TOKENS = 32
VIEW_DIM = 128  # SimCLR's projection width


@dataclass
class PhotoOutputs:
    """What the pretraining heads make of a batch; each list has one entry per image encoder and view."""

    titles: list[torch.Tensor] = field(default_factory=list)  # [B, D] in the title space, L2-normalised
    scale: torch.Tensor | None = None  # exp(learnt log-scale): 1 / temperature of title alignment
    views: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # per encoder, both views
    logits: list[torch.Tensor] = field(default_factory=list)  # [B, classes]
    pooled: list[list[torch.Tensor]] = field(default_factory=list)  # per encoder, [B, C] per view, L2-normalised


class PhotoPretrainer(nn.Module):
    """The model's image encoders with the heads their pretraining objectives train."""

    def __init__(self, model_cfg: ModelConfig, cfg: PretrainConfig, text_dim: int, n_classes: int):
        super().__init__()
        if not model_cfg.image_encoders:
            raise ConfigError("pretrain.enabled: the model has no image encoders to pretrain")
        self.cfg = model_cfg  # the engine derives the image transform from it
        self.objectives = cfg.objectives
        self.image_encoders = nn.ModuleList(ImageEncoder(s, model_cfg.image_size) for s in model_cfg.image_encoders)
        self.text_encoder = None  # the title side is frozen and precomputed
        widths = [e.out_dim for e in self.image_encoders]
        if "title_alignment" in self.objectives:
            self.projections = nn.ModuleList(nn.Linear(w, text_dim) for w in widths)
            self.log_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)))
        if "views" in self.objectives:
            self.view_heads = nn.ModuleList(
                nn.Sequential(nn.Linear(w, 512), nn.ReLU(inplace=True), nn.Linear(512, VIEW_DIM)) for w in widths
            )
            self.view_augment = PhotoAugment(crop_scale=cfg.views_crop_scale, color_jitter=cfg.views_color_jitter)
        if "labels" in self.objectives:
            self.classifiers = nn.ModuleList(nn.Linear(w, n_classes) for w in widths)

    def forward(self, images: torch.Tensor, pixels: torch.Tensor | None = None) -> PhotoOutputs:
        """`images`: the normalised batch; `pixels`: the same photos in [0, 1] before augmentation
        (`views` draws its two views from them)."""
        if "views" in self.objectives:
            if pixels is None:
                raise ValueError("the views objective needs the batch's pixels in [0, 1]")
            standardise = resolve_image_transform(self.cfg).standardise
            inputs = [standardise(self.view_augment(pixels)), standardise(self.view_augment(pixels))]
        else:
            inputs = [images]
        out = PhotoOutputs()
        for i, encoder in enumerate(self.image_encoders):
            vectors = [encoder(x) for x in inputs]
            if "title_alignment" in self.objectives:
                out.titles += [F.normalize(self.projections[i](v), dim=1) for v in vectors]
            if "views" in self.objectives:
                first, second = (F.normalize(self.view_heads[i](v), dim=1) for v in vectors)
                out.views.append((first, second))
            if "labels" in self.objectives:
                out.logits += [self.classifiers[i](v) for v in vectors]
            if "label_contrast" in self.objectives:
                out.pooled.append([F.normalize(v, dim=1) for v in vectors])
        if "title_alignment" in self.objectives:
            out.scale = self.log_scale.exp().clamp(max=100.0)
        return out


def pretrain_forward(model: PhotoPretrainer, batch: dict[str, torch.Tensor]) -> PhotoOutputs:
    """The engine's forward for pretraining: photos only."""
    return model(batch["image"], batch.get("pixels"))


class TitleAlignmentLoss:
    """Symmetric InfoNCE between the photo projections and the batch's title embeddings."""

    def __init__(self, title_embeddings: torch.Tensor):
        self.titles = title_embeddings  # [N, D] for every row of the prepared catalog

    def __call__(self, batch: dict[str, torch.Tensor], out: PhotoOutputs) -> torch.Tensor:
        titles = self.titles.to(batch["index"].device)[batch["index"]]
        targets = torch.arange(len(titles), device=titles.device)
        losses = []
        for photos in out.titles:
            logits = out.scale * photos.float() @ titles.T
            losses.append((F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2)
        return torch.stack(losses).mean()


class ViewAgreementLoss:
    """NT-Xent (SimCLR): each of the 2B views picks its twin among the other 2B - 1."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, batch: dict[str, torch.Tensor], out: PhotoOutputs) -> torch.Tensor:
        losses = []
        for first, second in out.views:
            z = torch.cat([first, second]).float()
            n = len(first)
            similarity = (z @ z.T / self.temperature).fill_diagonal_(float("-inf"))
            twins = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
            losses.append(F.cross_entropy(similarity, twins))
        return torch.stack(losses).mean()


class PhotoLabelLoss:
    """Cross-entropy of each encoder's linear classifier on the batch's categories (or, for mixed
    photos, their blended targets `batch["target"]`)."""

    def __call__(self, batch: dict[str, torch.Tensor], out: PhotoOutputs) -> torch.Tensor:
        target = batch["target"].float() if "target" in batch else batch["label"]
        return torch.stack([F.cross_entropy(logits.float(), target) for logits in out.logits]).mean()


class LabelContrastLoss:
    """SupCon on each encoder's pooled vectors: every view of every photo an anchor, its category's others positives."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, batch: dict[str, torch.Tensor], out: PhotoOutputs) -> torch.Tensor:
        losses = []
        for views in out.pooled:
            labels = batch["label"].repeat(len(views))
            losses.append(supervised_contrastive_loss(torch.cat(views), labels, self.temperature))
        return torch.stack(losses).mean()


def objective_losses(cfg: PretrainConfig, title_embeddings: torch.Tensor | None) -> list:
    """The loss terms of `pretrain.method`, in its order."""
    terms = {
        "title_alignment": lambda: TitleAlignmentLoss(title_embeddings),
        "views": lambda: ViewAgreementLoss(cfg.views_temperature),
        "labels": PhotoLabelLoss,
        "label_contrast": lambda: LabelContrastLoss(cfg.contrast_temperature),
    }
    return [terms[objective]() for objective in cfg.objectives]


@torch.no_grad()
def embed_titles(titles: list[str], encoder_name: str, batch_size: int = 256) -> torch.Tensor:
    """[N, D] L2-normalised embeddings of `titles` by a frozen pretrained text encoder."""
    spec = TextEncoderConfig(name=encoder_name, pretrained=True)
    encoder, tokenizer = TextEncoder(spec).eval(), build_tokenizer(spec)
    ids, mask = tokenize_titles(tokenizer, titles, TITLE_TOKENS)
    chunks = [
        encoder(torch.from_numpy(ids[i : i + batch_size]), torch.from_numpy(mask[i : i + batch_size]))
        for i in range(0, len(titles), batch_size)
    ]
    return F.normalize(torch.cat(chunks), dim=1) if chunks else torch.zeros(0, encoder.out_dim)


@torch.no_grad()
def photo_vectors(encoder: ImageEncoder, model_cfg: ModelConfig, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """[N, C] L2-normalised pooled vectors of `images` (uint8 NHWC) by one image encoder."""
    transform = resolve_image_transform(model_cfg)
    encoder.eval()
    device = next(encoder.parameters()).device
    chunks = [
        encoder(transform.normalise(images[i : i + batch]).to(device)).float().cpu()
        for i in range(0, len(images), batch)
    ]
    return F.normalize(torch.cat(chunks), dim=1)


def knn_top1(
    gallery: torch.Tensor, gallery_labels: np.ndarray, queries: torch.Tensor, labels: np.ndarray, k: int
) -> float:
    """Top-1 of a similarity-weighted k-nearest-neighbour vote (cosine; vectors L2-normalised)."""
    if not len(queries) or not len(gallery):
        return float("nan")
    similarity = queries @ gallery.T
    top = similarity.topk(min(k, len(gallery)), dim=1)
    votes = torch.zeros(len(queries), int(max(gallery_labels.max(), labels.max())) + 1)
    votes.scatter_add_(1, torch.from_numpy(gallery_labels)[top.indices], top.values.clamp(min=0))
    return float((votes.argmax(1).numpy() == labels).mean())


def linear_probe_top1(
    train: torch.Tensor, train_labels: np.ndarray, queries: torch.Tensor, labels: np.ndarray, cs: Sequence[float]
) -> tuple[float, float]:
    """Top-1 of a logistic regression on frozen `train` vectors (standardised), and its inverse L2 strength C:
    chosen among `cs` on a held-out fifth of the training vectors, then refitted on all of them."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import ShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if not len(queries) or len(np.unique(train_labels)) < 2:
        return float("nan"), float("nan")
    if not (torch.isfinite(train).all() and torch.isfinite(queries).all()):
        return float("nan"), float("nan")  # diverged weights: reported as such, as the k-NN reports them
    held_out = ShuffleSplit(n_splits=1, test_size=0.2, random_state=0)
    logistic = LogisticRegressionCV(
        Cs=list(cs), l1_ratios=(0.0,), cv=held_out, scoring="accuracy", max_iter=2000, use_legacy_attributes=False
    )
    probe = make_pipeline(StandardScaler(), logistic).fit(train.numpy(), train_labels)
    return float((probe.predict(queries.numpy()) == labels).mean()), float(logistic.C_)


def probe_report(pretrainer: PhotoPretrainer, data: PreparedData, cfg: PretrainConfig, suffix: str = "") -> dict:
    """k-NN and linear-probe top-1 per image encoder: validation photos against the training photos."""
    train, val = data.indices("train"), data.indices("val")
    labels = data.labels()
    report = {}
    for i, encoder in enumerate(pretrainer.image_encoders):
        gallery = photo_vectors(encoder, pretrainer.cfg, data.images[train])
        queries = photo_vectors(encoder, pretrainer.cfg, data.images[val])
        name = f"{i}_{encoder.name}{suffix}"
        report[f"pretrain_knn_top1_{name}"] = knn_top1(gallery, labels[train], queries, labels[val], cfg.knn_k)
        top1, c = linear_probe_top1(gallery, labels[train], queries, labels[val], cfg.probe_cs)
        report[f"pretrain_probe_top1_{name}"], report[f"pretrain_probe_c_{name}"] = top1, c
    return report


def pretrain_validator(data: PreparedData, losses: list, batch_size: int, seed: int = 0):
    """Validation loss: the objectives on validation photos (views drawn from `seed`, the same each epoch)."""
    val = data.indices("val")
    labels = torch.from_numpy(data.labels())

    @torch.no_grad()
    def validate(model: PhotoPretrainer) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        transform = resolve_image_transform(model.cfg)
        total, seen = 0.0, 0
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, len(val), batch_size):
                rows = val[start : start + batch_size]
                if len(rows) < 2:
                    continue  # a batch of one has no negatives
                pixels = transform.to_unit(data.images[rows]).to(device)
                index = torch.from_numpy(rows).to(device)
                batch = {"image": transform.standardise(pixels), "pixels": pixels, "index": index}
                batch["label"] = labels[rows].to(device)
                out = model(batch["image"], batch["pixels"])
                total += float(sum(loss(batch, out) for loss in losses)) * len(rows)
                seen += len(rows)
        return {"val_loss": total / seen if seen else float("nan")}

    return validate


def pretrain_photos(
    data: PreparedData,
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    train_cfg: TrainConfig,
    seed: int = 42,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
) -> tuple[PhotoEncoders, dict[str, float]]:
    """Pretrain the image encoders of `model_cfg` on the train split's photos and titles.

    Returns the encoders (with their provenance) and the metrics: k-NN and linear-probe top-1 of each
    encoder before (`..._scratch`) and after pretraining, and the kept epoch's validation loss.
    """
    started = time.perf_counter()
    titles = None
    if "title_alignment" in cfg.objectives:
        titles = embed_titles(data.rows["title"].fillna("").astype(str).tolist(), cfg.text_encoder)
    seed_everything(seed)
    pretrainer = PhotoPretrainer(model_cfg, cfg, titles.shape[1] if titles is not None else 0, len(data.classes))
    device = pick_device(train_cfg.device)  # the probes embed every photo twice: on the training device
    metrics = probe_report(pretrainer.to(device), data, cfg, suffix="_scratch")
    losses = objective_losses(cfg, titles)
    loop = train_loop(
        pretrainer,
        data,
        data.indices("train"),
        pretrain_settings(cfg, train_cfg),
        losses,
        pretrain_validator(data, losses, cfg.batch_size, seed),
        seed=seed,
        desc="pretrain",
        on_epoch_end=on_epoch_end,
        progress=progress,
        forward=pretrain_forward,
    )
    metrics |= probe_report(pretrainer.to(device), data, cfg)
    pretrainer.to("cpu")
    best = loop.best_score if loop.best_score is not None else float("nan")  # every validation loss NaN
    metrics |= {"pretrain_val_loss": best, "pretrain_best_epoch": float(loop.best_epoch)}
    record = PhotoPretrainingRecord(
        method=cfg.method,
        catalog_hash=data.catalog_hash,
        epochs=loop.best_epoch,
        metrics=metrics,
        seconds=time.perf_counter() - started,
    )
    names = [encoder.name for encoder in pretrainer.image_encoders]
    states = [{k: v.detach().clone() for k, v in e.backbone.state_dict().items()} for e in pretrainer.image_encoders]
    return PhotoEncoders(record, names, states), metrics
