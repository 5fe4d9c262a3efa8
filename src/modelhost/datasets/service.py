"""Datasets: upload (validated, stored atomically), samples, list, show, delete."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelhost.artifacts import ArtifactStore
from modelhost.datasets.formats import ColumnType, Table, parse_csv
from modelhost.datasets.samples import SampleName, sample_csv
from modelhost.datasets.tables import DatasetRow
from modelhost.db import after_commit, on_rollback
from modelhost.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelhost.names import check_name


class Column(BaseModel):
    name: str
    type: ColumnType


class Dataset(BaseModel):
    id: int
    name: str
    format: str
    sha256: str
    size_bytes: int
    num_rows: int
    columns: list[Column]
    target: str | None
    description: str
    created_at: dt.datetime


def _entity(row: DatasetRow) -> Dataset:
    return Dataset.model_validate(row, from_attributes=True)


def create_dataset(
    s: Session,
    store: ArtifactStore,
    name: str,
    data: bytes,
    filename: str = "data.csv",
    target: str | None = None,
    description: str = "",
) -> Dataset:
    """Validate a CSV upload, store it, record it. Nothing is left behind when any step fails."""
    check_name("dataset", name)
    if s.scalar(sa.select(DatasetRow.id).where(DatasetRow.name == name)) is not None:
        raise AlreadyExists(f"dataset {name!r} already exists")
    table = parse_csv(data, filename)
    if target is not None and target not in table.columns:
        raise InvalidInput(
            f"target column {target!r} is not in {filename!r}; columns: {', '.join(table.columns)}"
        )
    key = f"datasets/{uuid.uuid4().hex}/data.csv"
    digest = store.put(key, data)
    row = DatasetRow(
        name=name,
        format="csv",
        artifact_key=key,
        sha256=digest.sha256,
        size_bytes=digest.size,
        num_rows=len(table.rows),
        target=target,
        description=description,
        columns=[{"name": c, "type": t} for c, t in zip(table.columns, table.types, strict=True)],
    )
    on_rollback(s, lambda: store.delete(key))  # the bytes go if this unit of work does not land
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError as e:  # a concurrent upload took the name between check and insert
        raise AlreadyExists(f"dataset {name!r} already exists") from e
    return _entity(row)


def create_sample_dataset(
    s: Session, store: ArtifactStore, sample: SampleName, name: str | None = None
) -> Dataset:
    data, target = sample_csv(sample)
    return create_dataset(
        s, store, name or sample, data, f"{sample}.csv", target, f"scikit-learn's {sample} dataset"
    )


def _row(s: Session, name: str) -> DatasetRow:
    row = s.scalar(sa.select(DatasetRow).where(DatasetRow.name == name))
    if row is None:
        raise NotFound(f"dataset {name!r} not found")
    return row


def get_dataset(s: Session, name: str) -> Dataset:
    return _entity(_row(s, name))


def get_dataset_by_id(s: Session, dataset_id: int) -> Dataset:
    row = s.get(DatasetRow, dataset_id)
    if row is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return _entity(row)


def list_datasets(s: Session) -> list[Dataset]:
    return [_entity(r) for r in s.scalars(sa.select(DatasetRow).order_by(DatasetRow.id))]


def delete_dataset(s: Session, store: ArtifactStore, name: str) -> None:
    """Delete the record, then its bytes; refused while runs still reference the dataset."""
    row = _row(s, name)
    key = row.artifact_key
    try:
        with s.begin_nested():
            s.delete(row)
    except IntegrityError as e:
        raise Conflict(f"dataset {name!r} is used by training runs; delete those first") from e
    after_commit(s, lambda: store.delete_prefix(key.rsplit("/", 1)[0] + "/"))


def load_table(s: Session, store: ArtifactStore, dataset_id: int) -> Table:
    """The dataset's rows, verified against the sha256 recorded at upload."""
    row = s.get(DatasetRow, dataset_id)
    if row is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return parse_csv(store.get(row.artifact_key, expected_sha256=row.sha256))
