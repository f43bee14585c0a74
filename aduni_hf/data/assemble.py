"""The one path from a reader's items to the standard fold-annotated `datasets.Dataset`, and its metadata.

A reader (`aduni_hf.data.sources`) turns a raw layout into `RawItem`s, recording in `InvalidItems` the rows
and files it cannot use, and hands both to `assemble_dataset`, which runs every check that is not specific to
one layout, in this order:

1. duplicate image ids: every item after the first with an id is bad; so is an id or image path that is not
   UTF-8 (a file named in another encoding). The reader's problems and these are reported together, before any
   image is decoded;
2. images: each is decoded (or encoded) once by `prepare_images`; missing and unreadable files are bad;
3. classes: no usable image at all, a class without one, or a single class is an error even with
   skip_invalid, because the label set of a data set is fixed;
4. folds: `assign_folds`, grouped when the items carry groups;
5. metadata: the fold assignment, its seed, the class counts (overall and per fold), `image_size`, the
   content fingerprint of the images (`fingerprint.py`), the left-out items and the data set's own metrics
   (`headline_metric`, `dataset_metrics`), stored as JSON in `dataset.info.description` (which `save_to_disk`
   keeps; read it back with `dataset_metadata`).

Bad items follow the rule of `validation.py`: raise by default, leave out and report with skip_invalid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .fingerprint import FINGERPRINT_KEY, content_fingerprint
from .folds import assign_folds
from .images import ImageSource, StoredImage, prepare_images
from .validation import NOT_UTF8_NAME, DataValidationError, InvalidItems, Location, is_utf8


@dataclass(frozen=True)
class RawItem:
    """One image as a reader declares it.

    `image` is a file on disk or an in-memory image; `location` is where the item is declared (e.g.
    "train.csv line 7"), for messages; `group` (a lesion or patient id) makes the folds grouped; `extras`
    become string columns (e.g. MedMNIST's official split).
    """

    image_id: str
    image: ImageSource
    label: int
    location: Location
    group: str | None = None
    extras: dict[str, str] = field(default_factory=dict)


def assemble_dataset(
    items: Sequence[RawItem],
    class_names: Sequence[str],
    *,
    source: str,
    num_folds: int,
    seed: int,
    invalid: InvalidItems | None = None,
    id_name: str = "image id",
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    extra_metadata: dict[str, Any] | None = None,
    metrics: Sequence[str] = ("macro_f1",),
) -> datasets.Dataset:
    """Check `items`, decode their images and build the Dataset (module docstring).

    Columns: image, label (ClassLabel over `class_names`), fold, image_id, then group when the items carry
    groups, then the items' extras. `invalid` holds what the reader already reported (a fresh one that raises
    when not given); `id_name` is what the source calls an image id in messages (e.g. APTOS's "id_code").
    `image_size`, `cache_dir` and `num_workers` are as in `prepare_images`; `extra_metadata` is the source's
    own metadata (e.g. which CSV it read); `metrics` are the ones the data set is ranked by, its headline first
    (`sources.builders.SOURCE_METRICS`; the metric names of aduni_hf/evaluation/metric_names.py).
    """
    if invalid is None:
        invalid = InvalidItems(skip_invalid=False, source=source)
    unique = drop_unencodable_names(drop_duplicate_ids(items, id_name, invalid), invalid)
    invalid.check("reading the layout")
    kept, images = decode_images(unique, invalid, image_size, cache_dir, num_workers)
    invalid.check("decoding images")

    labels = np.asarray([item.label for item in kept], dtype=np.int64)
    counts = check_classes(labels, class_names, source, len(invalid))
    grouped = all(item.group is not None for item in kept)
    groups = [str(item.group) for item in kept] if grouped else None
    try:
        folds = assign_folds(labels, num_folds=num_folds, seed=seed, groups=groups)
    except ValueError as error:  # e.g. a class (or a set of groups) smaller than num_folds
        raise DataValidationError(f"{source}: cannot assign {num_folds} folds: {error}") from error

    columns: dict[str, list[Any]] = {
        "image": images,
        "label": labels.tolist(),
        "fold": folds.tolist(),
        "image_id": [item.image_id for item in kept],
    }
    features: dict[str, datasets.features.FeatureType] = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(class_names)),
        "fold": datasets.Value("int64"),
        "image_id": datasets.Value("string"),
    }
    if groups is not None:
        columns["group"], features["group"] = groups, datasets.Value("string")
    for name in kept[0].extras:
        columns[name], features[name] = [item.extras[name] for item in kept], datasets.Value("string")
    metadata = {
        "source": source,
        "num_folds": num_folds,
        "fold_seed": seed,
        "fold_method": "StratifiedGroupKFold" if grouped else "StratifiedKFold",
        "class_names": list(class_names),
        "class_counts": counts.tolist(),
        "fold_counts": [
            np.bincount(labels[folds == f], minlength=len(class_names)).tolist() for f in range(num_folds)
        ],
        "image_size": image_size,
        FINGERPRINT_KEY: content_fingerprint(images),
        "invalid_items": invalid.as_records(),
        "headline_metric": metrics[0],
        "dataset_metrics": list(metrics),
        **(extra_metadata or {}),
    }
    info = datasets.DatasetInfo(description=json.dumps(metadata), features=datasets.Features(features))
    return datasets.Dataset.from_dict(columns, features=info.features, info=info)


def check_classes(labels: np.ndarray, class_names: Sequence[str], source: str, num_invalid: int) -> np.ndarray:
    """The image count of every class; no image at all, a class without one, or fewer than two classes is a
    `DataValidationError` (a classifier of one class is right on every image, and its accuracy 1.0 means nothing)."""
    left_out = f" ({num_invalid} invalid item(s) were left out)" if num_invalid else ""
    if not len(labels):
        raise DataValidationError(f"{source}: no usable images{left_out}")
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [name for name, count in zip(class_names, counts, strict=True) if count == 0]
    if empty:
        raise DataValidationError(f"{source}: class(es) {empty} have no usable images{left_out}")
    if len(class_names) < 2:
        raise DataValidationError(
            f"{source}: every image is of one class, {class_names[0]!r} ({len(labels)} images){left_out}; a "
            "classifier needs at least two classes. Check the labels (or the class sub-folders) it was read from."
        )
    return counts


def drop_duplicate_ids(items: Sequence[RawItem], id_name: str, invalid: InvalidItems) -> list[RawItem]:
    """`items` without the repeats of an image id; each repeat is recorded, naming where the id came first
    ("first on line 2" within the same CSV)."""
    first: dict[str, RawItem] = {}
    for item in items:
        if item.image_id not in first:
            first[item.image_id] = item
            continue
        earlier = first[item.image_id].location
        same_file = earlier.line is not None and earlier.where == item.location.where
        where = f"on line {earlier.line}" if same_file else f"at {earlier}"
        invalid.add(item.image_id, item.location, f"duplicate {id_name} (first {where})")
    return list(first.values())


def drop_unencodable_names(items: Sequence[RawItem], invalid: InvalidItems) -> list[RawItem]:
    """`items` without those whose id or image path is not UTF-8 (a file named in another encoding): Arrow stores
    both as UTF-8 text, so each is recorded, named with `\\x` escapes, instead of failing in `datasets`."""
    kept = []
    for item in items:
        path = str(item.image) if isinstance(item.image, Path) else ""
        if is_utf8(item.image_id) and is_utf8(path):
            kept.append(item)
        else:
            invalid.add(item.image_id, path or item.location, NOT_UTF8_NAME)
    return kept


def decode_images(
    items: Sequence[RawItem],
    invalid: InvalidItems,
    image_size: int | None,
    cache_dir: str | Path | None,
    num_workers: int,
) -> tuple[list[RawItem], list[StoredImage]]:
    """(the items whose image is usable, what to store for each); a missing file is recorded at the item's
    declared location (its CSV line), an unreadable one at the file."""
    results = prepare_images(
        [item.image for item in items],
        [item.image_id for item in items],
        image_size=image_size,
        cache_dir=cache_dir,
        num_workers=num_workers,
    )
    kept: list[RawItem] = []
    images: list[StoredImage] = []
    for item, result in zip(items, results, strict=True):
        if result.value is not None:
            kept.append(item)
            images.append(result.value)
        else:
            invalid.add(
                item.image_id, item.location if result.missing else str(item.image), str(result.error)
            )
    return kept, images


def dataset_metadata(dataset: datasets.Dataset) -> dict[str, Any]:
    """The metadata `assemble_dataset` stored (empty for a data set built elsewhere)."""
    try:
        return json.loads(dataset.info.description or "{}")
    except json.JSONDecodeError:
        return {}
