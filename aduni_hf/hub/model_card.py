"""Render the model cards (README.md of an output_dir / Hub repo) from the template shipped in the package.

One template, `model_card_template.md` beside this file, renders both cards: a single run's (`render_model_card`)
and a cross-validation folder's (`render_cv_model_card`); it branches on `cross_validation` where they differ.
It is package data of the wheel, so a non-editable install finds it; the repository's top-level `model_card.md`
is a readable copy that a test keeps identical.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..evaluation.cv_summary import FOLD_PREFIX, REPORTED_MODELS, paper_format
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


# The usage snippet of a cross-validation card without a Hub id: a placeholder the card tells the reader to replace.
MODEL_ID_PLACEHOLDER = "<your-hub-id>"
_CARD_TAGS = ["aduni", "imbalanced-classification", "contrastive-learning", "medical-imaging"]
_PAPER_LABEL = "paper, 5-fold mean (Cong et al. 2022)"


def _paper_row(paper: Mapping[str, Sequence[float]]) -> dict[str, str]:
    return {
        "label": _PAPER_LABEL,
        "accuracy": paper_format(*paper["accuracy"]),
        "macro_f1": paper_format(*paper["macro_f1"]),
        "balanced_accuracy": "–",
    }


def result_rows(results: Mapping[str, float], paper: Mapping[str, tuple[float, float]] | None) -> list[dict]:
    """The run card's results table: the final model, the other reported models, the paper's 5-fold mean."""
    rows = [("final model (last epoch)", "test", None)]
    rows += [(label, prefix, results.get(f"{prefix}_epoch")) for prefix, label in SELECTED_ROWS]
    table = []
    for label, prefix, epoch in rows:
        if f"{prefix}_accuracy" not in results:
            continue
        table.append(
            {
                "label": label.format(epoch=epoch) if epoch is not None else label,
                **{
                    name: f"{float(results[f'{prefix}_{name}']):.4f}"
                    for name in ("accuracy", "macro_f1", "balanced_accuracy")
                },
            }
        )
    if paper:
        table.append(_paper_row(paper))
    return table


def cv_result_rows(results: Mapping[str, Any], paper: Mapping[str, Sequence[float]] | None) -> list[dict]:
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
                **{
                    name: paper_format(float(mean[name]), float(std[name]))
                    for name in ("accuracy", "macro_f1", "balanced_accuracy")
                },
            }
        )
    if paper:
        table.append(_paper_row(paper))
    return table


def _eval_result(
    dataset_type: str, dataset_name: str, split: str, metric_type: str, metric_name: str, value: float
) -> EvalResult:
    return EvalResult(
        task_type="image-classification",
        task_name="Image Classification",
        dataset_type=dataset_type,
        dataset_name=dataset_name,
        dataset_split=split,
        metric_type=metric_type,
        metric_name=metric_name,
        metric_value=round(float(value), 4),
        **({"metric_args": {"average": "macro"}} if metric_type == "f1" else {}),
    )


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
    model_id: str,
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
) -> ModelCard:
    """A single run's `huggingface_hub.ModelCard`, its YAML carrying the test-fold results as a model-index."""
    split = f"fold {test_fold} of {num_folds} (held out)"
    card_data = ModelCardData(
        model_name=model_name,
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=[*_CARD_TAGS, "timm"],
        metrics=["accuracy", "f1"],
        eval_results=[
            _eval_result(dataset_name, dataset_name, split, metric_type, metric_name, results[key])
            for key, metric_type, metric_name in (
                ("test_accuracy", "accuracy", "Accuracy"),
                ("test_macro_f1", "f1", "Macro-F1"),
                ("test_balanced_accuracy", "balanced_accuracy", "Balanced accuracy"),
            )
        ],
    )
    counts = [int(c) for c in train_class_counts]
    nonzero = [c for c in counts if c > 0]
    return _render(
        card_data,
        template_path,
        cross_validation=False,
        model_name=model_name,
        model_id=model_id,
        model_id_placeholder=False,
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
        recipe=list(recipe.items()),
        selection_note=selection_note,
        result_rows=result_rows(results, paper),
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
    carrying the mean over the test folds of accuracy and macro-F1 as a model-index.

    `results["paper"]` is the paper's row for this method and data set (None when it has none); `recipe` maps each
    setting to its value in force (the recipe table); `figures` are (caption, path relative to the folder);
    `model_id` is the Hub repository of the folder, `MODEL_ID_PLACEHOLDER` in the usage snippet when empty.
    """
    dataset_key = str(results.get("dataset_name") or results.get("dataset", ""))
    mean, std = results["mean"], results["std"]
    class_names = list(results["class_names"])
    fold_ids = sorted(results["folds"], key=int)
    split = f"{len(fold_ids)}-fold cross-validation (folds {', '.join(fold_ids)}), mean of the test folds"
    card_data = ModelCardData(
        model_name=model_id or f"aduni_hf {results['method']} cross-validation",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=[*_CARD_TAGS, "cross-validation"],
        metrics=["accuracy", "f1"],
        eval_results=[
            _eval_result(dataset_key, str(results.get("dataset")), split, metric_type, metric_name, mean[key])
            for key, metric_type, metric_name in (
                ("accuracy", "accuracy", "Accuracy (CV mean)"),
                ("macro_f1", "f1", "Macro-F1 (CV mean)"),
            )
        ],
    )
    nan = float("nan")
    paper = results.get("paper")
    return _render(
        card_data,
        cross_validation=True,
        title=results["title"],
        model_id=model_id or MODEL_ID_PLACEHOLDER,
        model_id_placeholder=not model_id,
        fold_ids=fold_ids,
        fold_folder=f"{FOLD_PREFIX}{fold_ids[0]}" if fold_ids else f"{FOLD_PREFIX}0",
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
        recipe=[(key, value) for key, value in recipe.items() if value is not None],
        result_rows=cv_result_rows(results, paper),
        paper=bool(paper),
        official="official_test_selection" in results,
        figures=list(figures),
        dataset_bias=DATASET_BIASES.get(dataset_key, UNKNOWN_BIAS),
    )
