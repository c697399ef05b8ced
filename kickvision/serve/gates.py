"""Promotion gates: pure functions from scores to (promote?, reason), so the rules are testable alone.

- `champion_gate`: a newly trained model replaces the champion only if it scores at least as well
  on the same test rows (the first registered version has nothing to beat).
- `update_gate`: a catalog-drop update replaces the champion only if it forgot at most the
  tolerance on the old categories and is no worse on old + new test data together.
- `prune_gate`: a pruned model replaces the unpruned one only if it lost at most the tolerance of
  validation top-1 and, where one is set, of validation macro-F1.
"""

from __future__ import annotations

import numpy as np

_ROUNDING = 1e-9  # a loss of exactly the tolerance (180/200 -> 179/200 at 0.005) is within it


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


def prune_gate(
    before: dict[str, float], after: dict[str, float], tolerance: float, macro_f1_tolerance: float | None
) -> tuple[bool, str]:
    """Keep the pruned model only if validation top-1 fell by at most `tolerance` and, unless
    `macro_f1_tolerance` is None, validation macro-F1 by at most that (`before`/`after`: `val_top1`,
    `val_macro_f1`)."""
    summary = f"validation top-1 {before['val_top1']:.4f} -> {after['val_top1']:.4f} (tolerance {tolerance:.4f})"
    lost = before["val_top1"] - after["val_top1"]
    if macro_f1_tolerance is not None:
        summary += (
            f", macro-F1 {before['val_macro_f1']:.4f} -> {after['val_macro_f1']:.4f} "
            f"(tolerance {macro_f1_tolerance:.4f})"
        )
    if not lost <= tolerance + _ROUNDING:  # (NaN fails too)
        return False, "lost too much accuracy: " + summary
    lost_f1 = before["val_macro_f1"] - after["val_macro_f1"]
    if macro_f1_tolerance is not None and not lost_f1 <= macro_f1_tolerance + _ROUNDING:
        return False, "lost too much on the smaller categories (macro-F1): " + summary
    return True, summary
