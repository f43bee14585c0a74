"""From checked rows (one per image file) to the standard fold-annotated Dataset, shared by the file builders.

A builder reads its layout into `RawItem`s (reporting bad rows itself), then `assemble_dataset` decodes every
image once (`prepare_images`), records unreadable or missing files, checks that no class is empty and calls
`fold_dataset`, adding `image_size` and the left-out items to the metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .builders import fold_dataset
from .image_files import images_by_stem, prepare_images
from .validation import DataValidationError, InvalidItems


@dataclass(frozen=True)
class RawItem:
    """One image as a layout declares it: `location` is where (e.g. "train.csv line 7") for messages."""

    image_id: str
    path: Path
    label: int
    location: str
    group: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def match_image_files(
    declared: Sequence[tuple[str, str]],
    all_ids: set[str],
    folder: Path,
    suffix: str,
    declared_in: str,
    invalid: InvalidItems,
) -> dict[str, Path]:
    """Image file of every declared (image_id, location): `folder/<image_id>.*`, else `folder/<image_id><suffix>`
    (reported as missing when it is decoded). Records ids with several files, and image files whose name is
    neither in `all_ids` (the ids of every row, valid or not) nor already reported as invalid."""
    files = images_by_stem(folder)
    paths: dict[str, Path] = {}
    for image_id, location in declared:
        candidates = files.get(image_id, [])
        if len(candidates) > 1:
            invalid.add(
                image_id, location, f"several image files for this id: {[str(p) for p in candidates]}"
            )
            continue
        paths[image_id] = candidates[0] if candidates else folder / f"{image_id}{suffix}"
    reported = {item.image_id for item in invalid}
    for stem, candidates in files.items():
        if stem not in all_ids and stem not in reported:
            for path in candidates:
                invalid.add(stem, str(path), f"image file has no row in {declared_in}")
    return paths


def assemble_dataset(
    items: Sequence[RawItem],
    class_names: Sequence[str],
    *,
    source: str,
    num_folds: int,
    seed: int,
    invalid: InvalidItems,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    grouped: bool = False,
    extra_features: dict[str, datasets.features.FeatureType] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> datasets.Dataset:
    """Decode and check every item's image, leave out (or raise for) bad ones, and build the Dataset."""
    results = prepare_images(
        [item.path for item in items],
        [item.image_id for item in items],
        image_size=image_size,
        cache_dir=cache_dir,
        num_workers=num_workers,
    )
    kept: list[tuple[RawItem, Any]] = []
    for item, result in zip(items, results, strict=True):
        if result.error is None:
            kept.append((item, result.value))
        elif result.missing:
            invalid.add(item.image_id, item.location, result.error)
        else:
            invalid.add(item.image_id, str(item.path), result.error)
    invalid.check("decoding images")
    return finalize_dataset(
        images=[value for _, value in kept],
        labels=[item.label for item, _ in kept],
        image_ids=[item.image_id for item, _ in kept],
        class_names=class_names,
        source=source,
        num_folds=num_folds,
        seed=seed,
        invalid=invalid,
        image_size=image_size,
        groups=[str(item.group) for item, _ in kept] if grouped else None,
        extra_columns={
            name: ([item.extras[name] for item, _ in kept], feature)
            for name, feature in (extra_features or {}).items()
        },
        extra_metadata=extra_metadata,
    )


def finalize_dataset(
    images: Sequence[Any],
    labels: Sequence[int],
    image_ids: Sequence[str],
    class_names: Sequence[str],
    *,
    source: str,
    num_folds: int,
    seed: int,
    invalid: InvalidItems,
    image_size: int | None,
    groups: Sequence[str] | None = None,
    extra_columns: dict[str, tuple[Sequence[Any], datasets.features.FeatureType]] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> datasets.Dataset:
    """Check for empty classes (always an error: the label set is fixed), assign folds, record metadata."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    empty = [name for name, count in zip(class_names, counts, strict=True) if count == 0]
    if empty:
        left_out = f" ({len(invalid)} invalid item(s) were left out)" if len(invalid) else ""
        raise DataValidationError(f"{source}: class(es) {empty} have no usable images{left_out}")
    metadata = {"image_size": image_size, "invalid_items": invalid.as_records(), **(extra_metadata or {})}
    try:
        return fold_dataset(
            images=images,
            labels=labels,
            image_ids=image_ids,
            class_names=class_names,
            num_folds=num_folds,
            seed=seed,
            source=source,
            groups=groups,
            extra_columns=extra_columns or None,
            extra_metadata=metadata,
        )
    except ValueError as error:  # e.g. a class (or a set of groups) smaller than num_folds
        raise DataValidationError(f"{source}: cannot assign {num_folds} folds: {error}") from error
