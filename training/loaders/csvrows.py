"""Checked reading of label CSV files shared by the public-format loaders."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from countyread.errors import InvalidInputError


def csv_rows(
    csv_path: Path, columns: Sequence[str], what: str
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number, row)``; a missing file or column is an InvalidInputError."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InvalidInputError(f"missing {what} csv: {csv_path}")
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInputError(f"{csv_path.name} lacks columns {missing}")
        # Line 1 is the header, so data rows start at line 2 in messages.
        yield from enumerate(reader, start=2)
