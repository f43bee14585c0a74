"""Render the model cards (README.md of an output_dir / Hub repo) from the template shipped in the package.

One template, `model_card_template.md` beside this file, renders both cards: a single run's (`render_model_card`)
and a cross-validation folder's (`render_cv_model_card`); it branches on `cross_validation` where they differ.
It is package data of the wheel, so a non-editable install finds it; the repository's top-level `model_card.md`
is a readable copy that a test keeps identical.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..evaluation.cv_summary import FOLD_PREFIX, REPORTED_MODELS, paper_format
from ..evaluation.metric_names import (
    CARD_METRICS,
    DatasetMetrics,
    dataset_metrics,
    headline_sentence,
    metric_label,
)
from ..version import __version__

DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"


def library_provenance() -> tuple[str, str | None]:
    """(aduni_hf's version, its project URL from the installed package's metadata, if it declares one)."""
    try:
        metadata = importlib.metadata.metadata("aduni_hf")
    except importlib.metadata.PackageNotFoundError:
        return __version__, None
    urls = [entry.split(",", 1)[-1].strip() for entry in metadata.get_all("Project-URL") or []]
    return metadata["Version"], urls[0] if urls else None


# What a reader must know about each data set's population and labels (Intended use and limitations).
DATASET_BIASES = {
    "isic2018": (
        "ISIC 2018 Task 3 (HAM10000) holds dermoscopic images from two sites (Vienna, Austria, and Queensland, "
        "Australia), overwhelmingly of light-skinned patients; about half the diagnoses are histopathological, "
        "the rest rest on follow-up, expert consensus or confocal microscopy; 67 % of the images are nevi."
    ),
    "aptos2019": (
        "APTOS 2019 holds fundus photographs from Aravind Eye Hospital clinics in rural India, taken with "
        "several cameras under varying conditions and graded 0-4 by clinicians; the grades are known to be noisy "
        "and half the images are grade 0."
    ),
    "digits_lt": (
        "the demo digits are scikit-learn's 8x8 handwritten digits made long-tailed: not medical images at all; "
        "the model only demonstrates the pipeline."
    ),
}
UNKNOWN_BIAS = (
    "the population, devices and labelling of this data set were not described to aduni_hf; check them before "
    "drawing any conclusion."
)
# The reported models besides the last epoch's: (metric prefix in the results, row label).
SELECTED_ROWS = (
    ("test_best_val", "best on the inner validation split (epoch {epoch:g})"),
    (
        "test_official_selection",
        "chosen ON THE TEST FOLD by the released code's rule (epoch {epoch:g}; optimistic)",
    ),
)


# The usage snippet's repository when the card knows none: a placeholder the card tells the reader to replace.
MODEL_ID_PLACEHOLDER = "<your-hub-id-or-local-folder>"
_CARD_TAGS = ["aduni", "imbalanced-classification", "contrastive-learning", "medical-imaging"]
_PAPER_LABEL = "paper, 5-fold mean (Cong et al. 2022)"


# How the model-index names each metric: (metric type, name, metric args); the Hub reads the type as an id.
MODEL_INDEX_METRICS = {
    "accuracy": ("accuracy", "Accuracy", None),
    "macro_f1": ("f1", "Macro-F1", {"average": "macro"}),
    "balanced_accuracy": ("balanced_accuracy", "Balanced accuracy", None),
    "quadratic_kappa": ("cohen_kappa", "Quadratic weighted kappa", {"weights": "quadratic"}),
    "roc_auc": ("roc_auc", "ROC-AUC (macro, one-vs-rest)", {"average": "macro", "multi_class": "ovr"}),
}
# ISIC 2018 Task 3 calls its ranking metric (the mean recall over the classes) balanced multi-class accuracy.
ISIC_BALANCED_ACCURACY = "Balanced multi-class accuracy (ISIC 2018 Task 3 ranking metric)"


def _card_columns(metrics: DatasetMetrics) -> tuple[str, ...]:
    """The results table's metric columns: accuracy, macro-F1, balanced accuracy, then the data set's own."""
    return metrics.columns(CARD_METRICS)


def _column_headers(metrics: DatasetMetrics) -> list[str]:
    """The column headers, the headline metric in bold."""
    columns = _card_columns(metrics)
    return [f"**{metric_label(n)}**" if n == metrics.headline else metric_label(n) for n in columns]


def _paper_row(paper: Mapping[str, Sequence[float]], columns: Sequence[str]) -> dict[str, Any]:
    """The paper's 5-fold mean ± std (accuracy and macro-F1 only; '–' in the other columns)."""
    return {
        "label": _PAPER_LABEL,
        "values": [paper_format(*paper[name]) if name in paper else "–" for name in columns],
    }


