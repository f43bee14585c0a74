"""The embedded digits_lt data set, folds and fold splits."""

import numpy as np
import pytest

from aduni_hf.data import assign_folds, build_dataset, dataset_metadata, inner_validation_split, split_by_fold
from aduni_hf.data.digits import long_tail_counts


@pytest.fixture(scope="module")
def digits():
    return build_dataset("digits_lt")


def test_columns_and_long_tail_profile(digits):
    assert digits.column_names == ["image", "label", "fold", "image_id"]
    assert digits.features["label"].names == [str(c) for c in range(10)]
    counts = np.bincount(digits["label"], minlength=10)
    assert (np.diff(counts) <= 0).all(), counts
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.05)
    image = digits[0]["image"]
    assert image.size == (8, 8) and image.mode == "L"
    assert len(set(digits["image_id"])) == len(digits)


def test_exponential_counts():
    counts = long_tail_counts(np.full(10, 174), 10.0)
    expected = np.floor(174 * 10.0 ** (-np.arange(10) / 9))
    np.testing.assert_array_equal(counts, expected)
    assert counts[0] == 174 and counts[-1] == 17


def test_imbalance_ratio_option():
    flat = build_dataset("digits_lt", imbalance_ratio=1.0)
    counts = np.bincount(flat["label"])
    assert counts.min() == counts.max()
    with pytest.raises(ValueError, match="imbalance_ratio"):
        build_dataset("digits_lt", imbalance_ratio=0.5)


def test_seeded_and_deterministic(digits):
    again = build_dataset("digits_lt")
    assert again["image_id"] == digits["image_id"] and again["fold"] == digits["fold"]
    other = build_dataset("digits_lt", seed=7)
    assert other["fold"] != digits["fold"]


def test_folds_are_stratified_within_one(digits):
    labels, folds = np.asarray(digits["label"]), np.asarray(digits["fold"])
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    per_fold = np.stack([np.bincount(labels[folds == f], minlength=10) for f in range(5)])
    assert (per_fold.max(0) - per_fold.min(0) <= 1).all(), per_fold
    meta = dataset_metadata(digits)
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


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="digits_lt"):
        build_dataset("no_such_set")


def test_split_by_fold_keeps_the_test_fold_out(digits):
    splits = split_by_fold(digits, test_fold=2, val_fraction=0.1, seed=42)
    train_ids, val_ids, test_ids = (set(part["image_id"]) for part in (splits.train, splits.val, splits.test))
    assert not (train_ids & val_ids or train_ids & test_ids or val_ids & test_ids)
    assert len(train_ids) + len(val_ids) + len(test_ids) == len(digits)
    assert set(splits.test["fold"]) == {2} and 2 not in set(splits.train["fold"]) | set(splits.val["fold"])
    val_counts, train_counts = np.array(splits.class_counts("val")), np.array(splits.class_counts("train"))
    assert (val_counts >= 1).all()  # every class is validated
    share = val_counts.sum() / (val_counts.sum() + train_counts.sum())
    assert share == pytest.approx(0.1, abs=0.02)
    with pytest.raises(ValueError, match="test_fold"):
        split_by_fold(digits, test_fold=5)


def test_inner_split_without_validation():
    train, val = inner_validation_split([0, 1] * 10, 0.0, seed=0)
    assert len(train) == 20 and len(val) == 0
