"""The model registry: models, and immutable numbered versions stored as a directory of
``modelhost.json`` + the model's files (``weights.safetensors``, or an imported
``model.onnx``) in the artifact store."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelhost.artifacts import ArtifactStore
from modelhost.db import on_rollback
from modelhost.errors import Conflict, NotFound
from modelhost.names import check_name
from modelhost.registry.manifest import MANIFEST_FILE, Manifest
from modelhost.registry.tables import ModelRow, ModelVersionRow


class Model(BaseModel):
    id: int
    name: str
    task: str
    description: str
    created_at: dt.datetime
    latest_version: int | None = None


class ModelVersion(BaseModel):
    id: int
    model: str
    model_id: int
    number: int
    files: dict[str, str]
    manifest: Manifest
    run_id: int | None
    dataset_id: int | None
    created_at: dt.datetime


def _version(row: ModelVersionRow, model: str) -> ModelVersion:
    return ModelVersion(
        id=row.id,
        model=model,
        model_id=row.model_id,
        number=row.number,
        files=row.files,
        manifest=Manifest.model_validate(row.manifest),
        run_id=row.run_id,
        dataset_id=row.dataset_id,
        created_at=row.created_at,
    )


def _latest_number(s: Session, model_id: int) -> int | None:
    return s.scalar(
        sa.select(sa.func.max(ModelVersionRow.number)).where(ModelVersionRow.model_id == model_id)
    )


def _model(s: Session, row: ModelRow) -> Model:
    return Model(
        id=row.id,
        name=row.name,
        task=row.task,
        description=row.description,
        created_at=row.created_at,
        latest_version=_latest_number(s, row.id),
    )


def _model_row(s: Session, name: str) -> ModelRow:
    row = s.scalar(sa.select(ModelRow).where(ModelRow.name == name))
    if row is None:
        raise NotFound(f"model {name!r} not found")
    return row


def _get_or_create_model(s: Session, name: str, task: str) -> ModelRow:
    row = s.scalar(sa.select(ModelRow).where(ModelRow.name == name))
    if row is None:
        try:
            with s.begin_nested():
                row = ModelRow(name=name, task=task)
                s.add(row)
        except IntegrityError:  # created concurrently: use theirs
            row = _model_row(s, name)
    if row.task != task:
        raise Conflict(f"model {name!r} is a {row.task} model; this version is {task}")
    return row


def register_version(
    s: Session,
    store: ArtifactStore,
    model: str,
    manifest: Manifest,
    files: dict[str, bytes],
    run_id: int | None = None,
    dataset_id: int | None = None,
) -> ModelVersion:
    """Store the version's files (``modelhost.json`` from ``manifest``, then ``files``, e.g.
    ``{WEIGHTS_FILE: ...}``), then record it under the next free number.

    Files go to a fresh prefix, so a failed or raced registration never overwrites another
    version's bytes; on failure the prefix is removed.
    """
    check_name("model", model)
    assert MANIFEST_FILE not in files, "modelhost.json is written from `manifest`"
    model_row = _get_or_create_model(s, model, manifest.task)
    prefix = f"models/{model}/{uuid.uuid4().hex}/"
    on_rollback(s, lambda: store.delete_prefix(prefix))  # no bytes outlive a registration that did not land
    digests = {MANIFEST_FILE: store.put(prefix + MANIFEST_FILE, manifest.to_bytes()).sha256}
    for name, data in files.items():
        digests[name] = store.put(prefix + name, data).sha256
    for _attempt in range(5):
        row = ModelVersionRow(
            model_id=model_row.id,
            number=(_latest_number(s, model_row.id) or 0) + 1,
            artifact_prefix=prefix,
            files=digests,
            manifest=manifest.model_dump(mode="json"),
            run_id=run_id,
            dataset_id=dataset_id,
        )
        try:
            with s.begin_nested():
                s.add(row)
            return _version(row, model)
        except IntegrityError:  # another registration took this number; take the next
            continue
    raise Conflict(f"could not allocate a version number for {model!r}; retry")


def list_models(s: Session) -> list[Model]:
    return [_model(s, r) for r in s.scalars(sa.select(ModelRow).order_by(ModelRow.id))]


def get_model(s: Session, name: str) -> Model:
    return _model(s, _model_row(s, name))


def list_versions(s: Session, model: str) -> list[ModelVersion]:
    row = _model_row(s, model)
    q = sa.select(ModelVersionRow).where(ModelVersionRow.model_id == row.id).order_by(ModelVersionRow.number)
    return [_version(v, model) for v in s.scalars(q)]


def get_version(s: Session, model: str, number: int | None = None) -> ModelVersion:
    """A version by number, or the latest when ``number`` is None."""
    row = _model_row(s, model)
    number = number if number is not None else _latest_number(s, row.id)
    v = s.scalar(
        sa.select(ModelVersionRow).where(ModelVersionRow.model_id == row.id, ModelVersionRow.number == number)
    )
    if v is None:
        raise NotFound(
            f"model {model!r} has no version {number}" if number else f"model {model!r} has no versions"
        )
    return _version(v, model)


def get_version_by_id(s: Session, version_id: int) -> ModelVersion:
    v = s.get(ModelVersionRow, version_id)
    if v is None:
        raise NotFound(f"model version {version_id} not found")
    return _version(v, s.get_one(ModelRow, v.model_id).name)


def read_version_file(s: Session, store: ArtifactStore, version: ModelVersion, name: str) -> bytes:
    """One file of the version directory, verified against the sha256 recorded for it."""
    row = s.get_one(ModelVersionRow, version.id)
    if name not in row.files:
        raise NotFound(f"model {version.model!r} version {version.number} has no file {name!r}")
    return store.get(row.artifact_prefix + name, expected_sha256=row.files[name])
