"""Serve: a trained model in use.

- `predictor`: raw products (photo + title + attributes) -> probabilities, embeddings, similar products.
- `batching`: concurrent requests share forward passes (opportunistic micro-batching).
- `pyfunc_model`: the MLflow pyfunc, logged as models-from-code (no pickled class).
- `release`: what a model carries when it leaves training (index, temperature, continual state).
- `gates`: the pure promotion rules; `registry`: logging, registering and promoting through MLflow.
"""
