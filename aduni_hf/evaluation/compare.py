"""Table 1 / Table 2 style comparisons of cross-validation runs (`scripts/compare.py`).

One row per run directory (its cv_results.json): method and sampler, the folds, accuracy, macro-F1 and the data
set's own metrics (balanced multi-class accuracy for ISIC2018, quadratic weighted kappa for APTOS2019, ROC-AUC for
MedMNIST; its headline one in bold) as mean ± std, the paper's numbers where the data set is ISIC2018 or APTOS2019,
and, for each of those metrics, a paired t-test across the folds the run shares with the `aduni` run (same method
and data set otherwise), so that a reader sees which differences the folds can resolve. With 5 folds, a paired
t-test has 4 degrees of freedom; a p-value above 0.05 means the folds do not separate the two methods. A metric
that is not one of a run's data set's, or that its cv_results.json predates, is '–'.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy import stats

from .cv_summary import REPORTED_MODELS, paper_format
from .metric_names import (
    COMMON_METRICS,
    METRIC_NAMES,
    DatasetMetrics,
    dataset_metrics,
    headline_sentence,
    metric_label,
)
from .paper_results import rows_of

REFERENCE_METHOD = "aduni"
COMPARED = COMMON_METRICS  # every table's; the data sets' own metrics follow them
PAPER_METRICS = ("accuracy", "macro_f1")  # what the paper's tables report


@dataclass
class Run:
    """One cross-validation: its folder and cv_results.json."""

    path: Path
    results: dict[str, Any]

    @property
    def label(self) -> str:
        sampler = self.results.get("sampler", "none")
        return self.results["method"] + ("" if sampler == "none" else f" + {sampler}")

    @property
    def metrics(self) -> DatasetMetrics:
        """The data set's metrics (cv_results.json's `headline_metric`, `dataset_metrics`; else its source's)."""
        return dataset_metrics(self.results, where=f"{self.path / 'cv_results.json'}")

    def fold_values(self, metric: str) -> dict[int, float]:
        """{fold: value} of the folds that hold `metric` (an older fold may lack a metric added since)."""
        return {int(k): float(v[metric]) for k, v in self.results["folds"].items() if metric in v}


def load_run(path: str | Path) -> Run:
    """A run directory (or its cv_results.json). Raises FileNotFoundError naming what is missing."""
    path = Path(path)
    file = path if path.is_file() else path / "cv_results.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no cv_results.json (run scripts/cross_validate.py on it first)")
    return Run(file.parent, json.loads(file.read_text()))


def reported_model(run: Run, model: str) -> Run:
    """`run` with the folds, mean and std of one of its reported models (`REPORTED_MODELS`: last_epoch,
    best_validation, official_test_selection). Raises KeyError naming the run when it lacks that model."""
    if model not in REPORTED_MODELS:
        raise KeyError(f"model={model!r}: choose one of {list(REPORTED_MODELS)}")
    if model == "last_epoch":
        return run
    if model not in run.results:
        raise KeyError(f"{run.path}: no {model!r} results (see docs/method.md, 'Model selection')")
    return Run(run.path, {**run.results, **run.results[model]})


def paired_test(run: Run, reference: Run, metric: str) -> tuple[float, float | None, int]:
    """(mean difference run - reference, two-sided paired t-test p-value, number of shared folds) on `metric`.
    The p-value is None with fewer than two shared folds, or when every difference is the same (no spread)."""
    mine, theirs = run.fold_values(metric), reference.fold_values(metric)
    shared = sorted(set(mine) & set(theirs))
    if not shared:
        return math.nan, None, 0
    differences = [mine[k] - theirs[k] for k in shared]
    mean = sum(differences) / len(differences)
    if len(shared) < 2 or max(differences) == min(differences):
        return mean, None, len(shared)
    return (
        mean,
        float(stats.ttest_rel([mine[k] for k in shared], [theirs[k] for k in shared]).pvalue),
        len(shared),
    )


def _dataset_name(run: Run) -> str:
    return str(run.results.get("dataset_name") or run.results.get("dataset", "")).lower()


def compared_metrics(runs: Sequence[Run]) -> tuple[str, ...]:
    """The table's metric columns: accuracy and macro-F1, then every run's data set's own metrics, in
    `METRIC_NAMES` order."""
    own = {name for run in runs for name in run.metrics.columns()}
    return (*COMPARED, *(name for name in METRIC_NAMES if name in own and name not in COMPARED))


