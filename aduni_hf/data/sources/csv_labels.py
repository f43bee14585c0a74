"""`csv`: a CSV with an image-path column and a class-name column.

```
data_dir/labels.csv     path,label[,id][,group]   e.g. images/a.jpg,melanoma
data_dir/images/...     paths are relative to the CSV's folder, else to data_dir, or absolute
```
`data_dir` is the CSV file itself, or a folder with `csv_file` in it (default: the folder's only CSV). An
optional `group_column` (e.g. a patient or lesion id) makes the folds grouped.

The classes are `class_names` when given (any other label is an invalid row), else the sorted distinct labels,
refusing a label that looks like a misspelling of another (`aduni_hf.data.classes`). A label that spreadsheets
write for an empty cell ("nan", "NA", "null", ...) is an invalid row unless it is a declared class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import datasets

from ..assemble import RawItem, assemble_dataset
from ..classes import Labelled, class_names_of, parse_class_names
from ..csv_table import CsvRow, read_csv_table
from ..validation import DataValidationError, InvalidItems
from .builders import DATASETS

# Label values that spreadsheets and pandas write for an empty cell: such a row has no label, and is not a class.
MISSING_LABELS = frozenset({"nan", "na", "n/a", "none", "null", "?", "-"})


def find_csv(data_dir: Path, csv_file: str | None) -> Path:
    """The labels CSV: data_dir itself, data_dir/csv_file (or csv_file as given), or the folder's only CSV."""
    if data_dir.is_file():
        return data_dir
    if csv_file is not None:
        path = Path(csv_file)
        return path if path.is_absolute() or path.is_file() else data_dir / path
    found = sorted(data_dir.glob("*.csv")) if data_dir.is_dir() else []
    if len(found) != 1:
        raise DataValidationError(
            f"csv: give the labels CSV with csv_file (--csv_file); found {[p.name for p in found]} in {data_dir}"
        )
    return found[0]


def row_problem(row: CsvRow, required: list[str], label_column: str, declared: list[str] | None) -> str | None:
    """What makes a row unusable (an empty required field, a label that marks a missing value and is not a
    declared class), or None."""
    empty = [column for column in required if not row.values[column]]
    if empty:
        return f"empty {', '.join(empty)}"
    label = row.values[label_column]
    if label.casefold() in MISSING_LABELS and label not in (declared or ()):
        return f"label {label!r} reads as a missing value, not a class"
    return None


def resolve_image_path(text: str, csv_dir: Path, data_dir: Path) -> Path:
    """An absolute path as is; a relative one against the CSV's folder, else data_dir (the first that exists)."""
    path = Path(text)
    if path.is_absolute():
        return path
    for base in (csv_dir, data_dir):
        if (base / path).exists():
            return base / path
    return csv_dir / path


@DATASETS.register("csv")
def build_csv(
    data_dir: str | None = None,
    num_folds: int = 5,
    seed: int = 42,
    image_size: int | None = None,
    skip_invalid: bool = False,
    csv_file: str | None = None,
    path_column: str = "path",
    label_column: str = "label",
    id_column: str | None = None,
    group_column: str | None = None,
    class_names: str | Sequence[str] | None = None,
    cache_dir: str | None = None,
    num_workers: int = 0,
) -> datasets.Dataset:
    """CSV-listed data set (module docstring). The image id is `id_column`, else the path as written.
    `class_names` declares the classes ("a,b,c" or a list; `aduni_hf.data.classes`)."""
    if data_dir is None and csv_file is None:
        raise ValueError("csv needs data_dir (the CSV, or its folder) or csv_file")
    root = Path(data_dir) if data_dir is not None else Path(csv_file).parent
    table = find_csv(root, csv_file)
    data_root = root if root.is_dir() else table.parent
    invalid = InvalidItems(skip_invalid, source=f"csv ({table})")
    required = [path_column, label_column] + [c for c in (id_column, group_column) if c is not None]
    id_of = id_column or path_column
    _, rows = read_csv_table(table, required, invalid, id_column=id_of)
    declared = parse_class_names(class_names)
    complete = []
    for row in rows:
        problem = row_problem(row, required, label_column, declared)
        if problem is None:
            complete.append(row)
        else:
            invalid.add(row.values[id_of], row.location(table), problem)
    labelled = [Labelled(row.values[id_of], row.values[label_column], row.location(table)) for row in complete]
    names = class_names_of(labelled, declared, invalid)
    label_index = {name: index for index, name in enumerate(names)}
    items = [
        RawItem(
            row.values[id_of],
            resolve_image_path(row.values[path_column], table.parent, data_root),
            label_index[row.values[label_column]],
            row.location(table),
            group=row.values[group_column] if group_column is not None else None,
        )
        for row in complete
        if row.values[label_column] in label_index
    ]
    return assemble_dataset(
        items,
        names,
        source="csv",
        num_folds=num_folds,
        seed=seed,
        invalid=invalid,
        image_size=image_size,
        cache_dir=cache_dir,
        num_workers=num_workers,
        extra_metadata={"csv_file": table.name},
    )
