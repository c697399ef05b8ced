"""Loss terms the training engine sums: each is a small callable `(batch, output) -> scalar tensor`.

- `ClassificationLoss`: the objective every loop optimises: cross-entropy with label smoothing on
  the fused head, the per-branch heads' cross-entropy (ModelConfig.branch_loss_weight) and
  supervised contrastive loss on the embedding (TrainConfig.contrastive_weight). On mixed photos
  (mixup / CutMix, `batch["target"]`) the cross-entropies take the blended targets and the
  contrastive term is left out.
- `Distillation`: Hinton et al.'s soft targets from a frozen teacher (pruning fine-tunes).
- `LogitReplay` and `OldClassDistillation`: what a catalog-drop update keeps of the champion, from
  its logits per training row computed once before the update (fused head, un-augmented photos):
  DER++'s MSE on the replay exemplars' logits (Buzzega et al. 2020) and LwF's soft targets on the
  drop's own products (Li & Hoiem 2017), both over the champion's categories only.
The EWC penalty is not a term but a gradient hook (see ewc.py): its exact gradient is cheaper
added to `.grad` directly than taken through autograd.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from kickvision.config import ModelConfig, TrainConfig
from kickvision.model.net import MultimodalShoeNet, ShoeNetOutput

Batch = dict[str, torch.Tensor]  # image (normalised NCHW), input_ids, attention_mask, label


class LossTerm(Protocol):
    def __call__(self, batch: Batch, out: ShoeNetOutput) -> torch.Tensor: ...


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


class ClassificationLoss:
    """CE(fused) + w_branch · mean CE(branch heads) + w_con · SupCon(embedding)."""

    def __init__(
        self,
        label_smoothing: float,
        branch_weight: float = 0.0,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
    ):
        self.label_smoothing = label_smoothing
        self.branch_weight = branch_weight
        self.contrastive_weight = contrastive_weight
        self.contrastive_temperature = contrastive_temperature

    @classmethod
    def from_config(cls, train: TrainConfig, model: ModelConfig) -> ClassificationLoss:
        return cls(
            train.label_smoothing, model.branch_loss_weight, train.contrastive_weight, train.contrastive_temperature
        )

    def _cross_entropy(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if "target" in batch:  # mixed photos: soft targets, smoothing folded in (train/augment.py PhotoMix)
            return F.cross_entropy(logits.float(), batch["target"].float())
        return F.cross_entropy(logits.float(), batch["label"], label_smoothing=self.label_smoothing)

    def __call__(self, batch: Batch, out: ShoeNetOutput) -> torch.Tensor:
        labels = batch["label"]
        loss = self._cross_entropy(out.logits, batch)
        if out.branch_logits:  # each branch on its own (ModelConfig.branch_loss_weight)
            branch = torch.stack([self._cross_entropy(b, batch) for b in out.branch_logits]).mean()
            loss = loss + self.branch_weight * branch
        if self.contrastive_weight > 0 and "target" not in batch:  # a mixed photo has no one category to pull to
            loss = loss + self.contrastive_weight * supervised_contrastive_loss(
                out.embedding, labels, self.contrastive_temperature
            )
        return loss


class Distillation:
    """Soft-target loss w·T²·KL(teacher ‖ student), with the teacher frozen in eval mode.

    The teacher's fused head teaches the student's (the student trains in train mode, where branch
    heads do not vote), so the teacher's branch-head votes are silenced: `teacher` is changed in
    place, pass a copy."""

    def __init__(self, teacher: MultimodalShoeNet, weight: float, temperature: float):
        self.teacher = teacher.eval()
        if teacher.branch_classifiers is not None:
            teacher.branch_head_weights.zero_()
        self.weight = weight
        self.temperature = temperature

    def __call__(self, batch: Batch, out: ShoeNetOutput) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher(batch["image"], batch["input_ids"], batch["attention_mask"]).logits.float()
        student = F.log_softmax(out.logits.float() / self.temperature, dim=1)
        soft = F.softmax(target / self.temperature, dim=1)
        return self.weight * self.temperature**2 * F.kl_div(student, soft, reduction="batchmean")


class _ChampionLogits:
    """Per-row targets: `targets[i]` (the champion's C_old logits) for the rows where `rows[i]`."""

    def __init__(self, targets: torch.Tensor, rows: torch.Tensor, weight: float):
        self.targets, self.rows, self.weight = targets.float(), rows.bool(), weight

    def _select(self, batch: Batch, out: ShoeNetOutput) -> tuple[torch.Tensor, torch.Tensor] | None:
        index = batch["index"].cpu()
        keep = self.rows[index]
        if not keep.any():
            return None
        device = out.logits.device
        student = out.logits[keep.to(device), : self.targets.shape[1]].float()
        return student, self.targets[index[keep]].to(device)


class LogitReplay(_ChampionLogits):
    """DER++: w · MSE(student's old-category logits, the champion's) on the replay exemplars."""

    def __call__(self, batch: Batch, out: ShoeNetOutput) -> torch.Tensor:
        chosen = self._select(batch, out)
        if chosen is None:
            return out.logits.sum() * 0
        student, target = chosen
        return self.weight * F.mse_loss(student, target)


class OldClassDistillation(_ChampionLogits):
    """LwF: w · T² · KL(softmax(champion / T) ‖ softmax(student / T)) over the old categories, on the drop."""

    def __init__(self, targets: torch.Tensor, rows: torch.Tensor, weight: float, temperature: float):
        super().__init__(targets, rows, weight)
        self.temperature = temperature

    def __call__(self, batch: Batch, out: ShoeNetOutput) -> torch.Tensor:
        chosen = self._select(batch, out)
        if chosen is None:
            return out.logits.sum() * 0
        student, target = chosen
        t = self.temperature
        kl = F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(target / t, dim=1), reduction="batchmean")
        return self.weight * t**2 * kl
