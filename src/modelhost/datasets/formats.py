"""Dataset file formats. Issue-2 scope: CSV with a header row; typed columns are inferred."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from modelhost.errors import InvalidInput, UnsafeContent

ColumnType = Literal["int", "float", "str"]
MAX_COLUMN_NAME = 128

# Magic numbers of pickle (protocols 2-5), which executes code when loaded; refused whatever
# the file is called. Names of pickle-based formats (torch.save, joblib) are refused too.
_PICKLE_MAGIC = tuple(bytes([0x80, p]) for p in range(2, 6))


def refuse_unsafe(head: bytes, filename: str) -> None:
    if head.startswith(_PICKLE_MAGIC) or filename.lower().endswith(
        (".pkl", ".pickle", ".pt", ".pth", ".joblib")
    ):
        raise UnsafeContent(f"{filename!r} looks like a pickle; modelhost never loads pickles (use CSV)")


@dataclass(frozen=True)
class Table:
    """A parsed CSV: column names, inferred types and the raw string cells, row-major."""

    columns: list[str]
    types: list[ColumnType]
    rows: list[list[str]]

    def column(self, name: str) -> list[str]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def numeric(self, names: list[str]) -> np.ndarray:
        idx = [self.columns.index(n) for n in names]
        return np.array([[float(r[i]) for i in idx] for r in self.rows], dtype=np.float32).reshape(
            len(self.rows), len(idx)
        )


def _infer(values: list[str]) -> ColumnType:
    for kind, parse in (("int", int), ("float", float)):
        try:
            for v in values:
                parse(v)
        except ValueError:
            continue
        return kind  # type: ignore[return-value]
    return "str"


def parse_csv(data: bytes, filename: str = "data.csv") -> Table:
    """Parse and validate a CSV upload. Errors name the line and the problem."""
    refuse_unsafe(data[:2], filename)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{filename!r} is not UTF-8 text (byte {e.start}); upload a CSV file") from e
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise InvalidInput(f"{filename!r} is empty; a CSV needs a header row and at least one data row")
    columns = [h.strip() for h in header]
    if any(not c for c in columns):
        raise InvalidInput(f"{filename!r}: column {columns.index('') + 1} of the header has no name")
    if too_long := next((c for c in columns if len(c) > MAX_COLUMN_NAME), None):
        raise InvalidInput(
            f"{filename!r}: column name {too_long[:40]!r}... is longer than {MAX_COLUMN_NAME} characters"
        )
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise InvalidInput(f"{filename!r}: column {dup!r} appears twice in the header")
    rows = []
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(columns):
            raise InvalidInput(f"{filename!r} line {line_no}: {len(row)} fields, header has {len(columns)}")
        rows.append([c.strip() for c in row])
    if not rows:
        raise InvalidInput(f"{filename!r} has a header but no data rows")
    types = [_infer([r[i] for r in rows]) for i in range(len(columns))]
    for i, kind in enumerate(types):
        if kind == "float":
            bad = next((n for n, r in enumerate(rows) if not math.isfinite(float(r[i]))), None)
            if bad is not None:
                where = f"{filename!r} line {bad + 2}, column {columns[i]!r}"
                raise InvalidInput(f"{where}: {rows[bad][i]!r} is not a finite number")
    return Table(columns=columns, types=types, rows=rows)


def to_csv(columns: list[str], rows: np.ndarray | Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows.tolist() if isinstance(rows, np.ndarray) else rows)
    return out.getvalue().encode()
