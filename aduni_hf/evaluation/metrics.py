"""Classification metrics of the paper (accuracy, macro-F1) plus balanced accuracy and per-class F1.

Computed with scikit-learn. A class that is never predicted gets F1 = 0, the official code's convention
(methods.md 2.6: precision = TP / (predicted + 1e-20)).
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

    Macro-F1 averages over all `class_names`, so a class missing from both predictions and references counts
    as F1 0, as in the official evaluation. Balanced accuracy is the mean recall over the classes present in
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