def result_rows(
    results: Mapping[str, float],
    paper: Mapping[str, tuple[float, float]] | None,
    columns: Sequence[str] = CARD_METRICS,
) -> list[dict]:
    """The run card's results table: the final model, the other reported models, the paper's 5-fold mean; one
    value per metric of `columns` ('–' where the results lack it)."""
    rows = [("final model (last epoch)", "test", None)]
    rows += [(label, prefix, results.get(f"{prefix}_epoch")) for prefix, label in SELECTED_ROWS]
    table = []
    for label, prefix, epoch in rows:
        if f"{prefix}_accuracy" not in results:
            continue
        table.append(
            {
                "label": label.format(epoch=epoch) if epoch is not None else label,
                "values": [
                    f"{float(results[f'{prefix}_{name}']):.4f}" if f"{prefix}_{name}" in results else "–"
                    for name in columns
                ],
            }
        )
    if paper:
        table.append(_paper_row(paper, columns))
    return table


def cv_result_rows(
    results: Mapping[str, Any],
    paper: Mapping[str, Sequence[float]] | None,
    columns: Sequence[str] = CARD_METRICS,
) -> list[dict]:
    """The cross-validation card's results table: every reported model (`REPORTED_MODELS`) present in
    `results` as mean ± std over the folds, then the paper's row. The model chosen on the test fold says so."""
    table = []
    for key in REPORTED_MODELS:
        part = results if key == "last_epoch" else results.get(key)
        if part is None:
            continue
        label = str(part["selection"])
        if key == "official_test_selection" and "test fold" not in label.lower():
            label = f"SELECTED ON THE TEST FOLD: {label}"
        mean, std = part["mean"], part["std"]
        table.append(
            {
                "label": label,
                "values": [
                    paper_format(float(mean[name]), float(std[name])) if name in mean else "–"
                    for name in columns
                ],
            }
        )
    if paper:
        table.append(_paper_row(paper, columns))
    return table


def model_index(
    values: Mapping[str, float], metrics: DatasetMetrics, dataset: tuple[str, str, str], suffix: str = ""
) -> list[EvalResult]:
    """The model-index entries: the headline metric first, then the other columns of the card, each that
    `values` holds as a finite number (an undefined kappa or AUC is NaN: shown in the table, not indexed).
    `dataset` is (type, name, split); `suffix` ends every metric name (e.g. " (CV mean)")."""
    dataset_type, dataset_name, split = dataset
    ordered = [metrics.headline, *(n for n in _card_columns(metrics) if n != metrics.headline)]
    entries = []
    for name in ordered:
        value = values.get(name)
        if value is None or not math.isfinite(float(value)):
            continue
        metric_type, metric_name, metric_args = MODEL_INDEX_METRICS[name]
        if name == "balanced_accuracy" and dataset_type == "isic2018":
            metric_name = ISIC_BALANCED_ACCURACY
        entries.append(
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split=split,
                metric_type=metric_type,
                metric_name=metric_name + suffix,
                metric_value=round(float(value), 4),
                **({"metric_args": metric_args} if metric_args else {}),
            )
        )
    return entries


def _card_metric_ids(metrics: DatasetMetrics) -> list[str]:
    """The card's `metrics` (Hub metric ids) of its model-index, each once."""
    return list(dict.fromkeys(MODEL_INDEX_METRICS[name][0] for name in _card_columns(metrics)))


def recipe_rows(recipe: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The recipe table's rows (`aduni_hf.recipes.recipe_table.recipe_summary`), a setting without a value left out."""
    return [(key, value) for key, value in recipe.items() if value is not None]


def usage(model_id: str | None, subfolder: str = "") -> dict[str, Any]:
    """The template's variables of the usage snippet ("Use"): the repository it loads from, `model_id` when it is
    a full Hub id (owner/name), else `MODEL_ID_PLACEHOLDER` (flagged, so that the card says to replace it; a bare
    name is pushed under an owner the card cannot know, and a local folder's name means nothing on the Hub); and the
    folder of the repository that holds the model (`fold_<k>` of a cross-validation; "" for its top)."""
    full_id = bool(model_id) and len(str(model_id).split("/")) == 2 and all(str(model_id).split("/"))
    return {
        "model_id": model_id if full_id else MODEL_ID_PLACEHOLDER,
        "model_id_placeholder": not full_id,
        "subfolder": subfolder,
    }


def _render(card_data: ModelCardData, template_path: str | Path | None = None, **variables: Any) -> ModelCard:
    """The one renderer of both cards: `card_data` as the YAML header, `variables` filling the template."""
    template = Path(template_path) if template_path is not None else DEFAULT_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"model card template not found: {template}")
    library_version, library_url = library_provenance()
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        library_version=library_version,
        library_url=library_url,
        **variables,
    )