def comparison_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One dict per run, in the given order, with every column of the markdown and CSV tables (the same keys in
    every row: None where a metric is not the run's data set's, or its results lack it)."""
    references = {}
    for run in runs:
        if run.results["method"] == REFERENCE_METHOD and run.results.get("sampler", "none") == "none":
            references.setdefault(_dataset_name(run), run)
    metrics = compared_metrics(runs)
    rows = []
    for run in runs:
        results, dataset = run.results, _dataset_name(run)
        row: dict[str, Any] = {
            "run": str(run.path),
            "dataset": dataset,
            "method": results["method"],
            "sampler": results.get("sampler", "none"),
            "label": run.label,
            "folds": ",".join(sorted(results["folds"], key=int)),
            "selection": results.get("selection", ""),
            "headline_metric": run.metrics.headline,
        }
        own = run.metrics.columns()
        for metric in metrics:
            present = metric in own and metric in results["mean"]
            row[f"{metric}_mean"] = results["mean"][metric] if present else None
            row[f"{metric}_std"] = results["std"][metric] if present else None
        # the row the run recorded (its method chose it, aduni_hf/methods), else its method's row of the tables
        paper = results.get("paper") or rows_of(results["method"]).get((dataset, row["sampler"]))
        for metric in PAPER_METRICS:
            row[f"paper_{metric}_mean"], row[f"paper_{metric}_std"] = paper[metric] if paper else (None, None)
        reference = references.get(dataset)
        for metric in metrics:
            if reference is None or reference is run or row[f"{metric}_mean"] is None:
                row[f"{metric}_vs_aduni"], row[f"{metric}_p"] = None, None
            else:
                difference, p_value, shared = paired_test(run, reference, metric)
                row[f"{metric}_vs_aduni"] = difference if shared else None
                row[f"{metric}_p"] = p_value
        rows.append(row)
    return rows


def _row_metrics(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The metric columns of `rows` (`compared_metrics` of their runs), read back from their keys."""
    return [name for name in METRIC_NAMES if f"{name}_mean" in rows[0]]


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _mean_cell(row: dict[str, Any], metric: str) -> str:
    """mean ± std of `metric`, bold where it is the row's headline metric; '–' where the row has none."""
    if row[f"{metric}_mean"] is None:
        return "–"
    text = paper_format(row[f"{metric}_mean"], row[f"{metric}_std"])
    return f"**{text}**" if metric == row["headline_metric"] else text


def comparison_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The Table 1/2 style markdown: ours beside the paper's, and the paired test against aduni on every
    metric of the table (macro-F1 and accuracy first, as before the data sets' own metrics were added)."""
    metrics = _row_metrics(rows)
    with_paper = any(row["paper_accuracy_mean"] is not None for row in rows)
    header = ["method", "folds", *(metric_label(name) for name in metrics)]
    if with_paper:
        header += ["paper accuracy", "paper macro-F1"]
    tested = ["macro_f1", "accuracy", *(name for name in metrics if name not in COMPARED)]
    header += [f"Δ {metric_label(name)} vs aduni (p)" for name in tested]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"], row["folds"], *(_mean_cell(row, name) for name in metrics)]
        if with_paper:
            for metric in PAPER_METRICS:
                mean, std = row[f"paper_{metric}_mean"], row[f"paper_{metric}_std"]
                cells.append("–" if mean is None else paper_format(mean, std))
        for metric in tested:
            difference = row[f"{metric}_vs_aduni"]
            cells.append("–" if difference is None else f"{difference:+.3f} ({_p(row[f'{metric}_p'])})")
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({row["selection"] for row in rows if row["selection"]})
    if any("TEST FOLD" in note for note in notes):
        warning = "**Models chosen on the test fold (the released code's rule): optimistic, not an honest estimate.**"
        lines = [warning, "", *lines]
    lines += [
        "",
        "Mean ± sample standard deviation over the test folds. Δ: mean per-fold difference from the `aduni` run "
        "(no sampler) on the same data set, with the two-sided paired t-test p-value over the shared folds "
        "(– where there are fewer than two).",
    ]
    headlines = {row["dataset"]: row["headline_metric"] for row in rows}
    for dataset, headline in headlines.items():
        sentence = headline_sentence(DatasetMetrics(headline, (headline,)), dataset)
        lines.append(f"{dataset or 'unnamed data set'}: {sentence[0].lower()}{sentence[1:]}")
    if notes:
        lines.append("Model reported: " + "; ".join(notes) + ".")
    return "\n".join(lines) + "\n"


def comparison_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
