"""`DATASETS`: the data set builders by name, and `build_dataset`, the public entry to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets

from ...registry import Registry

DATASETS: Registry[Callable[..., datasets.Dataset]] = Registry("dataset")
# What a source can check of its raw download without reading it (its file is where data_dir says), under the
# source's name: a run calls `check_source` before it writes anything, so a recipe whose data is missing fails
# at once. A source without a check is checked when it is built.
SOURCE_CHECKS: Registry[Callable[..., None]] = Registry("source check")

# The metrics each built-in source's community ranks by, its headline first (docs/method.md, "Evaluation and
# folds"). The source writes them into its data set's metadata (`assemble_dataset(metrics=...)`); a data set
# prepared before the metadata carried them gets these by its source's name; any other source reports macro-F1.
SOURCE_METRICS: dict[str, tuple[str, ...]] = {
    "isic2018": ("balanced_accuracy",),  # ISIC 2018 Task 3 ranked by balanced multi-class accuracy
    "aptos2019": ("quadratic_kappa",),  # the APTOS 2019 Kaggle competition ranked by quadratic weighted kappa
    "dermamnist": ("roc_auc",),  # MedMNIST reports ROC-AUC (and accuracy)
    "retinamnist": ("roc_auc", "quadratic_kappa"),  # MedMNIST's ROC-AUC; ordinal grades, so kappa too
}


def build_dataset(
    name: str, data_dir: str | None = None, num_folds: int = 5, seed: int = 42, **options: Any
) -> datasets.Dataset:
    """Build data set `name` as a `datasets.Dataset` with columns image, label (ClassLabel), fold, image_id.

    `data_dir` is the raw download (ignored by the embedded `digits_lt`); `seed` drives the fold assignment
    (and any subsampling); builder-specific `options` are passed on. An unknown name lists the choices.
    """
    return DATASETS[name](data_dir=data_dir, num_folds=num_folds, seed=seed, **options)


def check_source(name: str, data_dir: str | None = None, **options: Any) -> None:
    """Raise a `DataValidationError` naming the field when the raw download of data set `name` is not where
    `data_dir` (and `options`) say, without reading it; a source that registers no check passes."""
    if name in SOURCE_CHECKS:
        SOURCE_CHECKS[name](data_dir=data_dir, **options)