def render_model_card(
    *,
    model_name: str,
    model_id: str | None,
    dataset_name: str,
    class_names: Sequence[str],
    train_class_counts: Sequence[int],
    results: Mapping[str, float],
    recipe: Mapping[str, Any],
    method: str,
    method_description: str,
    test_fold: int,
    num_folds: int,
    backbone: str,
    projection_dim: int,
    image_size: int,
    selection_note: str = "",
    template_path: str | Path | None = None,
    dataset_key: str = "",
    paper: Mapping[str, tuple[float, float]] | None = None,
    figures: Sequence[tuple[str, str]] = (),
    metrics: DatasetMetrics | None = None,
    subfolder: str = "",
) -> ModelCard:
    """A single run's `huggingface_hub.ModelCard`, its YAML carrying the test-fold results as a model-index.

    `model_id` is the Hub repository of the run (a placeholder in the usage snippet unless it is a full id, see
    `usage`), `subfolder` its folder there (a cross-validation's `fold_<k>`); `recipe` maps each setting to its
    value in force (the recipe table). `metrics` are the data set's own (its metadata's `headline_metric` and
    `dataset_metrics`); by default those of the source `dataset_key` (aduni_hf/evaluation/metric_names.py)."""
    if metrics is None:
        metrics = dataset_metrics({"source": dataset_key or dataset_name})
    split = f"fold {test_fold} of {num_folds} (held out)"
    test_values = {name: results[f"test_{name}"] for name in _card_columns(metrics) if f"test_{name}" in results}
    card_data = ModelCardData(
        model_name=model_name,
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=[*_CARD_TAGS, "timm"],
        metrics=_card_metric_ids(metrics),
        eval_results=model_index(test_values, metrics, (dataset_name, dataset_name, split)),
    )
    counts = [int(c) for c in train_class_counts]
    nonzero = [c for c in counts if c > 0]
    return _render(
        card_data,
        template_path,
        cross_validation=False,
        model_name=model_name,
        **usage(model_id, subfolder),
        dataset_name=dataset_name,
        num_classes=len(class_names),
        imbalance_ratio=f"{max(nonzero) / min(nonzero):.1f}" if nonzero else "n/a",
        test_fold=test_fold,
        num_folds=num_folds,
        backbone=backbone,
        projection_dim=projection_dim,
        image_size=image_size,
        method=method,
        method_description=method_description,
        per_class=[
            {"name": name, "count": count, "f1": f"{float(results.get(f'test_f1_{name}', float('nan'))):.4f}"}
            for name, count in zip(class_names, counts, strict=True)
        ],
        recipe=recipe_rows(recipe),
        selection_note=selection_note,
        metric_headers=_column_headers(metrics),
        result_rows=result_rows(results, paper, _card_columns(metrics)),
        headline_sentence=headline_sentence(metrics, dataset_key or dataset_name),
        paper=bool(paper),
        official="test_official_selection_accuracy" in results,
        figures=list(figures),
        dataset_bias=DATASET_BIASES.get(dataset_key, UNKNOWN_BIAS),
    )


def render_cv_model_card(
    results: Mapping[str, Any],
    *,
    method_description: str,
    recipe: Mapping[str, Any],
    figures: Sequence[tuple[str, str]] = (),
    model_id: str = "",
) -> ModelCard:
    """The summary card of a cross-validation folder from its `cv_results.json` content (`results`), its YAML
    carrying the mean over the test folds of the data set's headline metric, accuracy, macro-F1 and its other
    metrics as a model-index (`headline_metric`, `dataset_metrics`; else those of its source).

    `results["paper"]` is the paper's row for this method and data set (None when it has none); `recipe` maps each
    setting to its value in force (the recipe table, the same as each fold's); `figures` are (caption, path
    relative to the folder); `model_id` is the Hub repository of the folder (a placeholder in the usage snippet
    unless it is a full id, see `usage`), whose first fold's folder the snippet loads.
    """
    dataset_key = str(results.get("dataset_name") or results.get("dataset", ""))
    mean, std = results["mean"], results["std"]
    class_names = list(results["class_names"])
    fold_ids = sorted(results["folds"], key=int)
    split = f"{len(fold_ids)}-fold cross-validation (folds {', '.join(fold_ids)}), mean of the test folds"
    metrics = dataset_metrics(results, where="cv_results.json")
    card_data = ModelCardData(
        model_name=model_id or f"aduni_hf {results['method']} cross-validation",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=[*_CARD_TAGS, "cross-validation"],
        metrics=_card_metric_ids(metrics),
        eval_results=model_index(
            mean, metrics, (dataset_key, str(results.get("dataset")), split), suffix=" (CV mean)"
        ),
    )
    nan = float("nan")
    paper = results.get("paper")
    return _render(
        card_data,
        cross_validation=True,
        title=results["title"],
        **usage(model_id, f"{FOLD_PREFIX}{fold_ids[0]}" if fold_ids else f"{FOLD_PREFIX}0"),
        fold_ids=fold_ids,
        dataset_name=dataset_key or "an unnamed data set",
        num_classes=len(class_names),
        num_folds=int(results.get("num_folds") or len(fold_ids)),
        method=results["method"],
        sampler=results.get("sampler") or "none",
        method_description=method_description,
        per_class=[
            {"name": name, "f1": paper_format(mean["f1"].get(name, nan), std["f1"].get(name, nan))}
            for name in class_names
        ],
        recipe=recipe_rows(recipe),
        metric_headers=_column_headers(metrics),
        result_rows=cv_result_rows(results, paper, _card_columns(metrics)),
        headline_sentence=headline_sentence(metrics, dataset_key),
        paper=bool(paper),
        official="official_test_selection" in results,
        figures=list(figures),
        dataset_bias=DATASET_BIASES.get(dataset_key, UNKNOWN_BIAS),
    )
