"""ZenML pipelines: each reads as its DAG."""
