"""`isic2018`: ISIC 2018 Task 3 (HAM10000) training set, in the official download layout, folds grouped by lesion.

```
data_dir/
  ISIC2018_Task3_Training_Input/ISIC_0024306.jpg ...   (+ ATTRIBUTION.txt, LICENSE.txt: ignored)
  ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv
      image,MEL,NV,BCC,AKIEC,BKL,DF,VASC       one-hot rows written as 0.0 / 1.0
  ISIC2018_Task3_Training_LesionGroupings.csv  (optional; or inside the GroundTruth folder)
      image,lesion_id,diagnosis_confirm_type
```
Class names are the ground-truth CSV's columns in their order. With the lesion groupings, the `group` column is
the lesion id and folds are `StratifiedGroupKFold`: no lesion is in two folds, because HAM10000 holds several
images of one lesion and splitting by image would put the same lesion in training and test folds
(docs/method.md, "Evaluation and folds"). The real set has 10,015 images: 6,705 NV, 1,113 MEL, 1,099 BKL,
514 BCC, 327 AKIEC, 142 VASC, 115 DF.
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from ..assemble import RawItem, assemble_dataset
from ..csv_table import CsvRow, read_csv_table
from ..images import match_image_files
from ..validation import DataValidationError, InvalidItems, require_layout
from .builders import DATASETS, SOURCE_METRICS

logger = logging.getLogger(__name__)

INPUT_DIR = "ISIC2018_Task3_Training_Input"
GROUND_TRUTH_DIR = "ISIC2018_Task3_Training_GroundTruth"
GROUND_TRUTH_CSV = "ISIC2018_Task3_Training_GroundTruth.csv"
LESION_GROUPINGS_CSV = "ISIC2018_Task3_Training_LesionGroupings.csv"


def find_lesion_groupings(data_dir: Path) -> Path | None:
    """The lesion groupings CSV at the data_dir root or inside the GroundTruth folder (root first)."""
    for candidate in (data_dir / LESION_GROUPINGS_CSV, data_dir / GROUND_TRUTH_DIR / LESION_GROUPINGS_CSV):
        if candidate.is_file():
            return candidate
    return None


def parse_one_hot(row: CsvRow, class_names: list[str]) -> tuple[int | None, str | None]:
    """(label, None) for a row with exactly one 1 among 0/1 values, else (None, what is wrong)."""
    positives = []
    for index, name in enumerate(class_names):
        text = row.values[name]
        try:
            value = float(text)
        except ValueError:
            return None, f"{name}={text!r} is not a number"
        if value not in (0.0, 1.0):
            return None, f"{name}={text!r} is not 0 or 1 (labels are one-hot)"
        if value == 1.0:
            positives.append(index)
    if len(positives) != 1:
        named = ", ".join(class_names[i] for i in positives) or "none"
        return None, f"{len(positives)} positive labels ({named}); expected exactly one of {class_names}"
    return positives[0], None


def read_lesion_groupings(path: Path, invalid: InvalidItems) -> dict[str, str]:
    """image id -> lesion id. Rows without an id or lesion, and ids given two lesions, are recorded as invalid."""
    header, rows = read_csv_table(path, ["lesion_id"], invalid)
    id_column = "image" if "image" in header else "image_id"
    if id_column not in header:
        raise DataValidationError(
            f"{path} line 1: header {header} has neither an 'image' nor an 'image_id' column"
        )
    lesions: dict[str, tuple[str, int]] = {}
    for row in rows:
        image_id, lesion = row.values[id_column], row.values["lesion_id"]
        if not image_id or not lesion:
            invalid.add(image_id, row.location(path), f"empty {id_column if not image_id else 'lesion_id'}")
        elif image_id in lesions and lesions[image_id][0] != lesion:
            first_lesion, first_line = lesions[image_id]
            invalid.add(
                image_id,
                row.location(path),
                f"lesion {lesion!r}, but line {first_line} says {first_lesion!r}",
            )
        else:
            lesions.setdefault(image_id, (lesion, row.line))
    return {image_id: lesion for image_id, (lesion, _) in lesions.items()}


def lesions_of(
    groupings: Path | None, root: Path, image_ids: set[str], ground_truth: str, invalid: InvalidItems
) -> dict[str, str]:
    """image id -> lesion id from the groupings CSV; none (with a warning that folds are then stratified by image)
    without one."""
    if groupings is None:
        logger.warning(
            "isic2018: no %s in %s; folds are stratified by image, so images of one lesion may be in different folds",
            LESION_GROUPINGS_CSV,
            root,
        )
        return {}
    lesions = read_lesion_groupings(groupings, invalid)
    extra = sorted(set(lesions) - image_ids)
    if extra:
        logger.info("%s: %d row(s) name images not in %s (ignored)", groupings.name, len(extra), ground_truth)
    return lesions


def labelled_rows(
    rows: list[CsvRow], class_names: list[str], ground_truth: Path, invalid: InvalidItems
) -> list[tuple[CsvRow, int]]:
    """The ground-truth rows with their one-hot label decoded; a row without an id or with no single positive
    label goes to `invalid`."""
    labelled = []
    for row in rows:
        if not row.values["image"]:
            invalid.add("", row.location(ground_truth), "empty image id")
            continue
        label, problem = parse_one_hot(row, class_names)
        if problem is not None:
            invalid.add(row.values["image"], row.location(ground_truth), problem)
        else:
            labelled.append((row, label))
    return labelled


@DATASETS.register("isic2018")
def build_isic2018(
    data_dir: str | None = None,
    num_folds: int = 5,
    seed: int = 42,
    image_size: int | None = None,
    skip_invalid: bool = False,
    lesion_groupings: str | None = None,
    group_by_lesion: bool = True,
    cache_dir: str | None = None,
    num_workers: int = 0,
) -> datasets.Dataset:
    """ISIC2018 Task 3 training set from `data_dir` (module docstring).

    `lesion_groupings` overrides where the groupings CSV is (any CSV with `image` or `image_id` and
    `lesion_id` columns, e.g. HAM10000_metadata.csv); `group_by_lesion=False` ignores the groupings.
    `image_size`, `skip_invalid`, `cache_dir` and `num_workers` are as in `prepare_dataset`.
    """
    if data_dir is None:
        raise ValueError("isic2018 needs data_dir: the folder holding ISIC2018_Task3_Training_Input/")
    root = Path(data_dir)
    input_dir = root / INPUT_DIR
    ground_truth = root / GROUND_TRUTH_DIR / GROUND_TRUTH_CSV
    if not ground_truth.is_file() and (root / GROUND_TRUTH_CSV).is_file():
        ground_truth = root / GROUND_TRUTH_CSV
    require_layout(
        "isic2018", root, (input_dir, ground_truth), f"{INPUT_DIR}/ and {GROUND_TRUTH_DIR}/{GROUND_TRUTH_CSV}"
    )
    invalid = InvalidItems(skip_invalid, source=f"isic2018 ({root})")

    header, rows = read_csv_table(ground_truth, ["image"], invalid, id_column="image")
    class_names = [name for name in header if name != "image"]
    if len(class_names) < 2:
        raise DataValidationError(f"{ground_truth} line 1: header {header} names fewer than two classes")
    labelled = labelled_rows(rows, class_names, ground_truth, invalid)
    all_ids = {row.values["image"] for row in rows}
    paths = match_image_files(
        [(row.values["image"], row.location(ground_truth)) for row, _ in labelled],
        all_ids,
        input_dir,
        ".jpg",
        ground_truth.name,
        invalid,
    )

    groupings = (Path(lesion_groupings) if lesion_groupings else find_lesion_groupings(root)) if group_by_lesion else None
    lesions = lesions_of(groupings, root, all_ids, ground_truth.name, invalid)
    items = []
    for row, label in labelled:
        image_id = row.values["image"]
        if image_id not in paths:
            continue
        if groupings is not None and image_id not in lesions:
            invalid.add(
                image_id, row.location(ground_truth), f"no lesion_id for this image in {groupings.name}"
            )
            continue
        items.append(
            RawItem(image_id, paths[image_id], label, row.location(ground_truth), group=lesions.get(image_id))
        )
    return assemble_dataset(
        items,
        class_names,
        source="isic2018",
        metrics=SOURCE_METRICS["isic2018"],
        num_folds=num_folds,
        seed=seed,
        invalid=invalid,
        image_size=image_size,
        cache_dir=cache_dir,
        num_workers=num_workers,
        extra_metadata={"lesion_groupings": groupings.name if groupings is not None else None},
    )
