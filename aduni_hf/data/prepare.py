"""Build a data set once and save it with `save_to_disk`, atomically: the library behind scripts/prepare_data.py.

Everything is written into a hidden temporary sibling of the output folder (`.<name>.tmp-*`), which is renamed
to the output folder only when the whole data set is saved; on any error the temporary folder is removed, so
the output folder is either complete or absent (a previous one is replaced only after the new one is complete,
and only with `overwrite=True`). The output folder holds:

- the `datasets.Dataset` (`datasets.load_from_disk(output_dir)`), image bytes embedded, with the fold
  assignment, seed, class counts, `image_size` and left-out items in its metadata (`dataset_metadata`);
- `prepare_config.json`: the arguments it was built with;
- `invalid_items.csv` (with skip_invalid): every left-out item, where it is, and why.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from .assemble import dataset_metadata
from .pixels import add_pixel_column
from .sources import DATASETS, build_dataset
from .validation import write_invalid_items

logger = logging.getLogger(__name__)

INVALID_ITEMS_FILE = "invalid_items.csv"
PREPARE_CONFIG_FILE = "prepare_config.json"


@dataclass(frozen=True)
class PreparedDataset:
    """What `prepare_dataset` wrote: where, how many images (and of each class), the left-out items, the classes."""

    output_dir: Path
    num_images: int
    class_counts: list[int]
    invalid_items: list[dict[str, str]]
    class_names: list[str]


def check_output_dir(output_dir: Path, data_dir: str | None, overwrite: bool) -> None:
    """Refuse a non-empty output folder without `overwrite`, and an output folder holding the raw data."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"output_dir {output_dir} exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} exists and is not empty; pass --overwrite to replace it"
        )
    if data_dir is not None:
        raw = Path(data_dir).resolve()
        out = output_dir.resolve()
        if out == raw or out in raw.parents:
            raise ValueError(
                f"output_dir {output_dir} holds the raw data in {data_dir}; choose another folder"
            )


def builder_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` the builder accepts; `cache_dir`, `num_workers` and `skip_invalid` are dropped for builders
    without them (e.g. the embedded digits_lt), any other option it does not take is an error naming its options.
    An unknown data set name lists the choices."""
    accepted = set(inspect.signature(DATASETS[name]).parameters) - {"data_dir", "num_folds", "seed"}
    kept = {}
    for key, value in options.items():
        if key in accepted:
            kept[key] = value
        elif key not in ("cache_dir", "num_workers", "skip_invalid"):  # no effect on a builder without them
            raise ValueError(f"dataset {name!r} does not take option {key!r}; it takes {sorted(accepted)}")
    return kept


def prepare_dataset(
    name: str,
    data_dir: str | None,
    output_dir: str | Path,
    num_folds: int = 5,
    seed: int = 42,
    image_size: int | None = None,
    skip_invalid: bool = False,
    overwrite: bool = False,
    num_workers: int = 0,
    **options: Any,
) -> PreparedDataset:
    """Build data set `name` from `data_dir` and save it to `output_dir` (module docstring).

    `image_size=N` stores every image resized to exactly (N, N) as a lossless PNG, with the interpolation of the
    transforms' first step, so training at image_size N sees the same pixels without decoding full-size files,
    and the same pixels as raw uint8 bytes (`pixels.py`), which the augmentation on the device reads without a
    decode.
    `skip_invalid` leaves bad items out (listed in invalid_items.csv) instead of raising
    `DataValidationError`. `num_workers` processes decode the images (the result does not depend on it).
    Other `options` go to the builder (e.g. `path_column` for "csv", `medmnist_file` for "dermamnist").
    """
    output_dir = Path(output_dir)
    check_output_dir(output_dir, data_dir, overwrite)
    if image_size is not None:
        options["image_size"] = image_size
    if skip_invalid:
        options["skip_invalid"] = True
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging_root = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        kwargs = builder_options(
            name, {**options, "cache_dir": str(staging_root / "images"), "num_workers": num_workers}
        )
        dataset = build_dataset(name, data_dir=data_dir, num_folds=num_folds, seed=seed, **kwargs)
        if image_size is not None:  # raw uint8 beside the PNGs: augmentation on the device reads them as they are
            dataset = add_pixel_column(dataset, staging_root / "pixels.arrow")
        staged = staging_root / "dataset"
        dataset.save_to_disk(str(staged))
        metadata = dataset_metadata(dataset)
        invalid_items = metadata.get("invalid_items", [])
        if skip_invalid:
            write_invalid_items(invalid_items, staged / INVALID_ITEMS_FILE)
        config = {
            "dataset": name,
            "data_dir": str(Path(data_dir).resolve()) if data_dir is not None else None,
            "num_folds": num_folds,
            "seed": seed,
            "image_size": image_size,
            "skip_invalid": skip_invalid,
            "options": {
                k: v
                for k, v in kwargs.items()
                if k not in ("cache_dir", "num_workers", "image_size", "skip_invalid")
            },
            "num_images": len(dataset),
            "num_invalid_items": len(invalid_items),
            "datasets_version": datasets.__version__,
        }
        (staged / PREPARE_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        del dataset  # release the memory map before the scratch images are removed
        shutil.rmtree(staging_root / "images", ignore_errors=True)
        _swap_into_place(staged, output_dir, staging_root)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    logger.info("saved %d images of %s to %s", config["num_images"], name, output_dir)
    return PreparedDataset(
        output_dir, config["num_images"], metadata["class_counts"], invalid_items, metadata["class_names"]
    )


def _swap_into_place(staged: Path, output_dir: Path, staging_root: Path) -> None:
    """Rename `staged` to `output_dir`; an existing output folder is moved aside first and restored on failure."""
    previous = staging_root / "previous"
    if output_dir.exists():
        os.replace(output_dir, previous)
    try:
        os.replace(staged, output_dir)
    except BaseException:
        if previous.exists():
            os.replace(previous, output_dir)
        raise
