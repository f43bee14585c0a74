"""Cross-validation summaries carry each data set's own metrics: cv_results.json's mean and std of quadratic
weighted kappa and ROC-AUC over the folds' test_results.json, the data set's headline metric, and the markdown
table with the headline in bold. A fold finished before those metrics existed leaves them out, saying so."""

from __future__ import annotations

import json
import logging
import statistics

import pytest

from aduni_hf.data import prepare_dataset
from aduni_hf.evaluation.cv_summary import REPORTED_MODELS, results_markdown
from aduni_hf.recipes.arguments import DataArguments
from aduni_hf.recipes.cross_validation import collect_results, data_source_metrics
from aduni_hf.recipes.run_folder import FINISHED_NAME
from tests.data.test_medmnist import write_npz

NAMES = ["0", "1", "2", "3", "4"]


def fold_results(accuracy: float, kappa: float | None, auc: float | None) -> dict[str, float]:
    """A fold's test_results.json (the keys a run writes); kappa and AUC None as written before they existed."""
    results = {"test_accuracy": accuracy, "test_macro_f1": accuracy - 0.1, "test_balanced_accuracy": accuracy - 0.2}
    results.update({f"test_f1_{name}": 0.5 for name in NAMES})
    if kappa is not None:
        results["test_quadratic_kappa"] = kappa
    if auc is not None:
        results["test_roc_auc"] = auc
    return results


def write_folds(output_dir, folds: dict[int, dict]) -> None:
    for fold, results in folds.items():
        (output_dir / f"fold_{fold}").mkdir(parents=True)
        (output_dir / f"fold_{fold}" / FINISHED_NAME).write_text(json.dumps(results))


def description(**metrics) -> dict:
    return {"title": "aduni on retina", "method": "aduni", "sampler": "none", "dataset": "data/retina",
            "dataset_name": "retinamnist", "num_folds": 3, "class_names": NAMES,
            "selection": REPORTED_MODELS["last_epoch"][1], "selection_metric": "macro_f1", **metrics}  # fmt: skip


def test_kappa_and_auc_mean_and_std_over_the_folds(tmp_path):
    write_folds(tmp_path, {0: fold_results(0.8, 0.70, 0.90), 1: fold_results(0.7, 0.60, 0.85),
                           2: fold_results(0.6, 0.65, 0.80)})  # fmt: skip
    metrics = {"headline_metric": "roc_auc", "dataset_metrics": ["roc_auc", "quadratic_kappa"]}
    results = collect_results(tmp_path, [0, 1, 2], {}, description(**metrics))
    assert results["headline_metric"] == "roc_auc"
    assert results["mean"]["quadratic_kappa"] == pytest.approx(0.65)
    assert results["std"]["quadratic_kappa"] == pytest.approx(statistics.stdev([0.70, 0.60, 0.65]))
    assert results["mean"]["roc_auc"] == pytest.approx(0.85) and results["folds"]["1"]["roc_auc"] == 0.85
    markdown = results_markdown(results)
    assert (
        "| metric | Accuracy | Macro-F1 | Balanced accuracy | **ROC-AUC (macro, one-vs-rest)** | "
        "Quadratic weighted kappa |" in markdown
    )
    assert "| mean ± std | 0.700 ± 1.00e-01 | 0.600 ± 1.00e-01 | 0.500 ± 1.00e-01 | 0.850 ± 5.00e-02 | " in markdown
    assert "| fold 2 | 0.6000 | 0.5000 | 0.4000 | 0.8000 | 0.6500 |" in markdown
    assert "Headline metric (in bold): ROC-AUC (macro, one-vs-rest), the metric MedMNIST reports" in markdown


def test_a_fold_finished_before_the_new_metrics_leaves_them_out(tmp_path, caplog):
    write_folds(tmp_path, {0: fold_results(0.8, 0.70, 0.90), 1: fold_results(0.7, None, None)})
    with caplog.at_level(logging.WARNING):
        results = collect_results(tmp_path, [0, 1], {}, description())
    assert "quadratic_kappa" not in results["mean"] and results["mean"]["accuracy"] == pytest.approx(0.75)
    assert "quadratic_kappa is left out of the summary: the test results of fold(s) [1] predate it" in caplog.text
    # no headline_metric in this cv_results: the source's own (retinamnist: ROC-AUC), '–' where there is none
    markdown = results_markdown(results)
    assert "| fold 1 | 0.7000 | 0.6000 | 0.5000 | – | – |" in markdown
    assert "| mean ± std | 0.750 ± 7.07e-02 | 0.650 ± 7.07e-02 | 0.550 ± 7.07e-02 | – | – |" in markdown


def test_the_source_and_metrics_of_a_prepared_data_set_or_a_built_one(tmp_path):
    """The registered source of a prepared data set comes from its metadata (the recipe's `dataset` keeps its
    default, digits_lt), and so do its metrics."""
    prepared = tmp_path / "retina"
    prepare_dataset("retinamnist", str(write_npz(tmp_path / "retinamnist.npz", 5)), str(prepared), num_folds=2)
    source, metrics = data_source_metrics(DataArguments(dataset_path=str(prepared)))
    assert source == "retinamnist" and (metrics.headline, metrics.own) == ("roc_auc", ("roc_auc", "quadratic_kappa"))
    source, metrics = data_source_metrics(DataArguments(dataset="digits_lt"))
    assert source == "digits_lt" and metrics.headline == "macro_f1"
