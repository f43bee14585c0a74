"""Bad input at build time: one error type, one record per bad item, and the rule "raise by default, leave out
and report only when asked".

A reader records every problem of its layout (CSV rows, file listing) in an `InvalidItems` list;
`assemble_dataset` adds duplicate ids and calls `check()` before decoding any image, then adds unreadable
images and calls `check()` again. So an error lists every problem of a pass at once and is raised before
anything is written. With `skip_invalid=True` the bad items are left out, logged, and recorded in the data
set's metadata (`dataset_metadata(ds)["invalid_items"]`); `prepare_dataset` writes them to
`OUT/invalid_items.csv`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# How many items an error message or a log line lists before "... and N more".
MAX_LISTED = 20


# The reason given for a file whose name the OS decoded with surrogate escapes (bytes that are not UTF-8).
NOT_UTF8_NAME = (
    "file name is not valid UTF-8 (shown with \\x escapes), and a data set stores names as UTF-8 text; rename it, "
    "e.g. with convmv -f latin1 -t utf-8 --notest"
)


def is_utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8: False for a name holding bytes the OS could not decode (surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """`text` with every undecodable byte of a file name shown as `\\xNN`, so it can be printed, logged and written
    to a UTF-8 file (`os.fsdecode` keeps such bytes as surrogate escapes, which none of these accept)."""
    if is_utf8(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class DataValidationError(ValueError):
    """Raw data that cannot be turned into a data set as it is: names the file (and CSV line) and the problem."""


@dataclass(frozen=True)
class Location:
    """Where a raw item is declared, for messages: a file (or an entry of it) and, for a CSV row, its line."""

    where: str
    line: int | None = None

    def __str__(self) -> str:
        return self.where if self.line is None else f"{self.where} line {self.line}"


@dataclass(frozen=True)
class InvalidItem:
    """One bad item: which image (id, or "" when unknown), where (file, or "file line N"), and why."""

    image_id: str
    location: str
    reason: str

    def __str__(self) -> str:
        name = f" [{self.image_id}]" if self.image_id else ""
        return f"{self.location}{name}: {self.reason}"


class InvalidItems:
    """The bad items found so far; `check()` raises unless they are to be skipped."""

    def __init__(self, skip_invalid: bool, source: str) -> None:
        self.skip_invalid = skip_invalid
        self.source = source
        self.items: list[InvalidItem] = []
        self._checked = 0

    def add(self, image_id: str, location: Location | str, reason: str) -> None:
        """Record a bad item; a file name that is not UTF-8 is kept with `\\x` escapes (`printable`)."""
        self.items.append(
            InvalidItem(image_id=printable(image_id), location=printable(str(location)), reason=printable(reason))
        )

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[InvalidItem]:
        return iter(self.items)

    def check(self, stage: str) -> None:
        """End of a pass: raise `DataValidationError` listing the new items, or log them when skipping."""
        new = self.items[self._checked :]
        self._checked = len(self.items)
        if not new:
            return
        listing = "\n".join(f"  - {item}" for item in new[:MAX_LISTED])
        if len(new) > MAX_LISTED:
            listing += f"\n  ... and {len(new) - MAX_LISTED} more"
        if not self.skip_invalid:
            raise DataValidationError(
                f"{self.source}: {len(new)} invalid item(s) found while {stage}:\n{listing}\n"
                "Fix them, or pass --skip_invalid (skip_invalid=True) to leave them out and list them in "
                "invalid_items.csv."
            )
        logger.warning(
            "%s: leaving out %d invalid item(s) found while %s:\n%s", self.source, len(new), stage, listing
        )

    def as_records(self) -> list[dict[str, str]]:
        return [asdict(item) for item in self.items]


def write_invalid_items(records: list[dict[str, str]], path: str | Path) -> None:
    """Write the report of left-out items as CSV with columns image_id, location, reason."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image_id", "location", "reason"])
        writer.writeheader()
        writer.writerows(records)


def require_layout(source: str, root: Path, required: Sequence[Path], layout: str) -> None:
    """Raise a `DataValidationError` naming the first missing path of an official layout and what `root` holds."""
    for path in required:
        if not path.exists():
            present = sorted(p.name for p in root.iterdir()) if root.is_dir() else "data_dir does not exist"
            raise DataValidationError(
                f"{source}: {path} not found; expected the official layout {layout} in {root} (found: {present})"
            )
