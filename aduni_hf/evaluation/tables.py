"""Plain-text result tables for the console."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .metric_names import METRIC_NAMES, metric_label


def format_results_table(
    metrics: Mapping[str, float], class_names: Sequence[str], prefix: str = "test"
) -> str:
    """Every summary metric (`METRIC_NAMES`: accuracy, macro-F1, balanced accuracy, quadratic weighted kappa,
    ROC-AUC), then the F1 of every class, from `<prefix>_...` metric keys; one not computed shows as '-'."""
    rows = [(metric_label(name), name) for name in METRIC_NAMES]
    rows += [(f"F1 {name}", f"f1_{name}") for name in class_names]
    width = max(len(label) for label, _ in rows)
    lines = [f"{'metric':<{width}}  {prefix}", f"{'-' * width}  {'-' * max(len(prefix), 6)}"]
    for label, key in rows:
        value = metrics.get(f"{prefix}_{key}")
        lines.append(f"{label:<{width}}  {'-' if value is None else f'{value:.4f}'}")
    return "\n".join(lines)
