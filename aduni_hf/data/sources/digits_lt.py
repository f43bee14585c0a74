"""`digits_lt`: scikit-learn's bundled handwritten digits (real 8x8 scans, no download) made long-tailed.

The images are stored as 8-bit grayscale PNGs (the training transforms convert them to RGB).
"""

from __future__ import annotations

import datasets
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from ..assemble import RawItem, assemble_dataset
from ..validation import Location
from .builders import DATASETS


def long_tail_counts(available: np.ndarray, imbalance_ratio: float) -> np.ndarray:
    """Exponential profile: class c keeps n_max * ratio^(-c / (C - 1)) images (Cao et al. 2019 CIFAR-LT)."""
    num_classes = len(available)
    n_max = available.min()  # the largest count every class can supply
    profile = imbalance_ratio ** (-np.arange(num_classes) / max(num_classes - 1, 1))
    return np.maximum(1, np.floor(n_max * profile)).astype(np.int64)


def digit_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 digit (values 0..16) as an 8-bit grayscale image."""
    return Image.fromarray(np.round(pixels * (255.0 / 16.0)).astype(np.uint8), mode="L")


@DATASETS.register("digits_lt")
def build_digits_lt(
    data_dir: str | None = None, num_folds: int = 5, seed: int = 42, imbalance_ratio: float = 10.0
) -> datasets.Dataset:
    """Long-tailed digits: class 0 keeps the most images, class 9 `imbalance_ratio` times fewer.

    Which images of a class are kept is drawn with `seed`; folds are a stratified, seeded k-fold assignment.
    The default ratio 10 is about APTOS2019's 9.4.
    """
    if data_dir is not None:
        raise ValueError("digits_lt is embedded in scikit-learn; it takes no data_dir")
    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
    digits = load_digits()
    targets = digits.target.astype(np.int64)
    keep_counts = long_tail_counts(np.bincount(targets), imbalance_ratio)
    rng = np.random.default_rng(seed)
    kept = np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(targets == c), size=n, replace=False)
                for c, n in enumerate(keep_counts)
            ]
        )
    )
    items = [
        RawItem(
            f"digits-{i:04d}",
            digit_image(digits.images[i]),
            int(targets[i]),
            Location(f"load_digits() image {i}"),
        )
        for i in kept
    ]
    return assemble_dataset(
        items,
        [str(c) for c in range(10)],
        source="digits_lt",
        num_folds=num_folds,
        seed=seed,
        extra_metadata={"imbalance_ratio": imbalance_ratio},
    )
