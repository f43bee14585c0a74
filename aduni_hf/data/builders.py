"""Registry of data set builders and the one function that turns records into a fold-annotated Dataset."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np

from .folds import assign_folds

DatasetBuilder = Callable[..., datasets.Dataset]
DATASET_BUILDERS: dict[str, DatasetBuilder] = {}


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator: make `build_dataset(name, ...)` call this builder."""

    def wrap(fn: DatasetBuilder) -> DatasetBuilder:
        if name in DATASET_BUILDERS:
            raise KeyError(f"data set {name!r} is already registered")
        DATASET_BUILDERS[name] = fn
        return fn

    return wrap


def build_dataset(
    name: str, data_dir: str | None = None, num_folds: int = 5, seed: int = 42, **options: Any
) -> datasets.Dataset:
    """Build data set `name` as a `datasets.Dataset` with columns image, label (ClassLabel), fold, image_id.

    `data_dir` is the raw download (ignored by the embedded `digits_lt`); `seed` drives the fold assignment
    (and any subsampling); builder-specific `options` are passed on.
    """
    if name not in DATASET_BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASET_BUILDERS)}")
    return DATASET_BUILDERS[name](data_dir=data_dir, num_folds=num_folds, seed=seed, **options)


def fold_dataset(
    images: Sequence[Any],
    labels: Sequence[int],
    image_ids: Sequence[str],
    class_names: Sequence[str],
    num_folds: int,
    seed: int,
    source: str,
    groups: Sequence[str] | None = None,
    extra_columns: dict[str, tuple[Sequence[Any], datasets.features.FeatureType]] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> datasets.Dataset:
    """Assemble the standard Dataset: image, label, fold, image_id (+ group, + extras), with fold metadata.

    `images` are anything `datasets.Image` encodes (file paths, PIL images, {"bytes": ...} dicts). The fold
    assignment, its seed and the class counts are recorded as JSON in `dataset.info.description`, which
    `save_to_disk` keeps; read it back with `dataset_metadata`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(set(image_ids)) != len(image_ids):
        seen: set[str] = set()
        duplicates = sorted({i for i in image_ids if i in seen or seen.add(i)})
        raise ValueError(f"duplicate image ids: {duplicates[:10]}")
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [class_names[c] for c in range(len(class_names)) if counts[c] == 0]
    if empty:
        raise ValueError(f"class(es) {empty} have no images")
    folds = assign_folds(labels, num_folds=num_folds, seed=seed, groups=groups)
    columns: dict[str, Any] = {
        "image": list(images),
        "label": labels.tolist(),
        "fold": folds.tolist(),
        "image_id": list(image_ids),
    }
    features = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(class_names)),
        "fold": datasets.Value("int64"),
        "image_id": datasets.Value("string"),
    }
    if groups is not None:
        columns["group"], features["group"] = list(groups), datasets.Value("string")
    for key, (values, feature) in (extra_columns or {}).items():
        columns[key], features[key] = list(values), feature
    metadata = {
        "source": source,
        "num_folds": num_folds,
        "fold_seed": seed,
        "fold_method": "StratifiedGroupKFold" if groups is not None else "StratifiedKFold",
        "class_names": list(class_names),
        "class_counts": counts.tolist(),
        "fold_counts": [
            np.bincount(labels[folds == f], minlength=len(class_names)).tolist() for f in range(num_folds)
        ],
        **(extra_metadata or {}),
    }
    features = datasets.Features(features)
    info = datasets.DatasetInfo(description=json.dumps(metadata), features=features)
    return datasets.Dataset.from_dict(columns, features=features, info=info)


def dataset_metadata(dataset: datasets.Dataset) -> dict[str, Any]:
    """The fold metadata `fold_dataset` stored (empty for a data set built elsewhere)."""
    try:
        return json.loads(dataset.info.description or "{}")
    except json.JSONDecodeError:
        return {}
