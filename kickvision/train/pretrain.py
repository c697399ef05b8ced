"""Photo pretraining: the image encoders learn from the catalog's own photos before fusion.

Method `title_alignment` (CLIP, Radford et al. 2021, with the text tower pretrained and frozen as
in LiT, Zhai et al. 2022): every product's title is embedded once by a frozen pretrained text
encoder (MiniLM: the masked mean of its token states, L2-normalised); each image encoder gets a
linear projection to that width, and a symmetric InfoNCE loss with a learnt temperature makes each
photo pick its own title among the batch's titles and each title its own photo.

It is one more user of the training engine, with a forward (`align`) and a loss term of its own;
it trains on the train split's photos only (no validation or test photo is seen) and keeps the
epoch with the lowest validation alignment loss. The quality report is the standard
self-supervised one: k-NN top-1 of each encoder's pooled photo vector on the catalog's labels
(validation photos against training photos, cosine similarity, k neighbours voting with their
similarity), beside the same for the untrained encoders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
from kickvision.train.engine import EpochCallback, pretrain_settings, seed_everything, train_loop

TITLE_TOKENS = 32


@dataclass
class Alignment:
    projections: list[torch.Tensor]  # per image encoder [B, D], L2-normalised
    scale: torch.Tensor  # exp(learnt log-scale): 1 / temperature


class PhotoAligner(nn.Module):
    """The model's image encoders, each with a projection into the frozen title space."""

    def __init__(self, model_cfg: ModelConfig, text_dim: int, temperature: float):
        super().__init__()
        if not model_cfg.image_encoders:
            raise ConfigError("pretrain.enabled: the model has no image encoders to pretrain")
        self.cfg = model_cfg  # the engine derives the image transform from it
        self.image_encoders = nn.ModuleList(ImageEncoder(s, model_cfg.image_size) for s in model_cfg.image_encoders)
        self.text_encoder = None  # the title side is frozen and precomputed
        self.projections = nn.ModuleList(nn.Linear(e.out_dim, text_dim) for e in self.image_encoders)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    def forward(self, images: torch.Tensor) -> Alignment:
        vectors = [F.normalize(p(e(images)), dim=1) for e, p in zip(self.image_encoders, self.projections, strict=True)]
        return Alignment(vectors, self.log_scale.exp().clamp(max=100.0))


def align(model: PhotoAligner, batch: dict[str, torch.Tensor]) -> Alignment:
    """The engine's forward for pretraining: photos only."""
    return model(batch["image"])


class TitleAlignmentLoss:
    """Symmetric InfoNCE between each encoder's photo projections and the batch's title embeddings."""

    def __init__(self, title_embeddings: torch.Tensor):
        self.titles = title_embeddings  # [N, D] for every row of the prepared catalog

    def __call__(self, batch: dict[str, torch.Tensor], out: Alignment) -> torch.Tensor:
        titles = self.titles.to(batch["index"].device)[batch["index"]]
        targets = torch.arange(len(titles), device=titles.device)
        losses = []
        for photos in out.projections:
            logits = out.scale * photos.float() @ titles.T
            losses.append((F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2)
        return torch.stack(losses).mean()


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


def knn_report(aligner: PhotoAligner, data: PreparedData, k: int, suffix: str = "") -> dict[str, float]:
    """k-NN top-1 per image encoder: validation photos classified by their training-photo neighbours."""
    train, val = data.indices("train"), data.indices("val")
    labels = data.labels()
    report = {}
    for i, encoder in enumerate(aligner.image_encoders):
        gallery = photo_vectors(encoder, aligner.cfg, data.images[train])
        queries = photo_vectors(encoder, aligner.cfg, data.images[val])
        report[f"pretrain_knn_top1_{i}_{encoder.name}{suffix}"] = knn_top1(
            gallery, labels[train], queries, labels[val], k
        )
    return report


def alignment_validator(data: PreparedData, loss: TitleAlignmentLoss, batch_size: int):
    """Validation alignment loss (InfoNCE over batches of validation products)."""
    val = data.indices("val")

    @torch.no_grad()
    def validate(model: PhotoAligner) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        normalise = resolve_image_transform(model.cfg).normalise
        total, seen = 0.0, 0
        for start in range(0, len(val), batch_size):
            rows = val[start : start + batch_size]
            if len(rows) < 2:
                continue  # a batch of one has no negatives
            out = model(normalise(data.images[rows]).to(device))
            total += float(loss({"index": torch.from_numpy(rows).to(device)}, out)) * len(rows)
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

    Returns the encoders (with their provenance) and the metrics: k-NN top-1 of each encoder before
    (`..._scratch`) and after pretraining, and the kept epoch's validation alignment loss.
    """
    titles = embed_titles(data.rows["title"].fillna("").astype(str).tolist(), cfg.text_encoder)
    seed_everything(seed)
    aligner = PhotoAligner(model_cfg, titles.shape[1], cfg.temperature)
    metrics = knn_report(aligner, data, cfg.knn_k, suffix="_scratch")
    loss = TitleAlignmentLoss(titles)
    loop = train_loop(
        aligner,
        data,
        data.indices("train"),
        pretrain_settings(cfg, train_cfg),
        [loss],
        alignment_validator(data, loss, cfg.batch_size),
        seed=seed,
        desc="pretrain",
        on_epoch_end=on_epoch_end,
        progress=progress,
        forward=align,
    )
    metrics |= knn_report(aligner, data, cfg.knn_k)
    best = loop.best_score if loop.best_score is not None else float("nan")  # every validation loss NaN
    metrics |= {"pretrain_val_loss": best, "pretrain_best_epoch": float(loop.best_epoch)}
    record = PhotoPretrainingRecord(
        method=cfg.method, catalog_hash=data.catalog_hash, epochs=loop.best_epoch, metrics=metrics
    )
    names = [encoder.name for encoder in aligner.image_encoders]
    states = [{k: v.detach().clone() for k, v in e.backbone.state_dict().items()} for e in aligner.image_encoders]
    return PhotoEncoders(record, names, states), metrics
