"""The classes of a source that reads them from the data itself (the `csv` label column, the `imagefolder`
sub-folders), so that a mistyped label never becomes a class of its own.

The other sources have a fixed label set (ISIC2018's one-hot columns, APTOS's grades 0-4, MedMNIST's label
indices) and refuse any other value row by row. A source that infers its classes takes either:

- declared classes (`class_names`, `--class_names a,b,c`): any other label is an invalid item naming the file,
  row and value (left out and listed with skip_invalid);
- no declaration: the classes are the distinct labels, except that a label that looks like a variant spelling of
  another (the same letters up to case, spaces and punctuation, or one typing slip apart: one letter added,
  dropped, changed or two swapped) is refused, naming both labels, their counts and rows, even with
  skip_invalid, because which label is the class is the user's call. Rarity alone does not refuse a class: a rare
  class is what an imbalanced medical data set is about, and a typo is told apart by its spelling, not its count.
  Labels that differ only in digits (`grade1`, `grade2`) are distinct classes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .validation import DataValidationError, InvalidItems, Location

MIN_LENGTH_FOR_SLIPS = 4  # shorter labels (MEL, NV, "0") are one slip apart from many others by design
LISTED_LOCATIONS = 5  # rows named per label in a message


@dataclass(frozen=True)
class Labelled:
    """One image and the label its source gives it, with where that label is written (a CSV row, a folder)."""

    image_id: str
    label: str
    location: Location


def parse_class_names(value: str | Sequence[str] | None, field: str = "class_names") -> list[str] | None:
    """Declared class names from a comma-separated string or a sequence (None: not declared); every name non-empty
    and listed once."""
    if value is None:
        return None
    names = [name.strip() for name in (value.split(",") if isinstance(value, str) else value)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if not names or any(not name for name in names) or repeated:
        raise ValueError(
            f"{field} must list each class once, non-empty, separated by commas; got {value!r}"
            + (f" (repeated: {repeated})" if repeated else "")
        )
    return names


def class_names_of(
    labelled: Sequence[Labelled], declared: Sequence[str] | None, invalid: InvalidItems, what: str = "label"
) -> list[str]:
    """The class names: `declared` (recording every other label in `invalid`), else the sorted distinct labels,
    refusing labels that look like variants of one another (module docstring). The caller keeps only the items
    whose label is a returned class. `what` names a label in messages ("label", "class folder")."""
    if declared is not None:
        allowed = set(declared)
        for item in labelled:
            if item.label not in allowed:
                invalid.add(
                    item.image_id, item.location, f"{what} {item.label!r} is not one of the classes {list(declared)}"
                )
        return list(declared)
    locations: dict[str, list[Location]] = {}
    for item in labelled:
        locations.setdefault(item.label, []).append(item.location)
    check_variant_labels(locations, invalid.source, what)
    return sorted(locations)


def check_variant_labels(locations: dict[str, list[Location]], source: str, what: str) -> None:
    """Raise `DataValidationError` naming every pair of labels where one looks like a variant of the other."""
    labels = sorted(locations, key=lambda label: (-len(locations[label]), label))  # most frequent first
    problems = []
    for position, rare in enumerate(labels):
        common = next((label for label in labels[:position] if looks_like_variant(rare, label)), None)
        if common is not None:
            rows = locations[rare]
            shown = ", ".join(str(location) for location in rows[:LISTED_LOCATIONS])
            more = f", ... ({len(rows)} in all)" if len(rows) > LISTED_LOCATIONS else ""
            problems.append(
                f"  - {what} {rare!r} ({len(rows)} image(s): {shown}{more}) looks like a variant of {common!r} "
                f"({len(locations[common])} image(s))"
            )
    if problems:
        raise DataValidationError(
            f"{source}: {len(problems)} {what}(s) look like misspellings of another class, and would each become a "
            "class of their own:\n" + "\n".join(problems) + "\nCorrect them, or, if they are classes, declare every "
            "class with --class_names (class_names=[...])."
        )


def normalised(label: str) -> str:
    """The label without case, spaces or punctuation ("Nevus ", "ne-vus" and "NEVUS" are alike)."""
    return "".join(character for character in label.casefold() if character.isalnum())


def looks_like_variant(label: str, other: str) -> bool:
    """Whether two labels look like spellings of one class (module docstring)."""
    first, second = normalised(label), normalised(other)
    if first == second:
        return True
    if re.sub(r"\d", "", first) == re.sub(r"\d", "", second):  # numbered classes: grade1, grade2
        return False
    return min(len(first), len(second)) >= MIN_LENGTH_FOR_SLIPS and edit_distance(first, second) == 1


def edit_distance(first: str, second: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours, each 1."""
    previous2: list[int] = []
    previous = list(range(len(second) + 1))
    for i in range(1, len(first) + 1):
        current = [i] + [0] * len(second)
        for j in range(1, len(second) + 1):
            cost = first[i - 1] != second[j - 1]
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and first[i - 1] == second[j - 2] and first[i - 2] == second[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]
