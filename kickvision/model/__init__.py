"""Model: the network, what it stores, and how it is saved.

- `encoders`: timm image encoders and the transformers text encoder (offline weight resolution).
- `net`: MultimodalShoeNet (projections, fusion, class and embedding heads), classifier growth.
- `predict`: batched forward passes over encoded products.
- `bundle`: the saved model folder and its typed spec (structure and provenance).
- `memory`: replay exemplars, holdout and Fisher kept for catalog-drop updates.
- `index`: the recommendation index; `shapes`: a pruned model's portable shape map;
  `costs`: parameters, MACs, file size, latency.
"""
