"""Classification metrics of the paper (accuracy, macro-F1) plus balanced accuracy and per-class F1.

Computed with scikit-learn from the predicted and true class indices (docs/method.md, "Evaluation and folds"):

- A class that is present in the references but never predicted scores F1 0, as in the released code, whose
  precision is TP / (predicted + 1e-20).
- A class absent from the references: the released code divides 0 by 0 for its recall, so its F1 and the
  macro-F1 become NaN. Here its F1 is 0 (`zero_division=0`) and it still counts in the macro average, so the
  number stays defined and comparable across folds, and an absent class lowers it rather than hiding. Our
  stratified folds give every class at least one image in every fold, so this only arises for data split
  elsewhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score
from transformers import EvalPrediction


def classification_metrics(
    predictions: Sequence[int], references: Sequence[int], class_names: Sequence[str]
) -> dict[str, float]:
    """`accuracy`, `macro_f1`, `balanced_accuracy` and `f1_<class name>` for every class.

    Macro-F1 averages over all `class_names`; a class missing from the references counts as F1 0 (module
    docstring: the released code gives NaN there). Balanced accuracy is the mean recall over the classes present in
    `references`.
    """
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape or predictions.ndim != 1:
        raise ValueError(
            f"predictions {predictions.shape} and references {references.shape} must be equal 1-D shapes"
        )
    labels = np.arange(len(class_names))
    per_class_f1 = f1_score(references, predictions, labels=labels, average=None, zero_division=0)
    present = np.unique(references)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recall = recall_score(references, predictions, labels=present, average=None, zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(references, predictions)),
        "macro_f1": float(per_class_f1.mean()),
        "balanced_accuracy": float(np.mean(recall)) if len(present) else 0.0,
    }
    metrics.update({f"f1_{name}": float(f1) for name, f1 in zip(class_names, per_class_f1, strict=True)})
    return metrics


def build_compute_metrics(class_names: Sequence[str]) -> Callable[[EvalPrediction], dict[str, float]]:
    """A Trainer `compute_metrics` over the argmax of the logits."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return classification_metrics(np.argmax(logits, axis=-1), prediction.label_ids, class_names)

    return compute_metrics
