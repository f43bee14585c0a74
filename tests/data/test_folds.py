"""Folds: stratified and grouped assignment, the inner validation split, and the split of one fold."""

import numpy as np
import pytest

from aduni_hf.data import assign_folds, dataset_metadata, inner_validation_split, split_by_fold


def test_folds_are_stratified_within_one(digits_lt):
    labels, folds = np.asarray(digits_lt["label"]), np.asarray(digits_lt["fold"])
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    per_fold = np.stack([np.bincount(labels[folds == f], minlength=10) for f in range(5)])
    assert (per_fold.max(0) - per_fold.min(0) <= 1).all(), per_fold
    meta = dataset_metadata(digits_lt)
    assert meta["num_folds"] == 5 and meta["fold_seed"] == 42 and meta["fold_counts"] == per_fold.tolist()


def test_grouped_folds_keep_groups_together():
    rng = np.random.default_rng(0)
    groups = [f"lesion{i // 3}" for i in range(300)]
    labels = [int(rng.integers(0, 3)) if i % 3 == 0 else None for i in range(300)]
    for i in range(300):  # all images of a lesion share its label
        labels[i] = labels[i - i % 3]
    folds = assign_folds(labels, num_folds=5, seed=1, groups=groups)
    for g in set(groups):
        assert len({f for f, gg in zip(folds, groups, strict=True) if gg == g}) == 1


def test_split_by_fold_keeps_the_test_fold_out(digits_lt):
    splits = split_by_fold(digits_lt, test_fold=2, val_fraction=0.1, seed=42)
    train_ids, val_ids, test_ids = (set(part["image_id"]) for part in (splits.train, splits.val, splits.test))
    assert not (train_ids & val_ids or train_ids & test_ids or val_ids & test_ids)
    assert len(train_ids) + len(val_ids) + len(test_ids) == len(digits_lt)
    assert set(splits.test["fold"]) == {2} and 2 not in set(splits.train["fold"]) | set(splits.val["fold"])
    val_counts, train_counts = np.array(splits.class_counts("val")), np.array(splits.class_counts("train"))
    assert (val_counts >= 1).all()  # every class is validated
    share = val_counts.sum() / (val_counts.sum() + train_counts.sum())
    assert share == pytest.approx(0.1, abs=0.02)
    with pytest.raises(ValueError, match="test_fold"):
        split_by_fold(digits_lt, test_fold=5)


def test_inner_split_without_validation():
    train, val = inner_validation_split([0, 1] * 10, 0.0, seed=0)
    assert len(train) == 20 and len(val) == 0


def test_the_same_seed_gives_the_same_folds_and_splits_and_another_seed_does_not():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=400).tolist()
    groups = [f"g{i // 2}" for i in range(400)]
    for grouping in (None, groups):
        first = assign_folds(labels, num_folds=5, seed=11, groups=grouping)
        assert np.array_equal(first, assign_folds(labels, num_folds=5, seed=11, groups=grouping))
        assert not np.array_equal(first, assign_folds(labels, num_folds=5, seed=12, groups=grouping))
    train, val = inner_validation_split(labels, 0.1, seed=5)
    again_train, again_val = inner_validation_split(labels, 0.1, seed=5)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)


def test_split_by_fold_is_a_function_of_the_seed(digits_lt):
    first = split_by_fold(digits_lt, test_fold=1, val_fraction=0.1, seed=42)
    again = split_by_fold(digits_lt, test_fold=1, val_fraction=0.1, seed=42)
    for part in ("train", "val", "test"):
        assert list(getattr(first, part)["image_id"]) == list(getattr(again, part)["image_id"])
    other = split_by_fold(digits_lt, test_fold=1, val_fraction=0.1, seed=43)
    assert set(other.val["image_id"]) != set(first.val["image_id"])
    assert list(other.test["image_id"]) == list(first.test["image_id"])  # the test fold is the data set's, not the seed's
