"""Datasets: upload (validated, stored atomically), samples, list, show, delete, load.

An upload is parsed once to validate it and describe it (the summary its kind has), then
stored byte for byte as it came; loading parses the stored bytes again (:mod:`sources`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelhost.artifacts import ArtifactStore
from modelhost.auth.authz import SYSTEM, Action, Principal, only_visible, require
from modelhost.auth.projects import project_name, target_project
from modelhost.datasets.formats import ColumnType, Format, Table, detect_format, refuse_unsafe
from modelhost.datasets.samples import SampleName, load_sample
from modelhost.datasets.sources import (
    KIND_OF,
    ArraySource,
    DataSource,
    ImageSource,
    Kind,
    TableSource,
    load_source,
    parse_source,
)
from modelhost.datasets.tables import DatasetRow
from modelhost.db import after_commit, on_rollback
from modelhost.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelhost.names import check_name

_FILE_SUFFIX: dict[Format, str] = {"text": "txt"}  # the stored object's suffix, where not the format


class Column(BaseModel):
    name: str
    type: ColumnType


class TableSummary(BaseModel):
    kind: Literal["table"] = "table"
    columns: list[Column]


class ArrayInfo(BaseModel):
    name: str
    shape: list[int]
    dtype: str


class ArraysSummary(BaseModel):
    kind: Literal["arrays"] = "arrays"
    arrays: list[ArrayInfo]


class ClassCount(BaseModel):
    name: str
    count: int


class ImagesSummary(BaseModel):
    kind: Literal["images"] = "images"
    num_images: int
    classes: list[ClassCount]
    channels: list[int]
    """1 for grey images, 3 for RGB; both when the dataset mixes them."""
    min_size: list[int]
    """Smallest height and width seen (each on its own)."""
    max_size: list[int]


class TextSummary(BaseModel):
    kind: Literal["text"] = "text"
    num_chars: int
    num_lines: int
    vocab_size: int
    """Distinct characters: the vocabulary of a character-level model."""


Summary = Annotated[TableSummary | ArraysSummary | ImagesSummary | TextSummary, Field(discriminator="kind")]


class Dataset(BaseModel):
    id: int
    name: str
    project: str
    kind: Kind
    format: str
    sha256: str
    size_bytes: int
    num_rows: int
    """Examples: table rows, first-dimension entries, images, or text lines."""
    columns: list[Column]
    """A table's columns (also in ``summary``); empty for the other kinds."""
    summary: Summary
    target: str | None
    description: str
    created_at: dt.datetime


def _entity(s: Session, row: DatasetRow) -> Dataset:
    # A table's summary is its columns; rows from before kinds existed have summary {}.
    summary = {"kind": "table", "columns": row.columns} if row.kind == "table" else row.summary
    fields = {c: getattr(row, c) for c in Dataset.model_fields if c not in ("summary", "project")}
    return Dataset.model_validate({**fields, "summary": summary, "project": project_name(s, row.project_id)})


def describe(source: DataSource) -> tuple[int, Summary]:
    """The number of examples in ``source`` and its kind's summary."""
    if isinstance(source, TableSource):
        t = source.table
        cols = [Column(name=c, type=k) for c, k in zip(t.columns, t.types, strict=True)]
        return len(t.rows), TableSummary(columns=cols)
    if isinstance(source, ArraySource):
        arrays = [
            ArrayInfo(name=n, shape=list(a.shape), dtype=str(a.dtype)) for n, a in source.arrays.items()
        ]
        return arrays[0].shape[0], ArraysSummary(arrays=arrays)
    if isinstance(source, ImageSource):
        counts = Counter(source.labels)
        sizes = [im.shape[:2] for im in source.images]
        return len(source.images), ImagesSummary(
            num_images=len(source.images),
            classes=[ClassCount(name=c, count=counts[c]) for c in source.classes],
            channels=sorted({1 if im.ndim == 2 else im.shape[2] for im in source.images}),
            min_size=[min(h for h, _ in sizes), min(w for _, w in sizes)],
            max_size=[max(h for h, _ in sizes), max(w for _, w in sizes)],
        )
    lines = source.text.count("\n") + (not source.text.endswith("\n"))
    return lines, TextSummary(num_chars=len(source.text), num_lines=lines, vocab_size=len(set(source.text)))


def _check_target(source: DataSource, target: str | None, filename: str) -> str | None:
    """The default target: a table column or an npz array (``y`` when there is one)."""
    if isinstance(source, TableSource):
        names, what = source.table.columns, "column"
    elif isinstance(source, ArraySource):
        names, what = list(source.arrays), "array"
        target = target or ("y" if "y" in source.arrays else None)
    else:
        if target is not None:
            labels = "their class folders" if isinstance(source, ImageSource) else "nothing"
            raise InvalidInput(f"target: {filename!r} has no columns; its examples are labelled by {labels}")
        return None
    if target is not None and target not in names:
        raise InvalidInput(f"target {what} {target!r} is not in {filename!r}; {what}s: {', '.join(names)}")
    return target


