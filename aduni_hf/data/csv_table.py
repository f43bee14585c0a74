"""Read a labels CSV with line numbers, so every message can point at "file.csv line N"."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .validation import DataValidationError, InvalidItems, Location


@dataclass(frozen=True)
class CsvRow:
    """One data row: its 1-based line number in the file (the header is line 1) and its fields by column."""

    line: int
    values: dict[str, str]

    def location(self, path: Path) -> Location:
        return Location(path.name, self.line)


def read_csv_table(
    path: str | Path, required_columns: Sequence[str], invalid: InvalidItems, id_column: str | None = None
) -> tuple[list[str], list[CsvRow]]:
    """(header, rows) of a CSV whose header names at least `required_columns`.

    A missing or unreadable file and a header without the required columns raise `DataValidationError`
    even with skip_invalid (there is nothing to skip to). A row with the wrong number of fields is recorded in
    `invalid` (under the image id in its `id_column` field, when it has one) and left out. Blank lines are
    ignored; a UTF-8 byte-order mark and spaces around header names are accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"CSV file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or not any(name.strip() for name in header):
                raise DataValidationError(
                    f"{path} line 1: empty file or header; expected a header with columns {list(required_columns)}"
                )
            header = [name.strip() for name in header]
            duplicated = sorted({name for name in header if header.count(name) > 1})
            if duplicated:
                raise DataValidationError(
                    f"{path} line 1: header names column(s) {duplicated} more than once"
                )
            missing = [name for name in required_columns if name not in header]
            if missing:
                raise DataValidationError(
                    f"{path} line 1: header {header} lacks column(s) {missing}; expected {list(required_columns)}"
                )
            rows: list[CsvRow] = []
            for fields in reader:
                if not fields or all(not field.strip() for field in fields):
                    continue
                if len(fields) != len(header):
                    position = header.index(id_column) if id_column in header else len(fields)
                    invalid.add(
                        fields[position].strip() if position < len(fields) else "",
                        Location(path.name, reader.line_num),
                        f"expected {len(header)} fields ({','.join(header)}), got {len(fields)}: {fields}",
                    )
                    continue
                rows.append(
                    CsvRow(reader.line_num, {n: f.strip() for n, f in zip(header, fields, strict=True)})
                )
    except UnicodeDecodeError as error:
        raise DataValidationError(f"{path}: not a UTF-8 text CSV ({error})") from error
    except csv.Error as error:
        raise DataValidationError(f"{path}: unreadable CSV ({error})") from error
    return header, rows
