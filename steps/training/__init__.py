"""Training steps: train (a fresh model), ewc_update (a drop on top of the champion), prune."""
