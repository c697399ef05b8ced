"""Fit and inference loops for MultimodalShoeNet on PreparedData."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from kickvision.bundle import ModelBundle
from kickvision.config import ModelConfig, TrainConfig
from kickvision.data import PreparedData, ShoeBatches, images_to_tensor
from kickvision.model import MultimodalShoeNet, ShoeNetOutput, build_model, count_parameters
from kickvision.recommend import EmbeddingIndex, make_index

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class FitResult:
    bundle: ModelBundle
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    batch["image"] = images_to_tensor(batch["image"])
    return batch


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _loader(data: PreparedData, indices: np.ndarray, cfg: TrainConfig, train: bool, seed: int):
    dataset = ShoeBatches(data, indices, augment=train and cfg.augment)
    sampler = None
    if train and cfg.balanced_sampling:
        labels = data.labels()[indices]
        weights = 1.0 / np.bincount(labels, minlength=len(data.classes))[labels]
        sampler = torch.utils.data.WeightedRandomSampler(
            weights, len(indices), generator=torch.Generator().manual_seed(seed)
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train and len(indices) > cfg.batch_size,
        generator=torch.Generator().manual_seed(seed),
    )


@torch.no_grad()
def predict_arrays(
    model: MultimodalShoeNet,
    images: np.ndarray,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    batch_size: int = 128,
    device: torch.device | None = None,
    use_image: bool | np.ndarray = True,
    use_text: bool | np.ndarray = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, C], embeddings [N, D]) for encoded products (uint8 NHWC pixels, token ids).

    `use_image` / `use_text` False (or a per-product boolean array) hides that modality from the
    model, as for a product with no photo or no title.
    """
    device = device or next(model.parameters()).device
    model.eval()
    n = len(images)
    image_present = np.broadcast_to(np.asarray(use_image, dtype=np.float32), (n,))
    text_present = np.broadcast_to(np.asarray(use_text, dtype=np.float32), (n,))
    logits, embeddings = [], []
    for start in range(0, n, batch_size):
        window = slice(start, start + batch_size)
        out = model(
            images_to_tensor(torch.from_numpy(np.ascontiguousarray(images[window])).to(device)),
            torch.from_numpy(np.ascontiguousarray(input_ids[window])).to(device),
            torch.from_numpy(np.ascontiguousarray(attention_mask[window])).to(device),
            image_present=torch.from_numpy(image_present[window].copy()).to(device),
            text_present=torch.from_numpy(text_present[window].copy()).to(device),
        )
        logits.append(out.logits.float().cpu())
        embeddings.append(out.embedding.float().cpu())
    if not logits:
        return np.zeros((0, model.classifier.out_features), np.float32), np.zeros(
            (0, model.cfg.embedding_dim), np.float32
        )
    return torch.cat(logits).numpy(), torch.cat(embeddings).numpy()


def predict_logits(
    model: MultimodalShoeNet,
    data: PreparedData,
    indices: np.ndarray,
    batch_size: int = 128,
    device: torch.device | None = None,
    use_image: bool = True,
    use_text: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, C], embeddings [N, D]) for the rows `indices` of `data` (see predict_arrays)."""
    return predict_arrays(
        model,
        data.images[indices],
        data.input_ids[indices],
        data.attention_mask[indices],
        batch_size,
        device,
        use_image,
        use_text,
    )


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020) on L2-normalised embeddings: same-class products attract.

    Anchors without a same-class partner in the batch are skipped.
    """
    n = embeddings.shape[0]
    logits = embeddings.float() @ embeddings.float().T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    logits = logits.masked_fill(self_mask, -1e9)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = positives.sum(1)
    has_pos = n_pos > 0
    if not has_pos.any():
        return embeddings.sum() * 0
    mean_log_prob = (log_prob * positives).sum(1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob.mean()


def classification_scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return {
        "top1": float(accuracy_score(labels, predictions)) if len(labels) else 0.0,
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)) if len(labels) else 0.0,
    }


