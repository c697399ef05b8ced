"""Elastic weight consolidation: the Fisher diagonal of a model, and the penalty that holds an update near it.

Penalty: λ/2 · Σ Fᵢ (θᵢ − θ*ᵢ)², θ* the champion's weights, F its diagonal Fisher. Online EWC
(Schwarz et al. 2018) accumulates the Fisher across a chain of drops: F ← γ·F_old + F_new.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kickvision.data.images import resolve_image_transform
from kickvision.data.prepare import PreparedData
from kickvision.model.net import MultimodalShoeNet


def diagonal_fisher(
    model: MultimodalShoeNet, data: PreparedData, indices: np.ndarray, max_samples: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher E[(∂ log p(y|x) / ∂θ)²] over up to `max_samples` of `indices`.

    Per-product gradients (batch of one, eval mode), so it is the Fisher and not the square of a
    batch-mean gradient.
    """
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(np.asarray(indices))[:max_samples]
    device = next(model.parameters()).device
    transform = resolve_image_transform(model.cfg)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, device="cpu") for n, p in params.items()}
    labels = data.labels()
    model.eval()
    for j in chosen:
        out = model(
            transform.normalise(torch.from_numpy(data.images[j : j + 1].copy()).to(device)),
            torch.from_numpy(data.input_ids[j : j + 1]).to(device),
            torch.from_numpy(data.attention_mask[j : j + 1]).to(device),
        )
        loss = F.cross_entropy(out.logits.float(), torch.tensor([labels[j]], device=device))
        model.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float().cpu() ** 2
    model.zero_grad(set_to_none=True)
    return {n: f / max(len(chosen), 1) for n, f in fisher.items()}


def normalise_fisher(fisher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Fisher divided by its mean over every entry: λ then weighs the average parameter's
    precision as 1, whatever the model's size or the scale of its gradients (idempotent)."""
    total = sum(float(f.double().sum()) for f in fisher.values())
    count = sum(f.numel() for f in fisher.values())
    if total <= 0 or count == 0:
        return fisher
    mean = total / count
    return {n: f / mean for n, f in fisher.items()}


def grown_along_rows(new: torch.Size, old: torch.Size) -> bool:
    return len(new) == len(old) and new[0] >= old[0] and tuple(new[1:]) == tuple(old[1:])


def grow_fisher(fisher: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Pad Fisher entries with zeros where the model's parameter grew (new classifier rows)."""
    params = dict(model.named_parameters())
    grown = {}
    for name, weight in fisher.items():
        param = params.get(name)
        if param is None:
            continue
        if param.shape != weight.shape and grown_along_rows(param.shape, weight.shape):
            padded = torch.zeros(param.shape, dtype=weight.dtype)
            padded[: weight.shape[0]] = weight
            weight = padded
        if param.shape == weight.shape:
            grown[name] = weight
    return grown


class EWCPenalty:
    """λ/2 · Σ Fᵢ (θᵢ − θ*ᵢ)² over the parameters the Fisher covers; a gradient hook of the engine.

    A parameter that grew along its first axis since the anchor (the classifier after new
    categories were added) is penalised on its old slice only: new rows are free to learn.
    `after_backward()` adds the penalty's exact gradient λ·F·(θ − θ*) to `.grad` in place, which
    costs a few fused vector ops instead of an autograd graph over every weight (the text
    encoder's token embeddings alone are millions of them).
    """

    def __init__(
        self, model: torch.nn.Module, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], lam: float
    ):
        self.lam = lam
        self.terms: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []
        params = dict(model.named_parameters())
        for name, weight in fisher.items():
            param, theta_star = params.get(name), anchor.get(name)
            if param is None or theta_star is None or theta_star.shape != weight.shape:
                continue
            if param.shape != weight.shape and not grown_along_rows(param.shape, weight.shape):
                continue
            self.terms.append((param, weight, theta_star.detach()))

    def _on_parameter_devices(self) -> list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]]:
        """The terms with Fisher and anchor on each parameter's device (the engine moves the model)."""
        self.terms = [(p, w.to(p.device), t.to(p.device)) for p, w, t in self.terms]
        return self.terms

    @staticmethod
    def _old_slice(param: torch.Tensor, theta_star: torch.Tensor) -> torch.Tensor:
        return param[: theta_star.shape[0]] if param.shape != theta_star.shape else param

    def __call__(self) -> torch.Tensor:
        """The penalty's value (differentiable, for tests and logging)."""
        total = torch.zeros(())
        for param, weight, theta_star in self._on_parameter_devices():
            current = self._old_slice(param, theta_star)
            total = total + (weight * (current.float() - theta_star.float()) ** 2).sum().cpu()
        return 0.5 * self.lam * total

    @torch.no_grad()
    def after_backward(self) -> None:
        for param, weight, theta_star in self._on_parameter_devices():
            if not param.requires_grad:  # frozen for this loop (no optimizer step would apply it)
                continue
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            grad = self._old_slice(param.grad, theta_star)
            grad.add_(weight * (self._old_slice(param, theta_star) - theta_star), alpha=self.lam)

    def epoch_metrics(self) -> dict[str, float]:
        with torch.no_grad():
            return {"ewc_penalty": float(self())}
