"""Plain-text result tables for the console."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .metric_names import METRIC_NAMES, metric_label


def format_results_table(
    metrics: Mapping[str, float], class_names: Sequence[str], prefix: str | Sequence[str] = "test"
) -> str:
    """Every summary metric (`METRIC_NAMES`: accuracy, macro-F1, balanced accuracy, quadratic weighted kappa,
    ROC-AUC), then the F1 of every class, from `<prefix>_...` metric keys; one not computed shows as '-'. Several
    prefixes give a column each: `("eval", "test")` sets the validation split beside the test fold."""
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
    rows = [(metric_label(name), name) for name in METRIC_NAMES]
    rows += [(f"F1 {name}", f"f1_{name}") for name in class_names]
    width = max(len(label) for label, _ in rows)
    widths = [max(len(name), len("-0.0000")) for name in prefixes]  # values right-aligned, signed ones too

    def line(label: str, cells: Sequence[str]) -> str:
        padded = (f"{cell:>{w}}" for cell, w in zip(cells, widths, strict=True))
        return "  ".join([f"{label:<{width}}", *padded])

    lines = [line("metric", prefixes), line("-" * width, ["-" * w for w in widths])]
    for label, key in rows:
        values = [metrics.get(f"{name}_{key}") for name in prefixes]
        lines.append(line(label, ["-" if value is None else f"{value:.4f}" for value in values]))
    return "\n".join(lines)
