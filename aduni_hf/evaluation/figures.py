"""The paper's figures as PNG files, from a run's logs, its test predictions and features, or several runs' results.

| figure | paper | input |
|---|---|---|
| `class_loss_figure` | Fig. 2, per-class loss magnitude over training | trainer_state.json: `class_loss_<class>` per epoch |
| `tsne_figure` | Fig. 4, t-SNE of features | encoder features (pooled, 512-d for ResNet18) and labels |
| `per_class_f1_figure` | Fig. 5, per-class F1 of several methods | cv_results.json of each run: mean and std over folds |
| `confusion_matrix_figure` | – | test labels and predictions |
| `schedule_figure` | – (Sec. 3.1: alpha 1 -> 0.01, the learning rate) | trainer_state.json: `alpha`, `learning_rate` |

Every figure has labelled axes, class names, a title, and is written atomically (a temporary file renamed).
matplotlib runs with the Agg backend: no display is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

DPI = 150


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        figure.savefig(staging, dpi=DPI, bbox_inches="tight")
        os.replace(staging, path)
    except BaseException:  # a full disk, an interrupt: no half-written staging file stays behind
        staging.unlink(missing_ok=True)
        raise
    finally:
        plt.close(figure)
    return path


def _epochs_and(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(entry["epoch"], entry[key]) for entry in history if key in entry and "epoch" in entry]
    return [p[0] for p in points], [p[1] for p in points]


def class_loss_figure(
    history: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    class_counts: Sequence[int],
    path: str | Path,
    title: str = "",
) -> Path:
    """Per-class mean training loss against the epoch, classes ordered by training count (largest first)."""
    figure, axis = plt.subplots(figsize=(7, 4.2))
    order = sorted(range(len(class_names)), key=lambda c: -class_counts[c])
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.95, len(order)))
    plotted = 0
    for colour, c in zip(colours, order, strict=True):
        epochs, values = _epochs_and(history, f"class_loss_{class_names[c]}")
        if epochs:
            axis.plot(epochs, values, color=colour, label=f"{class_names[c]} ({class_counts[c]})")
            plotted += 1
    if not plotted:
        raise ValueError("the log history has no class_loss_<class> entries (logged by AdUniTrainer)")
    axis.set_xlabel("epoch")
    axis.set_ylabel("mean training loss of the class")
    axis.set_title(title or "Per-class training loss (classes by training count)")
    axis.legend(title="class (training images)", fontsize=8, ncol=2 if len(order) > 6 else 1)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def schedule_figure(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """The learning rate and, where the method has one, alpha against the epoch."""
    epochs_lr, lrs = _epochs_and(history, "learning_rate")
    epochs_alpha, alphas = _epochs_and(history, "alpha")
    if not epochs_lr:
        raise ValueError("the log history has no learning_rate entries")
    figure, axis = plt.subplots(figsize=(7, 3.8))
    axis.plot(epochs_lr, lrs, color="tab:blue", label="learning rate")
    axis.set_xlabel("epoch")
    axis.set_ylabel("learning rate", color="tab:blue")
    if epochs_alpha:
        twin = axis.twinx()
        twin.plot(epochs_alpha, alphas, color="tab:orange", label="alpha")
        twin.set_ylabel("alpha (weight of the same-class views)", color="tab:orange")
        twin.set_ylim(bottom=0)
    axis.set_title(title or "Learning rate" + (" and alpha" if epochs_alpha else "") + " over training")
    axis.grid(alpha=0.3)
    return _save(figure, path)


def confusion_matrix_figure(
    labels: Sequence[int],
    predictions: Sequence[int],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Rows: true class, columns: predicted class; colour is the share of the row, text the count."""
    classes = len(class_names)
    counts = np.zeros((classes, classes), dtype=int)
    for truth, predicted in zip(labels, predictions, strict=True):
        counts[int(truth), int(predicted)] += 1
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * classes + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(classes):
        for j in range(classes):
            axis.text(j, i, str(counts[i, j]), ha="center", va="center",
                      color="white" if shares[i, j] > 0.6 else "black", fontsize=8)  # fmt: skip
    axis.set_xticks(range(classes), class_names, rotation=45, ha="right")
    axis.set_yticks(range(classes), class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title or "Confusion matrix (test fold)")
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    return _save(figure, path)


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-d t-SNE (scikit-learn) of `features` (n, d); the perplexity is capped below n."""
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float64)
    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def tsne_figure(
    features: np.ndarray, labels: Sequence[int], class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """t-SNE of the features, one colour per class."""
    embedding = tsne_embedding(features)
    labels = np.asarray(labels)
    figure, axis = plt.subplots(figsize=(6, 5.5))
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        chosen = labels == c
        if chosen.any():
            axis.scatter(
                embedding[chosen, 0], embedding[chosen, 1], s=10, color=colours(c % colours.N), label=name
            )
    axis.set_xlabel("t-SNE 1")
    axis.set_ylabel("t-SNE 2")
    axis.set_title(title or "t-SNE of the test-fold features")
    axis.legend(title="class", fontsize=8, markerscale=1.5, loc="best")
    return _save(figure, path)


def per_class_f1_figure(
    runs: Mapping[str, Mapping[str, Any]], class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Grouped bars: for every class, each run's mean F1 over folds with its standard deviation as an error bar.
    `runs` maps a label to its cv_results.json content (or one reported model of it)."""
    labels = list(runs)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(class_names))
    width_inches = min(16.0, max(7.0, 0.12 * len(class_names) * len(labels) + 3))
    figure, axis = plt.subplots(figsize=(width_inches, 4.8))
    colours = plt.get_cmap("tab20")
    for i, label in enumerate(labels):
        mean = [runs[label]["mean"]["f1"][name] for name in class_names]
        std = [runs[label]["std"]["f1"][name] for name in class_names]
        below = [min(s, m) for m, s in zip(mean, std, strict=True)]  # F1 is never below 0: clip the bar there
        axis.bar(x + (i - (len(labels) - 1) / 2) * width, mean, width, yerr=[below, std], capsize=2,
                 color=colours(i % colours.N), label=label)  # fmt: skip
    axis.set_xticks(x, class_names, rotation=30 if len(class_names) > 7 else 0)
    axis.set_xlabel("class")
    axis.set_ylabel("F1 on the test folds (mean ± std)")
    axis.set_ylim(0, 1.05)
    axis.set_title(title or "Per-class F1 by method")
    axis.legend(fontsize=8, ncol=min(7, len(labels)), loc="upper center", bbox_to_anchor=(0.5, -0.14))
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)
