"""Replay memory for catalog-drop updates: which products a model keeps, and its whole continual state.

Exemplars per category are chosen by herding on the embedding (iCaRL, Rebuffi et al. 2017): greedily
the products whose running mean best approximates the class mean. With a byte budget
(`replay_bytes`) the photos are kept as JPEG and the number per category is what fits the budget
at the mean size of a sample of the catalog's photos (memory replay with compressed data, Wang et
al. 2022: more, slightly lossy exemplars beat fewer exact ones). The holdout is a capped random
share of never-trained test products per category, on which forgetting is measured; the validation
memory the same share of validation products, on which the next update chooses its epoch.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from kickvision.config import ContinualConfig
from kickvision.data.prepare import PreparedData
from kickvision.model.memory import ContinualState, ExemplarSet, encode_jpeg_one
from kickvision.model.predict import predict_logits
from kickvision.train.ewc import diagonal_fisher, grow_fisher

log = logging.getLogger(__name__)


def herding(embeddings: np.ndarray, m: int) -> np.ndarray:
    """iCaRL herding: greedily pick m rows whose running mean best approximates the class mean."""
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    target = x.mean(0)
    chosen: list[int] = []
    running = np.zeros_like(target)
    available = np.ones(len(x), dtype=bool)
    for k in range(1, min(m, len(x)) + 1):
        candidate_means = (running + x) / k
        distance = np.linalg.norm(candidate_means - target, axis=1)
        distance[~available] = np.inf
        best = int(np.argmin(distance))
        chosen.append(best)
        available[best] = False
        running += x[best]
    return np.array(chosen, dtype=np.int64)


def select_exemplars(
    embeddings: np.ndarray, categories: np.ndarray, per_class: int, method: str = "herding", seed: int = 0
) -> np.ndarray:
    """Indices of up to `per_class` exemplars per category (herding on embeddings, or at random)."""
    rng = np.random.default_rng(seed)
    picked = []
    for category in sorted(set(categories)):
        members = np.flatnonzero(categories == category)
        if method == "herding":
            picked.append(members[herding(embeddings[members], per_class)])
        else:
            picked.append(rng.permutation(members)[:per_class])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def cap_per_class(categories: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """A random subset with at most `per_class` indices per category (sorted)."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(categories == c))[:per_class] for c in sorted(set(categories))]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def exemplars_per_class(data: PreparedData, indices: np.ndarray, budget: int, quality: int, seed: int = 0) -> int:
    """How many exemplars per category fit `budget` bytes: photos as JPEG at `quality` (mean size of
    up to 64 of `indices`' photos) plus their token ids and mask, for every category of `data`."""
    sample = np.random.default_rng(seed).permutation(np.asarray(indices))[:64]
    if not len(sample):
        return 0
    photo = np.mean([len(encode_jpeg_one(image, quality)) for image in data.images[sample]])
    per_product = photo + data.input_ids[0].nbytes + data.attention_mask[0].nbytes
    fits = int(budget // (per_product * max(len(data.classes), 1)))
    if fits < 1:
        log.warning("replay_bytes %d holds less than one exemplar per category: keeping one each", budget)
    return max(fits, 1)


def build_continual_state(
    model: torch.nn.Module,
    data: PreparedData,
    train_indices: np.ndarray,
    holdout: ExemplarSet,
    cfg: ContinualConfig,
    seed: int,
    previous: ContinualState | None = None,
    validation: ExemplarSet | None = None,
) -> ContinualState:
    """Fisher, replay, holdout and validation memory for `model`, which was just trained on
    `train_indices` of `data`.

    With `previous` (an update), the Fisher is accumulated online and `data` already contains the
    old replay exemplars among `train_indices`.
    """
    fisher = diagonal_fisher(model, data, train_indices, cfg.fisher_samples, seed)
    updates = 0
    if previous is not None:
        old = grow_fisher(previous.fisher, model)
        fisher = {n: cfg.fisher_decay * old[n] + f if n in old else f for n, f in fisher.items()}
        updates = previous.updates + 1
    _, embeddings = predict_logits(model, data, train_indices)
    categories = data.rows["category"].to_numpy()[train_indices]
    per_class = cfg.replay_per_class
    if cfg.replay_bytes:
        per_class = exemplars_per_class(data, train_indices, cfg.replay_bytes, cfg.replay_jpeg_quality, seed)
    chosen = select_exemplars(embeddings, categories, per_class, cfg.replay_selection, seed)
    replay = ExemplarSet.from_prepared(data, train_indices[chosen])
    if cfg.replay_bytes:
        replay = replay.compressed(cfg.replay_jpeg_quality)
    samples = min(cfg.fisher_samples, len(train_indices))
    return ContinualState(fisher, replay, holdout, updates, samples, cfg.replay_selection, validation)


def initial_holdout(data: PreparedData, cfg: ContinualConfig, seed: int) -> ExemplarSet:
    """Up to `holdout_per_class` test products per category of a freshly trained model's catalog."""
    test = data.indices("test")
    keep = cap_per_class(data.rows["category"].to_numpy()[test], cfg.holdout_per_class, seed)
    return ExemplarSet.from_prepared(data, test[keep])


def capped_memory(kept: ExemplarSet | None, added: ExemplarSet, per_class: int, seed: int) -> ExemplarSet | None:
    """`kept` ∪ `added`, at most `per_class` products per category; None when `per_class` is 0 (the
    memory is then dropped: a later update keeps its last epoch until the memory is rebuilt)."""
    if not per_class:
        return None
    pool = kept.concat(added) if kept is not None and len(kept) else added
    return pool.take(cap_per_class(pool.rows["category"].to_numpy(), per_class, seed))


def continual_state_after_training(
    model: torch.nn.Module, data: PreparedData, cfg: ContinualConfig, seed: int
) -> ContinualState:
    """The state a freshly trained model is registered with: Fisher and replay from its train split,
    holdout from its test split, validation memory from its validation split."""
    val = ExemplarSet.from_prepared(data, data.indices("val"))
    validation = capped_memory(None, val, cfg.validation_per_class, seed)
    return build_continual_state(
        model, data, data.indices("train"), initial_holdout(data, cfg, seed), cfg, seed, validation=validation
    )
