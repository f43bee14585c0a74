"""`DATASETS`: the data set builders by name, and `build_dataset`, the public entry to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets

from ...registry import Registry

DATASETS: Registry[Callable[..., datasets.Dataset]] = Registry("dataset")


def build_dataset(
    name: str, data_dir: str | None = None, num_folds: int = 5, seed: int = 42, **options: Any
) -> datasets.Dataset:
    """Build data set `name` as a `datasets.Dataset` with columns image, label (ClassLabel), fold, image_id.

    `data_dir` is the raw download (ignored by the embedded `digits_lt`); `seed` drives the fold assignment
    (and any subsampling); builder-specific `options` are passed on. An unknown name lists the choices.
    """
    return DATASETS[name](data_dir=data_dir, num_folds=num_folds, seed=seed, **options)
