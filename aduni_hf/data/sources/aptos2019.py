"""`aptos2019`: APTOS 2019 Blindness Detection training set, in the official Kaggle layout.

```
data_dir/
  train.csv              id_code,diagnosis     (diagnosis 0-4)
  train_images/<id_code>.png                   (sizes vary, up to about 3000x2000)
```
The public test set has no labels, so the folds are stratified over the 3,662 labelled training images.
Decoding a full-size PNG takes about 200 ms; prepare with `--image_size` to store pre-resized images.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ..assemble import RawItem, assemble_dataset
from ..csv_table import read_csv_table
from ..images import match_image_files
from ..validation import InvalidItems, Location, require_layout
from .builders import DATASETS, SOURCE_METRICS

TRAIN_CSV = "train.csv"
TRAIN_IMAGES = "train_images"
APTOS_CLASS_NAMES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")


def parse_grade(text: str, num_classes: int) -> tuple[int | None, str | None]:
    """(grade, None) for an integer in 0..num_classes-1 ("2" or "2.0"), else (None, what is wrong)."""
    try:
        value = float(text)
    except ValueError:
        return None, f"diagnosis {text!r} is not an integer"
    if not value.is_integer() or not 0 <= value < num_classes:
        return None, f"diagnosis {text!r} is outside 0..{num_classes - 1}"
    return int(value), None


@DATASETS.register("aptos2019")
def build_aptos2019(
    data_dir: str | None = None,
    num_folds: int = 5,
    seed: int = 42,
    image_size: int | None = None,
    skip_invalid: bool = False,
    cache_dir: str | None = None,
    num_workers: int = 0,
) -> datasets.Dataset:
    """APTOS2019 training set from `data_dir` (module docstring); options as in `prepare_dataset`."""
    if data_dir is None:
        raise ValueError("aptos2019 needs data_dir: the folder holding train.csv and train_images/")
    root = Path(data_dir)
    labels_csv, image_dir = root / TRAIN_CSV, root / TRAIN_IMAGES
    require_layout("aptos2019", root, (labels_csv, image_dir), f"{TRAIN_CSV} and {TRAIN_IMAGES}/")
    invalid = InvalidItems(skip_invalid, source=f"aptos2019 ({root})")
    _, rows = read_csv_table(labels_csv, ["id_code", "diagnosis"], invalid, id_column="id_code")
    labelled: list[tuple[str, int, Location]] = []
    for row in rows:
        image_id, location = row.values["id_code"], row.location(labels_csv)
        if not image_id:
            invalid.add("", location, "empty id_code")
            continue
        grade, problem = parse_grade(row.values["diagnosis"], len(APTOS_CLASS_NAMES))
        if problem is not None:
            invalid.add(image_id, location, problem)
        else:
            labelled.append((image_id, grade, location))
    paths = match_image_files(
        [(image_id, location) for image_id, _, location in labelled],
        {row.values["id_code"] for row in rows},
        image_dir,
        ".png",
        TRAIN_CSV,
        invalid,
    )
    items = [
        RawItem(image_id, paths[image_id], grade, location)
        for image_id, grade, location in labelled
        if image_id in paths
    ]
    return assemble_dataset(
        items,
        APTOS_CLASS_NAMES,
        source="aptos2019",
        metrics=SOURCE_METRICS["aptos2019"],
        num_folds=num_folds,
        seed=seed,
        invalid=invalid,
        id_name="id_code",
        image_size=image_size,
        cache_dir=cache_dir,
        num_workers=num_workers,
    )
