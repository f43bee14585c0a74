"""tau-normalisation (Kang et al., ICLR 2020, Sec. 4; classifier-balancing's tau_norm.py): an evaluation of a
trained model without training, w_c <- w_c / ||w_c||^tau with the bias dropped, tau in 0, 0.1, ..., 2.0 chosen on
the validation split (best macro-F1, ties to the smaller tau), then tested once at that tau."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .features import pooled_features
from .metrics import classification_metrics, softmax

logger = logging.getLogger(__name__)

TAUS = tuple(i / 10 for i in range(21))  # 0, 0.1, ..., 2.0, as classifier-balancing's tau_norm.py


def tau_norm_logits(features: Tensor, weight: Tensor, tau: float) -> Tensor:
    """Logits of the tau-normalised classifier, bias dropped: features (n, d) . (w_c / ||w_c||^tau) -> (n, C)."""
    return features @ (weight / weight.norm(dim=1, keepdim=True).pow(tau)).T


def select_tau(
    features: Tensor, labels: Tensor, weight: Tensor, class_names: Sequence[str], taus: Sequence[float] = TAUS
) -> tuple[float, dict[float, float]]:
    """The tau of the best macro-F1 on (validation) `features` and `labels`, ties to the smaller tau, and every
    tau's macro-F1. Only the split given is read: give it the validation split, never the test fold."""
    scores = {}
    for tau in taus:
        predictions = tau_norm_logits(features, weight, tau).argmax(dim=1)
        scores[tau] = classification_metrics(predictions.numpy(), labels.numpy(), class_names)["macro_f1"]
    best = max(scores.values())
    return min(tau for tau, score in scores.items() if score == best), scores


def tau_norm_metrics(
    features: Tensor, labels: Tensor, weight: Tensor, tau: float, class_names: Sequence[str]
) -> dict[str, float]:
    """Every metric of the tau-normalised classifier: its argmax and, for ROC-AUC, the softmax of its logits."""
    logits = tau_norm_logits(features, weight, tau).numpy()
    return classification_metrics(logits.argmax(axis=1), labels.numpy(), class_names, probabilities=softmax(logits))


def tau_norm_evaluation(
    model: nn.Module,
    val_dataset,
    test_dataset,
    class_names: Sequence[str],
    batch_size: int,
    device: torch.device,
) -> tuple[dict[str, float], dict[str, float]]:
    """tau-normalisation of the stage-1 `model`: tau chosen on `val_dataset`, then `test_dataset` evaluated once.

    Returns (validation metrics `eval_tau_norm_*`, test metrics `test_tau_norm_*` and `tau_norm_tau`); both
    empty, with a warning, without a validation split or with a classifier other than linear.
    """
    if val_dataset is None:
        logger.warning("tau-normalisation skipped: no validation split to choose tau on (val_fraction is 0)")
        return {}, {}
    if not isinstance(model.classifier.dense, nn.Linear):
        logger.warning(
            "tau-normalisation skipped: it rescales a linear classifier's rows, this one is cosine"
        )
        return {}, {}
    weight = model.classifier.dense.weight.detach().float().cpu()
    val_features, val_labels = pooled_features(model, val_dataset, batch_size, device)
    tau, scores = select_tau(val_features, val_labels, weight, class_names)
    logger.info(
        "tau-normalisation: tau %g chosen on the validation split (macro-F1 by tau: %s)",
        tau,
        ", ".join(f"{t:g}: {s:.4f}" for t, s in scores.items()),
    )
    val_metrics = tau_norm_metrics(val_features, val_labels, weight, tau, class_names)
    test_features, test_labels = pooled_features(model, test_dataset, batch_size, device)
    test_metrics = tau_norm_metrics(test_features, test_labels, weight, tau, class_names)
    return (
        {f"eval_tau_norm_{key}": value for key, value in val_metrics.items()},
        {**{f"test_tau_norm_{key}": value for key, value in test_metrics.items()}, "tau_norm_tau": tau},
    )


__all__ = ["TAUS", "select_tau", "tau_norm_evaluation", "tau_norm_logits"]
