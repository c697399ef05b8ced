"""Small helpers for what goes to the experiment tracker."""

from __future__ import annotations

from typing import Any


def flatten_params(nested: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"fusion": "concat"}} -> {"model.fusion": "concat"}; values as short strings."""
    flat: dict[str, str] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten_params(item, f"{name}.{i}."))
        else:
            flat[name] = str(value)[:500]
    return flat
