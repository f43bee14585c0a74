"""Cross-validation results: per-fold test metrics, their mean and spread, and the paper's table format.

The paper (Sec. 3.1, Tables 1-2) reports every metric as the mean over 5 folds with its standard deviation,
written `0.878 ± 4.36e-03`. The standard deviation here is the sample one (n - 1 in the denominator), the
fold-to-fold spread a reader compares differences against; the paper does not say which it used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metric_names import CARD_METRICS, METRIC_NAMES, dataset_metrics, headline_sentence, metric_label

logger = logging.getLogger(__name__)

# A cross-validation folder (aduni_hf/recipes/cross_validation.py): output_dir/fold_<k>/ per fold, and these
CV_RESULTS_NAME = "cv_results.json"
CV_MARKDOWN_NAME = f"{Path(CV_RESULTS_NAME).stem}.md"  # the markdown twin of cv_results.json
FOLD_PREFIX = "fold_"


def fold_dir(output_dir: str | Path, fold: int) -> Path:
    """The run folder of test fold `fold` in a cross-validation's `output_dir`."""
    return Path(output_dir) / f"{FOLD_PREFIX}{fold}"


# Every summary metric; a fold's test_results.json must hold the first three (written before quadratic kappa and
# ROC-AUC were computed, an older fold lacks those, and the summary leaves them out rather than fail).
SUMMARY_METRICS = METRIC_NAMES
REQUIRED_METRICS = ("accuracy", "macro_f1", "balanced_accuracy")
# The models a run reports (aduni_hf.recipes.results.SELECTED_MODELS): key in cv_results.json -> (metric prefix in
# test_results.json, how tables name it). The official rule reads the test fold: its tables say so.
REPORTED_MODELS = {
    "last_epoch": ("test", "the model after the last epoch"),
    "best_validation": (
        "test_best_val",
        "the model with the best validation {metric} (inner validation split)",
    ),
    "official_test_selection": (
        "test_official_selection",
        "SELECTED ON THE TEST FOLD by the released code's rule (last epoch where test accuracy and test macro-F1 "
        "both improved): optimistic, for comparison with the paper only",
    ),
}


def fold_metrics(
    test_results: Mapping[str, Any], class_names: Sequence[str], prefix: str = "test"
) -> dict[str, Any]:
    """The summary metrics and per-class F1 of one fold, from its `test_results.json` (`test_accuracy`, ...); a
    metric other than `REQUIRED_METRICS` that the file lacks is left out."""
    missing = [f"{prefix}_{name}" for name in REQUIRED_METRICS if f"{prefix}_{name}" not in test_results]
    if missing:
        raise KeyError(f"test results lack {', '.join(missing)}")
    return {
        **{
            name: float(test_results[f"{prefix}_{name}"])
            for name in SUMMARY_METRICS
            if f"{prefix}_{name}" in test_results
        },
        "f1": {name: float(test_results.get(f"{prefix}_f1_{name}", math.nan)) for name in class_names},
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def summarise_folds(folds: Mapping[int, Mapping[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """Mean and std over `folds` ({fold: `fold_metrics`}) of every summary metric and every class's F1. A metric
    some folds lack (their test results predate it) is left out of the summary, with a warning naming them."""
    if not folds:
        raise ValueError("no finished folds to summarise")
    ordered = [folds[k] for k in sorted(folds)]
    summary: dict[str, Any] = {"mean": {}, "std": {}}
    for name in SUMMARY_METRICS:
        lacking = [k for k in sorted(folds) if name not in folds[k]]
        if lacking:
            if len(lacking) < len(folds):
                logger.warning(
                    "%s is left out of the summary: the test results of fold(s) %s predate it. Delete those "
                    "folds' folders and run them again to have it.", name, lacking,
                )  # fmt: skip
            continue
        summary["mean"][name], summary["std"][name] = mean_std([fold[name] for fold in ordered])
    summary["mean"]["f1"], summary["std"]["f1"] = {}, {}
    for name in class_names:
        summary["mean"]["f1"][name], summary["std"]["f1"][name] = mean_std(
            [fold["f1"][name] for fold in ordered]
        )
    return summary


def paper_format(mean: float, std: float) -> str:
    """`0.878 ± 4.36e-03`: the mean to three decimals, the standard deviation in scientific notation."""
    return f"{mean:.3f} ± {std:.2e}"


def results_markdown(results: Mapping[str, Any]) -> str:
    """The markdown summary of a cross-validation: for every reported model, the summary metrics and per-class F1 over folds, then every fold,
    in the paper's format."""
    columns, headline, sentence = markdown_columns(results)
    lines = [f"# {results['title']}", "", sentence, ""]
    for key in REPORTED_MODELS:
        if key == "last_epoch":
            lines += _model_markdown(results, results["selection"], columns, headline)
        elif key in results:
            lines += ["", *_model_markdown(results[key], results[key]["selection"], columns, headline)]
    return "\n".join(lines) + "\n"


def markdown_columns(results: Mapping[str, Any]) -> tuple[tuple[str, ...], str, str]:
    """(the metric columns of a cross-validation's tables, its headline metric, the sentence naming it): accuracy,
    macro-F1, balanced accuracy and the data set's own metrics (cv_results.json's `headline_metric` and
    `dataset_metrics`, else its source's defaults)."""
    metrics = dataset_metrics(results, where="cv_results.json")
    dataset_key = str(results.get("dataset_name") or results.get("dataset", ""))
    return metrics.columns(CARD_METRICS), metrics.headline, headline_sentence(metrics, dataset_key)


def _header(name: str, headline: str) -> str:
    label = metric_label(name)
    label = label[0].upper() + label[1:]
    return f"**{label}**" if name == headline else label


def _model_markdown(results: Mapping[str, Any], selection: str, columns: Sequence[str], headline: str) -> list[str]:
    folds = results["folds"]
    class_names = results["class_names"]
    mean, std = results["mean"], results["std"]
    done = sorted(int(k) for k in folds)
    lines = [
        f"## Model: {selection}",
        "",
        f"Test folds {', '.join(map(str, done))} of {results['num_folds']}; mean ± standard deviation over the "
        f"{len(done)} folds.",
        "",
        "| metric | " + " | ".join(_header(name, headline) for name in columns) + " |",
        "|---|" + "---|" * len(columns),
        "| mean ± std | "
        + " | ".join(paper_format(mean[n], std[n]) if n in mean else "–" for n in columns)
        + " |",
    ]
    for fold in done:
        values = folds[str(fold)]
        lines.append(
            f"| fold {fold} | " + " | ".join(f"{values[n]:.4f}" if n in values else "–" for n in columns) + " |"
        )
    lines += ["", "Per-class F1:", "", "| class | F1 |", "|---|---|"]
    lines += [f"| {name} | {paper_format(mean['f1'][name], std['f1'][name])} |" for name in class_names]
    seconds = [folds[str(k)].get("seconds") for k in done]
    if all(s is not None for s in seconds):
        per_fold = ", ".join(f"fold {k} {s / 60:.1f} min" for k, s in zip(done, seconds, strict=True))
        lines += ["", f"Training and evaluation time: {per_fold}; {sum(seconds) / 60:.1f} min in all."]
    return lines
