"""Split a fold-annotated Dataset into train / validation / test for one cross-validation fold."""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np

from .folds import inner_validation_split


@dataclass(frozen=True)
class FoldSplits:
    """The three parts of one fold: train = the other folds minus `val`; test = the held-out fold."""

    train: datasets.Dataset
    val: datasets.Dataset
    test: datasets.Dataset
    class_names: tuple[str, ...]

    def class_counts(self, part: str = "train") -> list[int]:
        labels = np.asarray(getattr(self, part)["label"], dtype=np.int64)
        return np.bincount(labels, minlength=len(self.class_names)).tolist()


def split_by_fold(
    dataset: datasets.Dataset, test_fold: int, val_fraction: float = 0.1, seed: int = 42
) -> FoldSplits:
    """Hold out fold `test_fold`; carve a stratified (grouped, where there is a group column) validation split
    of `val_fraction` from the remaining folds. The test fold takes no part in training or model selection."""
    for column in ("image", "label", "fold"):
        if column not in dataset.column_names:
            raise ValueError(f"dataset has no {column!r} column (columns: {dataset.column_names})")
    folds = np.asarray(dataset["fold"])
    num_folds = int(folds.max()) + 1
    if not 0 <= test_fold < num_folds:
        raise ValueError(f"test_fold must be in 0..{num_folds - 1}, got {test_fold}")
    rest = np.flatnonzero(folds != test_fold)
    labels = np.asarray(dataset["label"])[rest]
    groups = np.asarray(dataset["group"])[rest] if "group" in dataset.column_names else None
    train, val = inner_validation_split(labels, val_fraction, seed=seed, groups=groups)
    return FoldSplits(
        train=dataset.select(rest[train]),
        val=dataset.select(rest[val]),
        test=dataset.select(np.flatnonzero(folds == test_fold)),
        class_names=tuple(dataset.features["label"].names),
    )
