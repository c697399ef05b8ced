"""Promotion gates: pure functions from scores to (promote?, reason), so the rules are testable alone.

- `champion_gate`: a newly trained model replaces the champion only if it scores at least as well
  on the same test rows (the first registered version has nothing to beat).
- `update_gate`: a catalog-drop update replaces the champion only if it forgot at most the
  tolerance on the old categories and is no worse on old + new test data together.
- `prune_gate` (kickvision/train/prune.py, where the prune step's loop runs it): a pruned model
  replaces the unpruned one only if it lost at most the tolerance of validation top-1 and, where one
  is set, of validation macro-F1.
"""

from __future__ import annotations

import numpy as np


def champion_gate(
    candidate_score: float, champion_score: float | None, metric: str, champion_version: str | None, n_rows: int
) -> tuple[bool, str]:
    """Promote a new model when it scores at least the champion's `metric` on the same rows."""
    if champion_version is None:
        return True, "first registered version"
    promoted = candidate_score >= champion_score
    comparison = ">=" if promoted else "<"
    return promoted, (
        f"test {metric} {candidate_score:.4f} {comparison} champion v{champion_version} "
        f"{champion_score:.4f} on the same {n_rows} test rows"
    )


def update_gate(metrics: dict[str, float], tolerance: float) -> tuple[bool, str]:
    """The promotion rule for a catalog-drop update: little forgetting and no worse overall.

    Promote only if old-category top-1 fell by at most `tolerance` and top-1 on the combined test
    data (old holdout + drop test) is at least the champion's.
    """
    forgetting = metrics["update_forgetting"]
    before, after = metrics["update_combined_top1_before"], metrics["update_combined_top1_after"]
    summary = (
        f"old-category top-1 {metrics['update_old_top1_before']:.4f} -> {metrics['update_old_top1_after']:.4f} "
        f"(forgetting {forgetting:+.4f}, tolerance {tolerance:.4f}); combined top-1 {before:.4f} -> {after:.4f}"
    )
    if not np.isfinite(forgetting):
        return False, "no old holdout to measure forgetting on; " + summary
    if forgetting > tolerance:
        return False, "forgot too much: " + summary
    if after < before:
        return False, "worse overall: " + summary
    return True, summary
