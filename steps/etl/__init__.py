"""Data steps: ingest -> validate -> preprocess (or preprocess_drop for an update)."""
