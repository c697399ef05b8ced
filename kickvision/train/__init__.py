"""Train: one engine, several users.

- `engine`: optimizer and schedule factory, the epoch loop, best-epoch keeping, early stopping.
- `loader`, `losses`: batches and loss terms the engine sums.
- `fit`: a fresh model; `update`: a catalog drop on top of the champion (`ewc`, `replay`);
  `prune`: structured pruning and its fine-tune.
"""
