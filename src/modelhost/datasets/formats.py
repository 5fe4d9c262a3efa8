"""Upload formats: which format a file is, the pickle refusal every format shares, the two
text table formats (CSV with a header row, JSONL with one object per line) and plain text.

Tables keep their cells as the strings the file held; a column's type (int, float, str) is
inferred from all of its cells, so CSV and JSONL give the same typed :class:`Table`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from modelhost.errors import InvalidInput, UnsafeContent

ColumnType = Literal["int", "float", "str"]
Format = Literal["csv", "jsonl", "npy", "npz", "text", "zip", "tar"]
FORMATS: tuple[Format, ...] = get_args(Format)
MAX_COLUMN_NAME = 128

# Longest first: ".tar.gz" must win over ".gz".
_SUFFIXES: dict[str, Format] = {
    ".tar.gz": "tar",
    ".tar.bz2": "tar",
    ".tar.xz": "tar",
    ".tgz": "tar",
    ".tar": "tar",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".npy": "npy",
    ".npz": "npz",
    ".txt": "text",
    ".zip": "zip",
}

# Magic numbers of pickle (protocols 2-5), which executes code when loaded; refused whatever
# the file is called. Names of pickle-based formats (torch.save, joblib, dill) are refused too.
_PICKLE_MAGIC = tuple(bytes([0x80, p]) for p in range(2, 6))
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".joblib", ".dill", ".ckpt")


def refuse_unsafe(head: bytes, filename: str) -> None:
    """Raise UnsafeContent if ``head`` (the first bytes) or ``filename`` says pickle."""
    if head.startswith(_PICKLE_MAGIC) or filename.lower().endswith(_PICKLE_SUFFIXES):
        raise UnsafeContent(
            f"{filename!r} looks like a pickle; modelhost never loads pickles "
            "(use CSV, JSONL, NPY/NPZ, text or an image folder archive)"
        )


def detect_format(filename: str, declared: str | None = None) -> Format:
    """The declared format if given (it must be one of :data:`FORMATS`), else the one the
    filename's suffix names. InvalidInput lists what is accepted."""
    if declared:
        if declared not in FORMATS:
            raise InvalidInput(f"format: {declared!r} is not one of {', '.join(FORMATS)}")
        return declared
    lower = filename.lower()
    for suffix, fmt in _SUFFIXES.items():
        if lower.endswith(suffix):
            return fmt
    raise InvalidInput(
        f"cannot tell the format of {filename!r} from its name; use one of the suffixes "
        f"{', '.join(_SUFFIXES)} or name the format ({', '.join(FORMATS)})"
    )


@dataclass(frozen=True)
class Table:
    """A parsed table: column names, inferred types and the raw string cells, row-major."""

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


def check_columns(filename: str, columns: list[str], where: str = "the header") -> None:
    """Column names must be present, short and unique; the error names the offender."""
    if any(not c for c in columns):
        raise InvalidInput(f"{filename!r}: column {columns.index('') + 1} of {where} has no name")
    if too_long := next((c for c in columns if len(c) > MAX_COLUMN_NAME), None):
        raise InvalidInput(
            f"{filename!r}: column name {too_long[:40]!r}... is longer than {MAX_COLUMN_NAME} characters"
        )
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise InvalidInput(f"{filename!r}: column {dup!r} appears twice in {where}")


def typed_table(filename: str, columns: list[str], rows: list[list[str]], lines: list[int]) -> Table:
    """Infer each column's type and refuse non-finite floats, naming the line (``lines[i]`` is
    where row ``i`` came from) and the column."""
    if not rows:
        raise InvalidInput(f"{filename!r} has a header but no data rows")
    types = [_infer([r[i] for r in rows]) for i in range(len(columns))]
    for i, kind in enumerate(types):
        if kind == "float":
            bad = next((n for n, r in enumerate(rows) if not math.isfinite(float(r[i]))), None)
            if bad is not None:
                where = f"{filename!r} line {lines[bad]}, column {columns[i]!r}"
                raise InvalidInput(f"{where}: {rows[bad][i]!r} is not a finite number")
    return Table(columns=columns, types=types, rows=rows)