def create_dataset(
    s: Session,
    store: ArtifactStore,
    name: str,
    data: bytes,
    filename: str = "data.csv",
    target: str | None = None,
    description: str = "",
    format: str | None = None,
    *,
    access: Principal = SYSTEM,
    project: str | None = None,
) -> Dataset:
    """Validate an upload in any format, store it, record it in ``project`` (see
    ``target_project``). Nothing is left behind when any step fails. ``format`` overrides
    what the filename's suffix says (see ``detect_format``)."""
    check_name("dataset", name)
    project_id = target_project(s, access, project)
    if s.scalar(sa.select(DatasetRow.id).where(DatasetRow.name == name)) is not None:
        raise AlreadyExists(f"dataset {name!r} already exists")
    refuse_unsafe(data[:2], filename)  # a pickle is unsafe whatever format it claims
    fmt = detect_format(filename, format)
    source = parse_source(data, fmt, filename)
    target = _check_target(source, target, filename)
    num_rows, summary = describe(source)
    key = f"datasets/{uuid.uuid4().hex}/data.{_FILE_SUFFIX.get(fmt, fmt)}"
    digest = store.put(key, data)
    columns = summary.model_dump()["columns"] if isinstance(summary, TableSummary) else []
    row = DatasetRow(
        name=name,
        project_id=project_id,
        kind=KIND_OF[fmt],
        format=fmt,
        artifact_key=key,
        sha256=digest.sha256,
        size_bytes=digest.size,
        num_rows=num_rows,
        target=target,
        description=description,
        columns=columns,
        summary={} if isinstance(summary, TableSummary) else summary.model_dump(),
    )
    on_rollback(s, lambda: store.delete(key))  # the bytes go if this unit of work does not land
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError as e:  # a concurrent upload took the name between check and insert
        raise AlreadyExists(f"dataset {name!r} already exists") from e
    return _entity(s, row)


def create_sample_dataset(
    s: Session,
    store: ArtifactStore,
    sample: SampleName,
    name: str | None = None,
    *,
    access: Principal = SYSTEM,
    project: str | None = None,
) -> Dataset:
    smp = load_sample(sample)
    return create_dataset(
        s,
        store,
        name or sample,
        smp.data,
        smp.filename,
        smp.target,
        smp.description,
        access=access,
        project=project,
    )


def _row(s: Session, name: str, access: Principal, action: Action = "read") -> DatasetRow:
    """The dataset ``name`` if ``access`` may do ``action`` on it (NotFound if it may not see it)."""
    row = s.scalar(sa.select(DatasetRow).where(DatasetRow.name == name))
    if row is None:
        raise NotFound(f"dataset {name!r} not found")
    require(access, row.project_id, action, f"dataset {name!r}")
    return row


def get_dataset(s: Session, name: str, *, access: Principal = SYSTEM) -> Dataset:
    return _entity(s, _row(s, name, access))


def get_dataset_by_id(s: Session, dataset_id: int, *, access: Principal = SYSTEM) -> Dataset:
    row = s.get(DatasetRow, dataset_id)
    if row is None:
        raise NotFound(f"dataset {dataset_id} not found")
    require(access, row.project_id, "read", f"dataset {dataset_id}")
    return _entity(s, row)


def list_datasets(s: Session, *, access: Principal = SYSTEM) -> list[Dataset]:
    q = only_visible(sa.select(DatasetRow).order_by(DatasetRow.id), DatasetRow.project_id, access)
    return [_entity(s, r) for r in s.scalars(q)]


def delete_dataset(s: Session, store: ArtifactStore, name: str, *, access: Principal = SYSTEM) -> None:
    """Delete the record, then its bytes; refused while runs still reference the dataset.
    Project admins only."""
    row = _row(s, name, access, "delete")
    key = row.artifact_key
    try:
        with s.begin_nested():
            s.delete(row)
    except IntegrityError as e:
        raise Conflict(f"dataset {name!r} is used by training runs; delete those first") from e
    after_commit(s, lambda: store.delete_prefix(key.rsplit("/", 1)[0] + "/"))


def load_table(s: Session, store: ArtifactStore, dataset_id: int) -> Table:
    """The dataset's rows, verified against the sha256 recorded at upload. InvalidInput for a
    dataset of another kind (use :func:`~modelhost.datasets.sources.load_source`)."""
    source = load_source(s, store, dataset_id)
    if not isinstance(source, TableSource):
        kind = get_dataset_by_id(s, dataset_id).kind
        raise InvalidInput(f"dataset {dataset_id} holds {kind}, not a table")
    return source.table
