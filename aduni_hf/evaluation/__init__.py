"""Evaluation: metrics (and their `evaluate` module), result tables."""

from pathlib import Path

from .metrics import build_compute_metrics, classification_metrics
from .tables import format_results_table

# `evaluate.load(EVALUATE_METRIC_PATH)` loads the metric module shipped in the package, offline.
EVALUATE_METRIC_PATH = str(Path(__file__).parent / "aduni_classification")

__all__ = ["EVALUATE_METRIC_PATH", "build_compute_metrics", "classification_metrics", "format_results_table"]
