"""Evaluation steps: evaluate (test metrics, explanations), evaluate_update (forgetting)."""