def train_one_epoch(
    model: MultimodalShoeNet,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    cfg: TrainConfig,
    device: torch.device,
    after_backward: Callable[[], None] | None = None,
    desc: str = "epoch",
    progress: bool = True,
    extra_loss: Callable[[dict[str, torch.Tensor], ShoeNetOutput], torch.Tensor] | None = None,
) -> dict[str, float]:
    """One pass of cross-entropy (+ per-branch cross-entropy, + SupCon on the embedding) training.

    `after_backward()` runs between backward and the optimizer step: it may add to the gradients
    (the EWC penalty's gradient, which is cheaper added directly than taken through autograd).
    `extra_loss(batch, output)` is added to the loss (e.g. distillation from a teacher).
    """
    model.train()
    started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=None if progress else True)
    for batch in bar:
        batch = _to_device(batch, device)
        with _autocast(device, cfg.amp):
            out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
            loss = F.cross_entropy(out.logits.float(), batch["label"], label_smoothing=cfg.label_smoothing)
            if out.branch_logits:  # each branch on its own (ModelConfig.branch_loss_weight)
                branch_loss = torch.stack(
                    [
                        F.cross_entropy(b.float(), batch["label"], label_smoothing=cfg.label_smoothing)
                        for b in out.branch_logits
                    ]
                ).mean()
                loss = loss + model.cfg.branch_loss_weight * branch_loss
            if cfg.contrastive_weight > 0:
                loss = loss + cfg.contrastive_weight * supervised_contrastive_loss(
                    out.embedding, batch["label"], cfg.contrastive_temperature
                )
            if extra_loss is not None:
                loss = loss + extra_loss(batch, out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        n = batch["label"].shape[0]
        seen += n
        loss_sum += loss.item() * n
        correct += (out.logits.argmax(1) == batch["label"]).sum().item()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    elapsed = time.perf_counter() - started
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_top1": correct / max(seen, 1),
        "train_samples_per_s": seen / max(elapsed, 1e-9),
        "epoch_seconds": elapsed,
    }


def distillation_loss(
    teacher: MultimodalShoeNet, weight: float, temperature: float
) -> Callable[[dict[str, torch.Tensor], ShoeNetOutput], torch.Tensor]:
    """Hinton et al.'s soft-target loss, w·T²·KL(teacher ‖ student), with the teacher frozen in eval mode."""
    teacher.eval()

    def loss(batch: dict[str, torch.Tensor], out: ShoeNetOutput) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(batch["image"], batch["input_ids"], batch["attention_mask"]).logits.float()
        student = F.log_softmax(out.logits.float() / temperature, dim=1)
        soft = F.softmax(target / temperature, dim=1)
        return weight * temperature**2 * F.kl_div(student, soft, reduction="batchmean")

    return loss


def fit(
    data: PreparedData,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    tokenizer,
    max_title_tokens: int,
    seed: int = 42,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    text_columns: list[str] | tuple[str, ...] = (),
) -> FitResult:
    """Train a fresh MultimodalShoeNet; early-stops on validation macro-F1 and keeps the best epoch."""
    seed_everything(seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    model = build_model(model_cfg, len(data.classes)).to(device)

    # Pretrained encoders fine-tune at encoder_lr; everything trained from scratch uses lr.
    pretrained = [e for e in [*model.image_encoders, model.text_encoder] if e is not None and e.pretrained_loaded]
    pretrained_ids = {id(p) for e in pretrained for p in e.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) in pretrained_ids], "lr": cfg.encoder_lr or cfg.lr},
        {"params": [p for p in model.parameters() if id(p) not in pretrained_ids], "lr": cfg.lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    train_idx, val_idx = data.indices("train"), data.indices("val")
    loader = _loader(data, train_idx, cfg, train=True, seed=seed)
    total_steps = max(1, cfg.epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps, pct_start=0.15
    )

    best_state, best_f1, best_epoch, stale, history = None, -1.0, 0, 0, []
    labels = data.labels()
    for epoch in range(1, cfg.epochs + 1):
        train_stats = train_one_epoch(
            model, loader, optimizer, scheduler, cfg, device, desc=f"epoch {epoch}/{cfg.epochs}", progress=progress
        )
        val_logits, _ = predict_logits(model, data, val_idx, device=device)
        val_scores = (
            classification_scores(labels[val_idx], val_logits.argmax(1))
            if len(val_idx)
            else {"top1": 0.0, "macro_f1": 0.0}
        )
        metrics = {**train_stats, "val_top1": val_scores["top1"], "val_macro_f1": val_scores["macro_f1"]}
        history.append({"epoch": epoch, **metrics})
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if on_epoch_end:
            on_epoch_end(epoch, metrics)
        if metrics["val_macro_f1"] > best_f1:
            best_f1, best_epoch, stale = metrics["val_macro_f1"], epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
            if stale >= cfg.patience:
                log.info("early stop after epoch %d (best %d, val macro-F1 %.4f)", epoch, best_epoch, best_f1)
                break

    model.load_state_dict(best_state)
    model.to("cpu").eval()
    info = {
        "catalog_hash": data.catalog_hash,
        "best_epoch": best_epoch,
        "best_val_macro_f1": best_f1,
        "parameters": count_parameters(model),
        "pretrained": model.pretrained_report(),
        "text_columns": list(text_columns),  # what the text encoder reads besides the title (DataConfig)
    }
    bundle = ModelBundle(model, tokenizer, list(data.classes), max_title_tokens, info)
    return FitResult(bundle, history, best_epoch)


def index_catalog(bundle: ModelBundle, data: PreparedData) -> EmbeddingIndex:
    """Embed every product of the prepared catalog (all splits) into a recommendation index."""
    _, embeddings = predict_logits(bundle.model, data, np.arange(len(data.rows)))
    return make_index(embeddings, data.rows_with_image_paths())
