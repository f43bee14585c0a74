"""Classification metrics of the paper (accuracy, macro-F1), each data set's own (balanced accuracy, quadratic
weighted kappa, ROC-AUC) and per-class F1.

Computed with scikit-learn from the predicted and true class indices and, for ROC-AUC, the softmax probabilities
of the same logits (docs/method.md, "Evaluation and folds"):

- A class that is present in the references but never predicted scores F1 0, as in the released code, whose
  precision is TP / (predicted + 1e-20).
- A class absent from the references: the released code divides 0 by 0 for its recall, so its F1 and the
  macro-F1 become NaN. Here its F1 is 0 (`zero_division=0`) and it still counts in the macro average, so the
  number stays defined and comparable across folds, and an absent class lowers it rather than hiding. Our
  stratified folds give every class at least one image in every fold, so this only arises for data split
  elsewhere.
- Quadratic weighted kappa reads the class indices as ordered grades (APTOS2019, RetinaMNIST): a prediction
  two grades off costs four times one grade off. It is undefined (NaN) when the expected disagreement is 0,
  e.g. every reference and every prediction of one class.
- ROC-AUC is the macro average of the one-vs-rest AUCs. A class absent from the references has no positive,
  so its AUC is undefined: the average is then over the classes present (as balanced accuracy), which sklearn's
  multi-class call refuses, so it is computed class by class (as for two classes, which that call does not
  take: both one-vs-rest AUCs are then the binary AUC); with fewer than two classes present, or
  probabilities that are not finite (a diverged model), it is NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, recall_score, roc_auc_score
from transformers import EvalPrediction


def quadratic_kappa(predictions: np.ndarray, references: np.ndarray, num_classes: int) -> float:
    """Cohen's kappa with quadratic weights over the grades 0..num_classes-1; NaN where undefined."""
    with warnings.catch_warnings():  # undefined: sklearn warns and returns NaN, which is the value reported
        warnings.simplefilter("ignore")
        value = cohen_kappa_score(
            references, predictions, labels=np.arange(num_classes), weights="quadratic"
        )
    return float(value)


def macro_roc_auc(probabilities: np.ndarray, references: np.ndarray, num_classes: int) -> float:
    """Macro one-vs-rest ROC-AUC over the classes present in `references` (module docstring)."""
    present = np.unique(references)
    if len(present) < 2 or not np.isfinite(probabilities).all():
        return float("nan")
    if len(present) == num_classes > 2:  # sklearn's multi-class call; two classes take the binary path below
        return float(
            roc_auc_score(
                references, probabilities, multi_class="ovr", average="macro", labels=np.arange(num_classes)
            )
        )
    return float(np.mean([roc_auc_score(references == c, probabilities[:, c]) for c in present]))


def classification_metrics(
    predictions: Sequence[int],
    references: Sequence[int],
    class_names: Sequence[str],
    probabilities: np.ndarray | None = None,
) -> dict[str, float]:
    """`accuracy`, `macro_f1`, `balanced_accuracy`, `quadratic_kappa`, with `probabilities` (n, classes) also
    `roc_auc`, and `f1_<class name>` for every class.

    Macro-F1 averages over all `class_names`; a class missing from the references counts as F1 0 (module
    docstring: the released code gives NaN there). Balanced accuracy is the mean recall over the classes present in
    `references`. Kappa and ROC-AUC follow the module docstring's rules.
    """
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape or predictions.ndim != 1:
        raise ValueError(
            f"predictions {predictions.shape} and references {references.shape} must be equal 1-D shapes"
        )
    if probabilities is not None and np.shape(probabilities) != (len(references), len(class_names)):
        raise ValueError(
            f"probabilities {np.shape(probabilities)} must be (number of references, number of classes) = "
            f"({len(references)}, {len(class_names)})"
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
        "quadratic_kappa": quadratic_kappa(predictions, references, len(class_names)),
    }
    if probabilities is not None:
        metrics["roc_auc"] = macro_roc_auc(np.asarray(probabilities), references, len(class_names))
    metrics.update({f"f1_{name}": float(f1) for name, f1 in zip(class_names, per_class_f1, strict=True)})
    return metrics


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of `logits` (n, classes), in float64 so that each row sums to 1 to rounding."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def build_compute_metrics(class_names: Sequence[str]) -> Callable[[EvalPrediction], dict[str, float]]:
    """A Trainer `compute_metrics`: the predictions are the argmax of the logits, the probabilities (ROC-AUC)
    their softmax; the raw logits, as at inference (no class prior)."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return classification_metrics(
            np.argmax(logits, axis=-1), prediction.label_ids, class_names, probabilities=softmax(logits)
        )

    return compute_metrics
