"""Each source's metadata names the metrics its community ranks by, its headline first (docs/method.md,
"Evaluation and folds"): written by `assemble_dataset`, read back by the cards and tables, and defaulted by the
source's name for a data set prepared before the metadata carried them."""

from __future__ import annotations

import pytest

from aduni_hf.data import build_dataset, dataset_metadata
from aduni_hf.data.sources.builders import SOURCE_METRICS
from aduni_hf.evaluation.metric_names import METRIC_NAMES, DatasetMetrics, dataset_metrics
from tests.data.test_medmnist import write_npz


def test_every_built_in_sources_metrics_are_known_metrics():
    for source, metrics in SOURCE_METRICS.items():
        assert metrics and set(metrics) <= set(METRIC_NAMES), source


def test_aptos_and_isic_write_their_headline_metric(aptos, isic):
    aptos_metadata = dataset_metadata(build_dataset("aptos2019", str(aptos().root), num_folds=3, seed=0))
    assert aptos_metadata["headline_metric"] == "quadratic_kappa"
    assert aptos_metadata["dataset_metrics"] == ["quadratic_kappa"]
    isic_metadata = dataset_metadata(build_dataset("isic2018", str(isic().root), num_folds=3, seed=0))
    assert isic_metadata["headline_metric"] == "balanced_accuracy"
    assert dataset_metrics(isic_metadata) == DatasetMetrics("balanced_accuracy", ("balanced_accuracy",))


def test_medmnist_reports_roc_auc_and_retinamnist_kappa_too(tmp_path):
    derma = dataset_metadata(build_dataset("dermamnist", str(write_npz(tmp_path / "dermamnist.npz", 7)), num_folds=2))
    retina = dataset_metadata(build_dataset("retinamnist", str(write_npz(tmp_path / "retinamnist.npz", 5)), num_folds=2))
    assert (derma["headline_metric"], derma["dataset_metrics"]) == ("roc_auc", ["roc_auc"])
    assert (retina["headline_metric"], retina["dataset_metrics"]) == ("roc_auc", ["roc_auc", "quadratic_kappa"])
    assert dataset_metrics(retina).columns() == ("accuracy", "macro_f1", "roc_auc", "quadratic_kappa")


def test_digits_and_other_sources_default_to_macro_f1(digits_lt):
    metadata = dataset_metadata(digits_lt)
    assert (metadata["headline_metric"], metadata["dataset_metrics"]) == ("macro_f1", ["macro_f1"])
    assert dataset_metrics({"source": "imagefolder"}) == DatasetMetrics("macro_f1", ("macro_f1",))


def test_a_data_set_prepared_before_gets_its_sources_metrics():
    """Metadata without headline_metric (prepared by an earlier version): the source's name decides."""
    assert dataset_metrics({"source": "aptos2019", "num_folds": 5}).headline == "quadratic_kappa"
    assert dataset_metrics({"source": "isic2018"}).headline == "balanced_accuracy"
    assert dataset_metrics({}).headline == "macro_f1"


def test_metadata_naming_an_unknown_metric_is_refused():
    with pytest.raises(ValueError, match=r"dataset_metrics: unknown metric\(s\) \['kappa'\]"):
        dataset_metrics({"headline_metric": "quadratic_kappa", "dataset_metrics": ["kappa"]})
    with pytest.raises(ValueError, match="expected a non-empty list"):
        dataset_metrics({"headline_metric": "accuracy", "dataset_metrics": "accuracy"})
