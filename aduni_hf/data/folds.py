"""Cross-validation folds: assigned once at build time, split into train / validation / test at train time.

`assign_folds` runs when a data set is built, from the labels (and lesion or patient groups where a data set
has them), and the result is stored as the `fold` column, so every machine, process and later run sees the
same split. `split_by_fold` then holds one fold out for testing and carves a stratified inner validation split
(`inner_validation_split`) from the others (docs/method.md, "Evaluation and folds").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold


def assign_folds(
    labels: Sequence[int], num_folds: int = 5, seed: int = 42, groups: Sequence[str] | None = None
) -> np.ndarray:
    """Fold index (0..num_folds-1) of every sample.

    Without groups: `StratifiedKFold(shuffle=True, random_state=seed)`, so the count of every class differs by at
    most one between folds. With groups (for example ISIC2018 lesion ids): `StratifiedGroupKFold`, so no group is
    in two folds and classes are stratified as well as the groups allow.
    """
    labels = np.asarray(labels)
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    counts = np.bincount(labels)
    if (counts[counts > 0] < num_folds).any() and groups is None:
        small = {int(c): int(n) for c, n in enumerate(counts) if 0 < n < num_folds}
        raise ValueError(f"classes {small} have fewer images than num_folds={num_folds}")
    folds = np.full(len(labels), -1, dtype=np.int64)
    if groups is None:
        splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels, groups=np.asarray(groups))
    for fold, (_, held_out) in enumerate(splits):
        folds[held_out] = fold
    return folds


def inner_validation_split(
    labels: Sequence[int],
    fraction: float,
    seed: int,
    groups: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions) of a stratified (and grouped) split of the training folds.

    The validation part is one fold of a `round(1 / fraction)`-fold stratified (group) split, so it is about
    `fraction` of the images and of every class. `fraction == 0` gives an empty validation split. A split that
    cannot be made (`check_validation_split`) is a ValueError saying why and which `val_fraction` would work;
    `class_names` name the classes in it.
    """
    labels = np.asarray(labels)
    positions = np.arange(len(labels))
    if fraction == 0:
        return positions, positions[:0]
    if not 0 < fraction < 0.5:
        raise ValueError(f"validation fraction must be in [0, 0.5), got {fraction}")
    num_splits = max(2, round(1 / fraction))
    check_validation_split(labels, fraction, num_splits, groups, class_names)
    with warnings.catch_warnings():
        # A class smaller than num_splits just gets no validation image; that is reported by the caller's counts.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        if groups is None:
            splitter = StratifiedKFold(n_splits=num_splits, shuffle=True, random_state=seed)
            train, val = next(splitter.split(positions, labels))
        else:
            splitter = StratifiedGroupKFold(n_splits=num_splits, shuffle=True, random_state=seed)
            train, val = next(splitter.split(positions, labels, groups=np.asarray(groups)))
    return np.sort(train), np.sort(val)


def check_validation_split(
    labels: np.ndarray,
    fraction: float,
    num_splits: int,
    groups: Sequence[str] | None,
    class_names: Sequence[str] | None,
) -> None:
    """Raise ValueError when a `num_splits`-way stratified (group) split of the training folds cannot be made,
    as scikit-learn would after the data is read: no class has `num_splits` images, or there are fewer groups.
    A class smaller than `num_splits` in a set where another is large enough just gets no validation image; that
    is reported by the caller's counts."""
    counts = np.bincount(labels)
    names = list(class_names) if class_names is not None else [str(c) for c in range(len(counts))]
    if counts.max(initial=0) < num_splits:
        listed = ", ".join(f"{names[c]!r} {int(n)}" for c, n in enumerate(counts) if n)
        raise ValueError(
            f"val_fraction={fraction} holds out one part of a {num_splits}-way stratified split of the training "
            f"folds, so at least one class needs {num_splits} images there, and none has (images per class: "
            f"{listed}). {_what_would_split(int(counts.max(initial=0)), 'images of its largest class')}"
        )
    num_groups = len(set(groups)) if groups is not None else num_splits
    if num_groups < num_splits:
        raise ValueError(
            f"val_fraction={fraction} holds out one part of a {num_splits}-way split of the training folds by group "
            f"(no group in both parts), but they hold {num_groups} groups. {_what_would_split(num_groups, 'groups')}"
        )


def _what_would_split(available: int, what: str) -> str:
    """What to do when a validation split needs more than `available` images or groups."""
    if available < 2:
        return "Use val_fraction 0 (no validation split), or a data set with more images per class."
    workable = min(math.ceil(100 / available) / 100, 0.45)  # round(1 / workable) <= available
    return (
        f"Use val_fraction {workable} or more (a {round(1 / workable)}-way split, within the {available} {what}), "
        "val_fraction 0 (no validation split), or a data set with more images per class."
    )


@dataclass(frozen=True)
class FoldSplits:
    """The three parts of one fold: train = the other folds minus `val`; test = the held-out fold."""

    train: datasets.Dataset
    val: datasets.Dataset
    test: datasets.Dataset
    class_names: tuple[str, ...]

    def class_counts(self, part: str = "train") -> list[int]:
        """Images per class in `part` ("train", "val" or "test")."""
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
    class_names = tuple(dataset.features["label"].names)
    train, val = inner_validation_split(labels, val_fraction, seed=seed, groups=groups, class_names=class_names)
    return FoldSplits(
        train=dataset.select(rest[train]),
        val=dataset.select(rest[val]),
        test=dataset.select(np.flatnonzero(folds == test_fold)),
        class_names=class_names,
    )
