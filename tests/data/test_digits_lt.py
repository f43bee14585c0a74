"""The embedded digits_lt data set: columns, the long-tailed profile, seeding."""

import numpy as np
import pytest

from aduni_hf.data import build_dataset
from aduni_hf.data.sources.digits_lt import long_tail_counts


def test_columns_and_long_tail_profile(digits_lt):
    assert digits_lt.column_names == ["image", "label", "fold", "image_id"]
    assert digits_lt.features["label"].names == [str(c) for c in range(10)]
    counts = np.bincount(digits_lt["label"], minlength=10)
    assert (np.diff(counts) <= 0).all(), counts
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.05)
    image = digits_lt[0]["image"]
    assert image.size == (8, 8) and image.mode == "L"
    assert len(set(digits_lt["image_id"])) == len(digits_lt)


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


def test_seeded_and_deterministic(digits_lt):
    again = build_dataset("digits_lt")
    assert again["image_id"] == digits_lt["image_id"] and again["fold"] == digits_lt["fold"]
    other = build_dataset("digits_lt", seed=7)
    assert other["fold"] != digits_lt["fold"]
