"""The summary metrics by name, how tables name them, and which of them a data set reports (its headline first).

Every run computes all of `METRIC_NAMES` (aduni_hf/evaluation/metrics.py) from the same predictions and
probabilities; a data set's own metrics are the ones its community ranks by (docs/method.md, "Evaluation and
folds"): ISIC 2018 Task 3 ranked by balanced multi-class accuracy, the APTOS 2019 Kaggle competition by quadratic
weighted kappa, MedMNIST reports ROC-AUC beside accuracy. Cards and tables show accuracy, macro-F1 and the data
set's own metrics, and mark its headline one. Importing this module loads neither scikit-learn nor `datasets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# key in the results (test_<key>, cv_results.json) -> how tables and cards name it
METRIC_LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "balanced_accuracy": "balanced accuracy",
    "quadratic_kappa": "quadratic weighted kappa",
    "roc_auc": "ROC-AUC (macro, one-vs-rest)",
}
METRIC_NAMES = tuple(METRIC_LABELS)
# Shown for every data set, in this order, before the data set's own metrics: in compare.py's tables, and with
# balanced accuracy (the metrics every card showed before the data sets' own) in the cards and the cross-validation table.
COMMON_METRICS = ("accuracy", "macro_f1")
CARD_METRICS = (*COMMON_METRICS, "balanced_accuracy")
# The headline of a data set whose metadata names none and whose source is not a built-in one with its own.
DEFAULT_METRICS = ("macro_f1",)
# The metadata keys that `assemble_dataset` writes (aduni_hf/data/assemble.py).
HEADLINE_KEY, DATASET_METRICS_KEY = "headline_metric", "dataset_metrics"


@dataclass(frozen=True)
class DatasetMetrics:
    """The metrics a data set reports: `headline` (the one it is ranked by) among `own` (its community's)."""

    headline: str
    own: tuple[str, ...]

    def columns(self, common: tuple[str, ...] = COMMON_METRICS) -> tuple[str, ...]:
        """`common` (accuracy, macro-F1), then the data set's own metrics: the columns of its tables."""
        return (*common, *(name for name in self.own if name not in common))

    def as_metadata(self) -> dict[str, Any]:
        return {HEADLINE_KEY: self.headline, DATASET_METRICS_KEY: list(self.own)}


def check_metric_names(names: Any, where: str) -> tuple[str, ...]:
    """`names` (a list of metric keys, headline first) as a tuple; anything else raises ValueError naming `where`."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"{where}: expected a non-empty list of metric names, got {names!r}")
    unknown = [name for name in names if name not in METRIC_LABELS]
    if unknown:
        raise ValueError(f"{where}: unknown metric(s) {unknown}; choose from {list(METRIC_NAMES)}")
    return tuple(names)


def source_default_metrics(source: str) -> tuple[str, ...]:
    """The metrics of a built-in source (aduni_hf/data/sources/builders.py, `SOURCE_METRICS`), headline first;
    `DEFAULT_METRICS` for any other. Imported here, on use, so that the cards do not load the data package."""
    from ..data.sources.builders import SOURCE_METRICS

    return tuple(SOURCE_METRICS.get(str(source).lower(), DEFAULT_METRICS))


def dataset_metrics(metadata: Mapping[str, Any], where: str = "the data set's metadata") -> DatasetMetrics:
    """Which metrics a data set reports, from its metadata (`headline_metric`, `dataset_metrics`: what
    `assemble_dataset` records, and cv_results.json repeats), else its `source`'s default: a data set prepared
    before the metadata carried them gets its source's metrics. An unknown name raises ValueError naming `where`."""
    if HEADLINE_KEY in metadata:
        headline = check_metric_names([metadata[HEADLINE_KEY]], f"{where}, {HEADLINE_KEY}")[0]
        own = check_metric_names(metadata.get(DATASET_METRICS_KEY) or [headline], f"{where}, {DATASET_METRICS_KEY}")
        return DatasetMetrics(headline, own if headline in own else (headline, *own))
    source = metadata.get("source") or metadata.get("dataset_name") or metadata.get("dataset") or ""
    defaults = check_metric_names(list(source_default_metrics(str(source))), f"the defaults of source {source!r}")
    return DatasetMetrics(defaults[0], defaults)


def metric_label(name: str) -> str:
    """How a table names `name`: its label, or the key itself for a metric this module does not know."""
    return METRIC_LABELS.get(name, name)


# What the cards and tables say of a built-in source's headline metric (docs/method.md, "Evaluation and folds").
HEADLINE_NOTES = {
    ("isic2018", "balanced_accuracy"): "balanced multi-class accuracy (the mean recall over the classes), ISIC "
    "2018 Task 3's ranking metric",
    ("aptos2019", "quadratic_kappa"): "quadratic weighted kappa, the metric the APTOS 2019 Blindness Detection "
    "competition ranked by",
    ("dermamnist", "roc_auc"): "ROC-AUC (macro, one-vs-rest), the metric MedMNIST reports with accuracy",
    ("retinamnist", "roc_auc"): "ROC-AUC (macro, one-vs-rest), the metric MedMNIST reports with accuracy; "
    "quadratic weighted kappa is given too, the grades being ordinal",
}


def headline_sentence(metrics: DatasetMetrics, dataset_key: str) -> str:
    """One sentence naming the data set's headline metric (shown in bold) and, for a built-in source, why."""
    note = HEADLINE_NOTES.get((str(dataset_key).lower(), metrics.headline), metric_label(metrics.headline))
    return f"Headline metric (in bold): {note}."
