"""Render the model card (README.md of an output_dir / Hub repo) from the template shipped in the package.

The template is `model_card_template.md` beside this file, package data of the wheel, so a non-editable install
finds it; the repository's top-level `model_card.md` is a readable copy that a test keeps identical.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"


def library_provenance() -> tuple[str, str | None]:
    """(aduni_hf's version, its project URL from the installed package's metadata, if it declares one)."""
    try:
        metadata = importlib.metadata.metadata("aduni_hf")
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__

        return __version__, None
    urls = [entry.split(",", 1)[-1].strip() for entry in metadata.get_all("Project-URL") or []]
    return metadata["Version"], urls[0] if urls else None


METHOD_DESCRIPTIONS = {
    "aduni": (
        "the AduC loss puts the classifier logits (shifted by the log class prior) and the other views of the "
        "batch in one softmax; alpha, the weight of same-class views, falls from alpha_max to alpha_min over "
        "training (feature learning first, classifier learning later). No memory queue: the batch only."
    ),
    "ce": "plain cross-entropy on one augmented view (the CE baseline of the paper's Table 1).",
    "aduni_fixed": (
        "the AduC loss with alpha held constant ('AdUni w/o AduC' in the paper's Table 1): the same unified loss "
        "and model, no adaptive schedule."
    ),
    "balanced_softmax": (
        "Balanced Softmax (Ren et al., NeurIPS 2020), end to end: cross-entropy on the logits shifted by the log "
        "class prior during training; raw logits at inference."
    ),
    "balms": (
        "BALMS (Ren et al., NeurIPS 2020): cross-entropy training, then a re-initialised classifier trained on the "
        "frozen encoder with Balanced Softmax on batches of a learned Meta Sampler (bilevel: one differentiated "
        "classifier step per batch, judged on class-balanced meta batches)."
    ),
    "ldam_drw": (
        "LDAM-DRW (Cao et al., NeurIPS 2019): label-distribution-aware margins on a cosine classifier (scale 30), "
        "with deferred re-weighting by the effective number of samples from 80 % of training."
    ),
    "paco": (
        "PaCo (Cui et al., ICCV 2021): supervised contrastive learning of the query view against its momentum-"
        "encoded key view and a labelled queue of past keys, with the classifier weights as class centres."
    ),
    "paco_aduc": "PaCo with the weight of the contrastive positives following AduC's alpha schedule (PaCo+AduC).",
    "decouple": (
        "Decouple, cRT (Kang et al., ICLR 2020): cross-entropy training, then a re-initialised classifier trained "
        "on the frozen encoder with class-aware sampling."
    ),
    "cicl": (
        "CICL (Marrakchi et al., MICCAI 2021): supervised contrastive pre-training on up-sampled batches, then a "
        "linear classifier on the frozen encoder with class-balanced batches."
    ),
}


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


def result_rows(results: Mapping[str, float], paper: Mapping[str, tuple[float, float]] | None) -> list[dict]:
    """The card's results table: the final model, the other reported models, the paper's 5-fold mean."""
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
        table.append(
            {
                "label": "paper, 5-fold mean (Cong et al. 2022)",
                "accuracy": f"{paper['accuracy'][0]:.3f} ± {paper['accuracy'][1]:.2e}",
                "macro_f1": f"{paper['macro_f1'][0]:.3f} ± {paper['macro_f1'][1]:.2e}",
                "balanced_accuracy": "–",
            }
        )
    return table


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
    """A `huggingface_hub.ModelCard` whose YAML carries the test-fold results as a model-index."""
    split = f"fold {test_fold} of {num_folds} (held out)"
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=round(float(results[key]), 4),
            **({"metric_args": {"average": "macro"}} if metric_type == "f1" else {}),
        )
        for key, metric_type, metric_name in (
            ("test_accuracy", "accuracy", "Accuracy"),
            ("test_macro_f1", "f1", "Macro-F1"),
            ("test_balanced_accuracy", "balanced_accuracy", "Balanced accuracy"),
        )
    ]
    card_data = ModelCardData(
        model_name=model_name,
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["aduni", "imbalanced-classification", "contrastive-learning", "medical-imaging", "timm"],
        metrics=["accuracy", "f1"],
        eval_results=eval_results,
    )
    counts = [int(c) for c in train_class_counts]
    nonzero = [c for c in counts if c > 0]
    template = Path(template_path) if template_path is not None else DEFAULT_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"model card template not found: {template}")
    library_version, library_url = library_provenance()
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        library_version=library_version,
        library_url=library_url,
        model_name=model_name,
        model_id=model_id,
        dataset_name=dataset_name,
        num_classes=len(class_names),
        imbalance_ratio=f"{max(nonzero) / min(nonzero):.1f}" if nonzero else "n/a",
        test_fold=test_fold,
        num_folds=num_folds,
        backbone=backbone,
        projection_dim=projection_dim,
        image_size=image_size,
        method=method,
        method_description=METHOD_DESCRIPTIONS.get(method, ""),
        results=dict(results),
        per_class=[
            {"name": name, "count": count, "f1": float(results.get(f"test_f1_{name}", float("nan")))}
            for name, count in zip(class_names, counts, strict=True)
        ],
        recipe=list(recipe.items()),
        selection_note=selection_note,
        result_rows=result_rows(results, paper),
        paper_note=(
            "The paper's row is its 5-fold mean ± std on this data set with the same method (Tables 1-2); ours is "
            "one fold, so compare within the paper's spread only loosely."
            if paper
            else ""
        ),
        official_note=(
            "The row marked 'chosen on the test fold' follows the released code's model selection, which reads the "
            "test fold every epoch: it is reported only for comparison with the paper and overstates performance."
            if "test_official_selection_accuracy" in results
            else ""
        ),
        figures=list(figures),
        dataset_bias=DATASET_BIASES.get(dataset_key, UNKNOWN_BIAS),
    )