def _decode(data: bytes, filename: str, kind: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{filename!r} is not UTF-8 text (byte {e.start}); upload a {kind} file") from e


def parse_csv(data: bytes, filename: str = "data.csv") -> Table:
    """Parse and validate a CSV upload. Errors name the line and the problem."""
    refuse_unsafe(data[:2], filename)
    reader = csv.reader(io.StringIO(_decode(data, filename, "CSV")))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise InvalidInput(f"{filename!r} is empty; a CSV needs a header row and at least one data row")
    columns = [h.strip() for h in header]
    check_columns(filename, columns)
    rows, lines = [], []
    for row in reader:
        if not row:
            continue
        line_no = reader.line_num
        if len(row) != len(columns):
            raise InvalidInput(f"{filename!r} line {line_no}: {len(row)} fields, header has {len(columns)}")
        rows.append([c.strip() for c in row])
        lines.append(line_no)
    return typed_table(filename, columns, rows, lines)


def _cell(value: object, where: str) -> str:
    """A JSON scalar as a CSV-like cell: bools become 1/0; null, lists and objects are refused."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return str(value)
    what = "null" if value is None else f"a JSON {type(value).__name__}"
    raise InvalidInput(f"{where} is {what}; values must be numbers, strings or booleans")


def parse_jsonl(data: bytes, filename: str = "data.jsonl") -> Table:
    """Parse JSON Lines: one object per line, every object with the first one's keys.

    Blank lines are skipped. Errors name the line (1-based) and, for values, the key.
    """
    refuse_unsafe(data[:2], filename)
    columns: list[str] | None = None
    rows, lines = [], []
    for line_no, line in enumerate(_decode(data, filename, "JSON Lines").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{filename!r} line {line_no}: not JSON ({e.msg} at column {e.colno})") from e
        except RecursionError as e:  # json's decoder recurses: "[[[[..." a hundred thousand deep
            raise InvalidInput(f"{filename!r} line {line_no}: JSON nested too deeply") from e
        if not isinstance(obj, dict):
            raise InvalidInput(f"{filename!r} line {line_no}: a {type(obj).__name__}, not a JSON object")
        if columns is None:
            columns = list(obj)
            check_columns(filename, columns, f"line {line_no}'s keys")
        elif set(obj) != set(columns):
            missing, extra = sorted(set(columns) - set(obj)), sorted(set(obj) - set(columns))
            raise InvalidInput(
                f"{filename!r} line {line_no}: keys differ from the first object's "
                f"(missing {missing}, unexpected {extra})"
            )
        rows.append([_cell(obj[c], f"{filename!r} line {line_no}, key {c!r}") for c in columns])
        lines.append(line_no)
    if columns is None:
        raise InvalidInput(f"{filename!r} is empty; JSON Lines needs one object per line")
    if not columns:
        raise InvalidInput(f"{filename!r} line {lines[0]}: the object has no keys")
    return typed_table(filename, columns, rows, lines)


def parse_text(data: bytes, filename: str = "data.txt") -> str:
    """A UTF-8 text corpus, with a leading BOM dropped and line ends made ``\\n``.

    Invalid UTF-8 and NUL bytes (a binary file) are refused, naming the byte offset.
    """
    refuse_unsafe(data[:2], filename)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{filename!r} is not UTF-8 text: invalid byte at offset {e.start}") from e
    if (nul := data.find(b"\0")) >= 0:
        raise InvalidInput(f"{filename!r} has a NUL byte at offset {nul}; upload a text file")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InvalidInput(f"{filename!r} is empty; a text corpus needs some text")
    return text


def to_csv(columns: list[str], rows: np.ndarray | Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows.tolist() if isinstance(rows, np.ndarray) else rows)
    return out.getvalue().encode()
